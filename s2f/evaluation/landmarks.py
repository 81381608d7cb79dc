"""dlib's 68 landmarks detected on the face decoder's rendered images, for the craniofacial
measurements (the paper detects landmarks on its reconstructions; the decoder's own predicted
landmarks would measure the decoder, not the image).

Each render (any size, canonical aligned frame) is resized to `RENDER_SIZE` px and dlib's HOG
detector is run on it (upsample 1). Where HOG finds a face, the largest box is used; where it
misses (small, smooth renders), the fixed face box of the canonical frame is used instead: the
box of the 68-point template the crops are aligned to (`s2f.faces.align.template_pixels`),
which is where the decoder draws the face. Either way dlib's shape predictor
(shape_predictor_68_face_landmarks) places the 68 points. `hog_fraction` says how often HOG
found the face.

    python -m s2f.evaluation.landmarks IMAGE.png...    # prints the box source and 68 points
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from s2f.faces.align import CROP_SIZE, template_pixels
from s2f.faces.detect import _models

RENDER_SIZE = CROP_SIZE  # the aligned crop's size: the template box is defined there


@dataclass
class DetectedLandmarks:
    landmarks: np.ndarray   # N×68×2 in RENDER_SIZE pixels
    hog_found: np.ndarray   # N bools: HOG found the face (else the fixed template box)

    @property
    def hog_fraction(self) -> float:
        return float(self.hog_found.mean()) if len(self.hog_found) else float("nan")


def template_box(size: int = RENDER_SIZE) -> tuple[int, int, int, int]:
    """The canonical frame's face box (x0, y0, x1, y1): the bounding box of the template."""
    t = template_pixels(size)
    x0, y0 = np.floor(t.min(axis=0)).astype(int)
    x1, y1 = np.ceil(t.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def detect_landmarks(images: np.ndarray, size: int = RENDER_SIZE) -> DetectedLandmarks:
    """`images`: N×H×W×3 uint8 renders → dlib's 68 landmarks on each (see the module doc)."""
    import dlib

    detector, predictor = _models("hog")
    fixed = dlib.rectangle(*template_box(size))
    out = np.zeros((len(images), 68, 2), np.float64)
    found = np.zeros(len(images), bool)
    for i, img in enumerate(images):
        rgb = _resize(np.asarray(img, np.uint8), size)
        boxes = list(detector(rgb, 1))
        box = max(boxes, key=lambda b: b.area()) if boxes else fixed
        found[i] = bool(boxes)
        shape = predictor(rgb, box)
        out[i] = [(shape.part(j).x, shape.part(j).y) for j in range(68)]
    return DetectedLandmarks(out, found)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    paths = sys.argv[1:] if argv is None else argv
    imgs = np.stack([_resize(np.asarray(Image.open(p).convert("RGB")), RENDER_SIZE)
                     for p in paths])
    det = detect_landmarks(imgs)
    for p, lm, hog in zip(paths, det.landmarks, det.hog_found, strict=True):
        print(p, "HOG box" if hog else "template box", lm.round(1).tolist())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
