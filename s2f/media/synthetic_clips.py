"""Small real media files with real faces, for tests and benchmarks.

A face photo from `s2f/assets/faces` (cut around an annotated face box) is pasted on a plain
background and drifts 2 px per frame left and right; the clip is encoded with `s2f.media.mux`
(VP9 .webm or H.264 .mp4) with a quiet tone as audio.

    from s2f.media.synthetic_clips import write_face_clip
    write_face_clip(Path("x.webm"), "vp9", centres=[(0.5, 0.45)])   # one face, mid frame
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np

FACES_DIR = Path(__file__).resolve().parents[1] / "assets" / "faces"
# (photo, annotated face box x0, y0, x1, y1) of the largest annotated faces.
FACE_SOURCES = (
    ("2008_002506.jpg", "testing_with_face_landmarks.xml", 0),
    ("2008_001009.jpg", "training_with_face_landmarks.xml", 1),
    ("2008_001322.jpg", "training_with_face_landmarks.xml", 2),
)


@cache
def face_patch(source: int = 0, face_px: int = 110) -> np.ndarray:
    """RGB patch of 2.2x the annotated face box, scaled so the box is `face_px` wide."""
    from PIL import Image

    from s2f.faces.annotations import read_dlib_xml

    photo, xml, box_index = FACE_SOURCES[source % len(FACE_SOURCES)]
    image = next(i for i in read_dlib_xml(FACES_DIR / xml) if i.path.name == photo)
    x0, y0, x1, y1 = image.boxes[box_index]
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 1.1 * (x1 - x0)
    with Image.open(image.path) as im:
        rgb = im.convert("RGB")
        patch = rgb.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
        side = round(2.2 * face_px)
        return np.asarray(patch.resize((side, side), Image.Resampling.BICUBIC))


def face_frames(n_frames: int, height: int, width: int, centres: Sequence[tuple[float, float]],
                face_px: int = 110) -> Iterator[np.ndarray]:
    """Frames with one face per normalised centre, drifting a few pixels over time."""
    patches = [face_patch(i, face_px) for i in range(len(centres))]
    for t in range(n_frames):
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = (70, 110, 150)
        for (cx, cy), patch in zip(centres, patches, strict=True):
            ph, pw = patch.shape[:2]
            # Triangle-wave drift, 2 px per frame: neighbouring frames always differ.
            x = int(cx * width - pw / 2 + 2 * abs(t % 16 - 8) - 8)
            y = int(cy * height - ph / 2)
            fx0, fy0 = max(0, x), max(0, y)
            fx1, fy1 = min(width, x + pw), min(height, y + ph)
            frame[fy0:fy1, fx0:fx1] = patch[fy0 - y:fy1 - y, fx0 - x:fx1 - x]
        yield frame


def write_face_clip(path: Path, codec: str = "vp9", seconds: float = 1.6, fps: int = 25,
                    height: int = 360, width: int = 640,
                    centres: Sequence[tuple[float, float]] = ((0.5, 0.45),),
                    face_px: int = 110) -> Path:
    from s2f.media.mux import write_media

    n = round(seconds * fps)
    tone = 0.05 * np.sin(2 * np.pi * 220 * np.arange(round(seconds * 16000)) / 16000)
    return write_media(path, face_frames(n, height, width, centres, face_px), fps=fps,
                       audio=tone.astype(np.float32), sample_rate=16000, video_codec=codec)
