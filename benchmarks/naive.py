"""The naive preprocessing chain every pipeline figure is quoted against.

What a first script would do, with the same models and outputs as the pipeline: per clip, one
PyAV open to cut the audio segment (resampled to 16 kHz mono, written as FLAC), then for each
of the K sampled frames a fresh PyAV open + seek + decode, dlib HOG on the full-resolution
frame with upsample 1, the 68 landmarks, the similarity alignment and crop, and a dlib-resnet
embedding of *every* frame (one call per face). One process, no batching, nothing shared
between clips except the loaded models. Nothing is written to Parquet.

    from benchmarks.naive import naive_chain
    results = naive_chain(clips, out_dir, frames=3)   # list of per-clip dicts
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NaiveClip:
    clip_key: str
    path: str
    start_s: float
    end_s: float
    hint: tuple[float, float] | None


def _audio(path: str, start_s: float, end_s: float) -> np.ndarray:
    import av

    with av.open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        container.seek(int(start_s / float(stream.time_base)), stream=stream, backward=True)
        chunks = []
        for frame in container.decode(stream):
            if frame.time is not None and frame.time > end_s:
                break
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _frame(path: str, t: float) -> np.ndarray:
    """A fresh open and seek for every frame: what naive per-frame code does."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        container.seek(int(t / float(stream.time_base)), stream=stream, backward=True)
        picked = None
        for frame in container.decode(stream):
            picked = frame
            if frame.time is not None and frame.time >= t - 0.02:
                break
        if picked is None:
            raise ValueError(f"{path}: no frame at {t:.3f} s")
        return picked.to_ndarray(format="rgb24")


def naive_models() -> tuple[Any, Any, Any]:
    """HOG detector, 68-point predictor, ResNet encoder: loaded once, outside the clock."""
    import dlib

    from s2f.faces.dlib_models import RESNET, SHAPE_68, model_path

    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model_path(SHAPE_68))),
            dlib.face_recognition_model_v1(str(model_path(RESNET))))


def naive_chain(clips: list[NaiveClip], out_dir: Path, frames: int = 3,
                models: tuple[Any, Any, Any] | None = None) -> list[dict[str, Any]]:
    import dlib
    import torch

    from s2f.faces.align import similarity_to_template, to_uint8_hwc, warp_faces_from_frames
    from s2f.faces.detect import pick_face
    from s2f.faces.features import DLIB_CHIP_SIZE, resize_crops
    from s2f.ingest.media import write_flac_atomic

    detector, predictor, resnet = models or naive_models()
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for clip in clips:
        wave = _audio(clip.path, clip.start_s, clip.end_s)
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16)
        write_flac_atomic(pcm, out_dir / f"{clip.clip_key}.flac")
        faces = 0
        features = []
        for q in range(frames):
            t = clip.start_s + (q + 1) / (frames + 1) * (clip.end_s - clip.start_s)
            image = _frame(clip.path, t)
            rects, scores, _ = detector.run(image, 1, 0.0)
            if not len(rects):
                continue
            found = [((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())),
                      float(s)) for r, s in zip(rects, scores, strict=True)]
            box, _ = pick_face(found, image.shape[0], image.shape[1], clip.hint)
            shape = predictor(image, dlib.rectangle(*(round(v) for v in box)))
            marks = torch.tensor([[p.x, p.y] for p in shape.parts()], dtype=torch.float32)
            crop = to_uint8_hwc(warp_faces_from_frames(torch.from_numpy(image[None]),
                                                       similarity_to_template(marks[None])))
            chip = resize_crops(crop, DLIB_CHIP_SIZE)[0]
            features.append(np.asarray(resnet.compute_face_descriptor(chip)))
            faces += 1
        results.append({"clip_key": clip.clip_key, "faces": faces,
                        "status": "ok" if faces else "no_face", "samples": len(wave)})
    return results
