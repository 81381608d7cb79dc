"""`s2f predict`: common audio/video formats in, labelled face out; bad inputs explained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import BIN_HZ, DECODER_NAME, ENCODER_NAME, register_models, tracked_eval_data
from PIL import Image

from s2f.media.mux import write_media
from s2f.registry.predict import NOTICE, PredictInputError, predict_files, read_speech


def _tone(bin_: int, seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * bin_ * BIN_HZ * t)).astype(np.float32)


@pytest.fixture()
def models(tmp_path: Path):
    data = tracked_eval_data(tmp_path, n_test=4, n_train=1, clips=1)
    register_models(data, "champion")
    return data


def test_every_common_format_gives_a_labelled_face(models, tmp_path: Path) -> None:
    media = tmp_path / "media"
    frames = [np.full((32, 32, 3), 100, np.uint8)] * 10
    made = {  # file → identity whose tone it carries
        write_media(media / "a.wav", None, audio=_tone(models.bins[0], 2.0), video_codec=None,
                    audio_codec="pcm"): 0,
        write_media(media / "b.flac", None, audio=_tone(models.bins[1], 2.0), video_codec=None,
                    audio_codec="flac"): 1,
        write_media(media / "c.mp3", None, audio=_tone(models.bins[2], 2.0), video_codec=None,
                    audio_codec="mp3"): 2,
        write_media(media / "d.m4a", None, audio=_tone(models.bins[3], 2.0), video_codec=None,
                    audio_codec="aac"): 3,
        write_media(media / "e.mp4", frames, fps=5, audio=_tone(models.bins[0], 2.0)): 0,
        write_media(media / "f.webm", frames, fps=5, audio=_tone(models.bins[1], 2.0),
                    video_codec="vp9"): 1,
    }
    results = predict_files(list(made), tmp_path / "out")
    assert [r.error for r in results] == [None] * len(made)
    for r, identity in zip(results, made.values(), strict=True):
        png = Image.open(r.image_path)
        assert png.text["Description"] == NOTICE and "NOT the speaker's face" in NOTICE
        assert png.text["s2f:model_name"] == ENCODER_NAME and png.text["s2f:model_version"] == "1"
        assert png.text["s2f:decoder_name"] == DECODER_NAME
        assert png.size == (64, 64)
        side = json.loads(Path(r.sidecar_path).read_text())
        assert side["notice"] == NOTICE and side["model_version"] == "1"
        assert side["image"] == Path(r.image_path).name
        # The file was decoded at the right rate: its tone gives back its identity's feature.
        np.testing.assert_allclose(np.load(r.feature_path), models.base[identity], rtol=1e-5)


def test_bad_inputs_get_clear_errors(models, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    video_only = write_media(media / "silent_film.mp4", [np.zeros((32, 32, 3), np.uint8)] * 5,
                             fps=5)
    short = write_media(media / "short.wav", None, audio=_tone(models.bins[0], 0.6),
                        video_codec=None, audio_codec="pcm")
    silence = write_media(media / "silence.flac", None, audio=np.zeros(48000, np.float32),
                          video_codec=None, audio_codec="flac")
    garbage = media / "garbage.mp3"
    garbage.write_bytes(b"this is not an mp3 file" * 10)
    cases = {media / "missing.wav": "file not found", video_only: "no audio stream",
             short: "at least 1 s", silence: "only 0.00 s of speech",
             garbage: "not a readable audio or video file"}
    for path, message in cases.items():
        with pytest.raises(PredictInputError, match=message):
            read_speech(path)
    good = write_media(media / "ok.wav", None, audio=_tone(models.bins[2], 1.5),
                       video_codec=None, audio_codec="pcm")
    results = predict_files([*cases, good], tmp_path / "out")
    assert [r.error is None for r in results] == [False] * len(cases) + [True]
    assert all(Path(r.image_path).exists() for r in results if r.error is None)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok.json", "ok.npy", "ok.png"]


def test_pyfunc_model_serves_base64_audio(models, tmp_path: Path) -> None:
    import base64
    import io

    import mlflow.pyfunc
    import pandas as pd

    from s2f.registry.serving import log_pyfunc_model

    info = log_pyfunc_model(layout=models.layout)
    assert info.registered_model_version == 1
    served = mlflow.pyfunc.load_model(f"models:/speech2face-pyfunc/{info.registered_model_version}")
    flac = write_media(tmp_path / "v.flac", None, audio=_tone(models.bins[2], 1.5),
                       video_codec=None, audio_codec="flac")
    good = base64.b64encode(flac.read_bytes()).decode()
    out = served.predict(pd.DataFrame({"audio": [good, base64.b64encode(b"junk").decode(), "%%"]}))
    assert list(out["error"].isna()) == [True, False, False]
    assert "not a readable audio" in out["error"][1] and "base64" in out["error"][2]
    png = Image.open(io.BytesIO(base64.b64decode(out["image_png"][0])))
    assert png.size == (64, 64)
    np.testing.assert_allclose(out["feature"][0], models.base[2], rtol=1e-5)
    assert out["model"][0] == "speech2face-voice-encoder v1" and out["notice"][0] == NOTICE


def _float_wav(path: Path, samples: np.ndarray, sr: int = 16000) -> Path:
    """An IEEE-float WAV (format 3), written by hand: float WAVs can carry NaN and infinity."""
    import struct

    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sr, sr * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


def test_non_finite_samples_and_bad_seconds_are_refused(models, tmp_path: Path) -> None:
    """Issue 24: 10 NaN samples gave exit 0, a NaN feature, a black PNG and a sidecar saying
    5.89 s voiced; `--seconds 1e5` was a 6 GiB MemoryError, 0.001 a RuntimeError."""
    from flows.params import PredictParams

    wave = _tone(models.bins[2], 1.5)
    clean = _float_wav(tmp_path / "clean.wav", wave)
    assert read_speech(clean).size == wave.size  # the hand-made float WAV reads
    wave[::1000][:10] = np.nan
    nan = _float_wav(tmp_path / "nan.wav", wave)
    with pytest.raises(PredictInputError, match="10 of 24000 samples are not finite"):
        read_speech(nan)
    (result,) = predict_files([nan], tmp_path / "out")
    assert "not finite" in (result.error or "") and not list((tmp_path / "out").iterdir())
    for seconds in (1e5, 0.001):
        with pytest.raises(ValueError, match="seconds must be between 1 and 60"):
            predict_files([clean], tmp_path / "out", seconds=seconds)
        with pytest.raises(ValueError, match="seconds"):
            PredictParams(audio=[clean], out=tmp_path / "out", seconds=seconds)


def _silent_flac(path: Path, seconds: int, sr: int = 16000) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=sr)
        stream.layout = "mono"
        block = np.zeros((1, sr * 10), np.int16)
        for _ in range(seconds // 10):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_a_two_hour_silent_file_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 24: a silent 2-hour FLAC (1.3 MB) took 4.4 GB and 11.6 s before it was refused.
    Predict decodes at most PREDICT_READ_SECONDS; the peak RSS of the refusal is measured in a
    fresh process, beside the RSS it had before (its imports)."""
    import subprocess
    import sys

    from s2f.registry.predict import PREDICT_READ_SECONDS

    flac = _silent_flac(tmp_path / "two_hours.flac", 2 * 3600)
    code = ("import resource, sys\n"
            "from s2f.registry.predict import PredictInputError, read_speech\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    read_speech(sys.argv[1])\nexcept PredictInputError as exc:\n"
            "    print(exc)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    out = subprocess.run([sys.executable, "-c", code, str(flac)], capture_output=True,
                         text=True, check=True, timeout=300).stdout.splitlines()
    assert f"in {PREDICT_READ_SECONDS:.2f} s (the first seconds read)" in out[0], out
    assert int(out[-1]) < 150 * 1024, f"peak RSS grew by {int(out[-1]) // 1024} MB"  # KiB
