"""The cheap face search (coarse first, then tracking) against dlib's full search, and the
process-pool preprocessing against the serial one, on real face clips.

    pytest tests/test_face_search.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from s2f.faces.detect import FaceDetector
from s2f.faces.search import clip_faces, search_order
from s2f.media.synthetic_clips import write_face_clip
from s2f.media.video import ClipRequest, decode_clips
from s2f.preprocess.clips import PreprocessConfig, preprocess_clips
from s2f.preprocess.pool import preprocess_parallel


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("search")
    return {
        "360p": write_face_clip(d / "one360aaaaa.webm", "vp9", seconds=2.0),
        "480p": write_face_clip(d / "one480bbbbb.webm", "vp9", seconds=2.0, height=480,
                                width=854, face_px=160),
        "small": write_face_clip(d / "smallfacecc.webm", "vp9", seconds=2.0, face_px=50),
        "two": write_face_clip(d / "twofacesddd.webm", "vp9", seconds=2.0,
                               centres=[(0.25, 0.5), (0.75, 0.5)]),
        "none": write_face_clip(d / "nofaceeeeee.webm", "vp9", seconds=2.0, centres=[]),
    }


def _frames(path: Path) -> np.ndarray:
    (clip,) = decode_clips([ClipRequest("k", str(path), 0.2, 1.8, 25.0, "vp9")], 3, gpu=False)
    return clip.frames


def test_middle_frame_first() -> None:
    assert search_order(3) == [1, 0, 2]
    assert search_order(1) == [0]


@pytest.mark.parametrize("name,hint", [("360p", (0.5, 0.45)), ("480p", (0.5, 0.45)),
                                       ("small", (0.5, 0.45)), ("two", (0.2, 0.5)),
                                       ("two", (0.8, 0.5)), ("360p", None)])
def test_same_faces_as_the_full_search(clips: dict[str, Path], name: str,
                                       hint: tuple[float, float] | None) -> None:
    detector = FaceDetector("hog")
    frames = _frames(clips[name])
    full = [detector.best_face(f, hint) for f in frames]
    fast = clip_faces(detector, frames, hint)
    for a, b in zip(full, fast, strict=True):
        assert (a is None) == (b is None)
        if a is None or b is None:
            continue
        # Same face: boxes overlap, landmarks within the full search's own few-pixel jitter.
        centre_a = np.mean(a.landmarks, axis=0)
        centre_b = np.mean(b.landmarks, axis=0)
        assert np.linalg.norm(centre_a - centre_b) < 4.0
        assert np.median(np.linalg.norm(a.landmarks - b.landmarks, axis=1)) < 3.0


def test_no_face_stays_no_face(clips: dict[str, Path]) -> None:
    assert clip_faces(FaceDetector("hog"), _frames(clips["none"]), (0.5, 0.45)) == [None] * 3


def _row(path: Path, n: int, hint: tuple[float, float] = (0.5, 0.45)) -> dict[str, Any]:
    return {"clip_key": f"{path.stem}-{n}", "status": "ok", "video_path": str(path),
            "start_s": 0.2, "end_s": 1.8, "fps": 25.0, "video_codec": "vp9",
            "hint_x": hint[0], "hint_y": hint[1]}


def test_process_pool_gives_the_serial_tables(clips: dict[str, Path]) -> None:
    rows = [_row(clips["360p"], 0), _row(clips["none"], 1), _row(clips["two"], 2, (0.2, 0.5)),
            _row(clips["480p"], 3), {**_row(clips["360p"], 4), "status": "missing_media"}]
    config = PreprocessConfig(device="cpu", chunk_clips=2)
    serial = preprocess_clips(rows, config, progress=False)
    pooled = preprocess_parallel(rows, PreprocessConfig(device="cpu", chunk_clips=2, workers=2),
                                 progress=False)
    assert pooled.preprocess.to_pylist() == serial.preprocess.to_pylist()
    drop = ["crop_jpeg"]  # JPEG bytes are equal too, but keep the failure message readable
    assert pooled.faces.drop(drop).to_pylist() == serial.faces.drop(drop).to_pylist()
    assert pooled.faces.column("crop_jpeg").to_pylist() == serial.faces.column("crop_jpeg"
                                                                               ).to_pylist()
    np.testing.assert_allclose(np.array(pooled.face_features.column("feature").to_pylist()),
                               np.array(serial.face_features.column("feature").to_pylist()),
                               atol=1e-5)
