"""Voice → face: one command from an audio or video file to a labelled face image.

Any file PyAV reads (wav, flac, mp3, m4a, mp4, webm, ...) is decoded to 16 kHz mono, checked
for at least `min_voiced_s` of speech, repeated/cut to `seconds` (6 s: the input length the
promotion gate scores), encoded by the voice encoder and decoded by the face decoder. For each
input `<stem>` the output directory gets `<stem>.png` (the face), `<stem>.npy` (the predicted
feature) and `<stem>.json` (sidecar). Both the PNG's text chunks and the sidecar carry the model
names and versions and `NOTICE`: the image is a statistical reconstruction, not the speaker.

Speech check: a 25 ms frame (10 ms hop) counts as voiced when its RMS is above −40 dBFS and
within 30 dB of the loudest frame; the voiced frames × 10 ms must reach `min_voiced_s`.

    python -m s2f.registry.predict OUT_DIR AUDIO...      # uses models:/...@champion from MLFLOW_TRACKING_URI
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from s2f.media.audio import SAMPLE_RATE, load_audio
from s2f.progress import Progress
from s2f.registry.inference import (
    FACE_DECODER_NAME,
    VOICE_ENCODER_NAME,
    LoadedModel,
    decode_features,
    encode_waves,
    load_registered_model,
    model_uri,
)
from s2f.registry.names import MAX_PREDICT_SECONDS, MIN_PREDICT_SECONDS
from storage.io import atomic_path

NOTICE = ("Statistical reconstruction from a voice by Speech2Face: an average-looking face with "
          "traits that correlate with voices in the training data. It is NOT the speaker's face "
          "and must not be used to identify, locate or judge anyone.")
DEFAULT_MODEL_URI = model_uri(VOICE_ENCODER_NAME, "champion")
DEFAULT_DECODER_URI = model_uri(FACE_DECODER_NAME, "champion")
DEFAULT_SECONDS = 6.0
VOICED_FLOOR_DBFS = -40.0
VOICED_RANGE_DB = 30.0


# How much of an input file predict decodes: twice the longest window a prediction uses, so
# the speech check has room and a long (or hostile) file's memory stays bounded.
PREDICT_READ_SECONDS = 2 * MAX_PREDICT_SECONDS


class PredictInputError(ValueError):
    """An input file that cannot give a prediction, with the reason."""


def voiced_seconds(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    win, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
    if wave.size < win:
        return 0.0
    # a block of frames at a time: all windows at once in float64 were 40x the wave's memory
    n_frames = (wave.size - win) // hop + 1
    block = 4096
    rms = np.empty(n_frames)
    for f0 in range(0, n_frames, block):
        f1 = min(f0 + block, n_frames)
        chunk = wave[f0 * hop:(f1 - 1) * hop + win].astype(np.float64)
        frames = np.lib.stride_tricks.sliding_window_view(chunk, win)[::hop]
        rms[f0:f1] = np.sqrt(np.mean(frames ** 2, axis=1))
    floor = max(10 ** (VOICED_FLOOR_DBFS / 20), float(rms.max()) * 10 ** (-VOICED_RANGE_DB / 20))
    return float(np.count_nonzero(rms > floor)) * hop / sample_rate


def read_speech(path: Path, min_voiced_s: float = 1.0,
                max_seconds: float = PREDICT_READ_SECONDS) -> np.ndarray:
    """Decode at most the first `max_seconds` of `path` to 16 kHz mono float32 (a prediction
    uses at most MAX_PREDICT_SECONDS: a 2-hour file costs no more than a 2-minute one), or raise
    PredictInputError saying why not."""
    path = Path(path)
    if not path.exists():
        raise PredictInputError(f"{path}: file not found")
    if not path.is_file():
        raise PredictInputError(f"{path}: not a file")
    try:
        wave = load_audio(path, SAMPLE_RATE, max_seconds)
    except av.error.FFmpegError as exc:
        raise PredictInputError(f"{path}: not a readable audio or video file ({exc})") from exc
    except ValueError as exc:  # load_audio: no audio stream / nothing decoded
        raise PredictInputError(str(exc)) from exc
    bad = int(wave.size - np.count_nonzero(np.isfinite(wave)))
    if bad:  # a float WAV may hold NaN/inf: they would make a NaN feature and a black face
        raise PredictInputError(f"{path}: {bad} of {wave.size} samples are not finite "
                                "(NaN or infinity); not a usable recording")
    voiced = voiced_seconds(wave)
    if voiced < min_voiced_s:
        raise PredictInputError(
            f"{path}: only {voiced:.2f} s of speech in {wave.size / SAMPLE_RATE:.2f} s"
            + (" (the first seconds read)" if wave.size >= int(max_seconds * SAMPLE_RATE) else "")
            + f"; at least {min_voiced_s:g} s is needed")
    return wave


@dataclass
class Prediction:
    source: str
    image_path: str | None = None
    feature_path: str | None = None
    sidecar_path: str | None = None
    error: str | None = None


def _labels(encoder: LoadedModel, decoder: LoadedModel, source: Path, seconds: float,
            voiced: float) -> dict[str, str]:
    return {
        "notice": NOTICE,
        "source": source.name,
        "model_name": encoder.ref.name or "", "model_version": encoder.ref.version or "",
        "model_uri": encoder.ref.uri,
        "decoder_name": decoder.ref.name or "", "decoder_version": decoder.ref.version or "",
        "decoder_uri": decoder.ref.uri,
        "face_encoder": encoder.face_encoder,
        "input_seconds": f"{seconds:g}", "voiced_seconds": f"{voiced:.2f}",
    }


def _write_png(path: Path, image: np.ndarray, labels: dict[str, str]) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Description", NOTICE)  # the standard key image viewers show
    info.add_text("Software", "speech2face s2f predict")
    for k, v in labels.items():
        info.add_text(f"s2f:{k}", v)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)


def _unique_stem(out_dir: Path, stem: str, taken: set[str]) -> str:
    name, i = stem, 1
    while name in taken:
        i += 1
        name = f"{stem}-{i}"
    taken.add(name)
    return name


def predict_files(paths: list[Path], out_dir: Path, model_uri: str = DEFAULT_MODEL_URI,
                  decoder_uri: str = DEFAULT_DECODER_URI, seconds: float = DEFAULT_SECONDS,
                  min_voiced_s: float = 1.0, device: str = "cpu") -> list[Prediction]:
    """Predict a face for each file; a bad file gets `error` set and the others go on.
    Model problems (unknown URI, mismatched encoder/decoder) raise, and so does a `seconds`
    outside [MIN_PREDICT_SECONDS, MAX_PREDICT_SECONDS] (ValueError, before any model is loaded)."""
    if not MIN_PREDICT_SECONDS <= seconds <= MAX_PREDICT_SECONDS:
        raise ValueError(f"seconds must be between {MIN_PREDICT_SECONDS:g} and "
                         f"{MAX_PREDICT_SECONDS:g}, not {seconds:g}")
    encoder = load_registered_model(model_uri, device)
    decoder = load_registered_model(decoder_uri, device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[Prediction] = []
    taken: set[str] = set()
    with Progress(len(paths), f"predict with {encoder.ref.label()}", "file") as bar:
        for src in map(Path, paths):
            pred = Prediction(source=str(src))
            results.append(pred)
            _predict_one(src, pred, encoder, decoder, out_dir, taken, seconds, min_voiced_s)
            bar.update(1, failed=sum(r.error is not None for r in results))
    return results


def _predict_one(src: Path, pred: Prediction, encoder: LoadedModel, decoder: LoadedModel,
                 out_dir: Path, taken: set[str], seconds: float, min_voiced_s: float) -> None:
    try:
        wave = read_speech(src, min_voiced_s)
    except PredictInputError as exc:
        pred.error = str(exc)
        return
    feature = encode_waves(encoder, [wave], seconds)
    if not np.isfinite(feature).all():
        pred.error = (f"{src}: {encoder.ref.label()} gave a feature with "
                      f"{int((~np.isfinite(feature)).sum())} non-finite values; no face written")
        return
    image = decode_features(decoder, feature).images[0]
    stem = _unique_stem(out_dir, src.stem, taken)
    labels = _labels(encoder, decoder, src, seconds, voiced_seconds(wave))
    png, npy, side = (out_dir / f"{stem}{ext}" for ext in (".png", ".npy", ".json"))
    _write_png(png, image, labels)
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
        np.save(fh, feature[0])
    with atomic_path(side) as tmp:
        tmp.write_text(json.dumps({**labels, "image": png.name, "feature": npy.name,
                                   "feature_dim": int(feature.shape[1])}, indent=2))
    pred.image_path, pred.feature_path, pred.sidecar_path = str(png), str(npy), str(side)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__)
        return 2
    results = predict_files([Path(a) for a in args[1:]], Path(args[0]))
    for r in results:
        print(f"error: {r.error}" if r.error else f"{r.source} -> {r.image_path}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
