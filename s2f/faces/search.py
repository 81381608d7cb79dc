"""Find the chosen face in each of a clip's K frames for a fraction of the cost of K full searches.

`FaceDetector.best_face` runs dlib's full search on every frame: at 360p that is HOG with one
upsample (the frame doubled, ~4x the work of the frame itself), because a face of 1/8 of the
short side must be found. Three facts of the data let us do much less:

1. Coarse first. Most faces are far bigger than the smallest one the policy must find, so the
   first frame is searched one octave coarser than the policy (one upsample fewer, or the frame
   halved when the policy uses none: ~1/4 of the work). A face found there is kept only when the
   manifest's hint lies inside its box (the face the full search would pick nearest the hint);
   otherwise the full search runs as before, so small faces are still found.
2. Track. The face of one clip keeps its place and size over a few seconds, so the other frames
   are searched only in a window around the previous box, rescaled so that the face is about
   `TRACK_FACE_PX` wide (HOG's window is ~80 px) with no upsampling: a few ms per frame.
3. Landmarks always at full resolution: only the box comes from the coarse or tracked search;
   the 68-point predictor runs on the original frame, so the landmarks (and the crops) keep the
   frame's detail.

Any frame where the cheap search finds nothing falls back to `best_face`, so a clip is
`no_face` exactly when the full search finds no face in any frame.

    faces = clip_faces(detector, frames, hint=(0.5, 0.45))   # list[Face | None], one per frame
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from s2f.faces.detect import Box, Face, FaceDetector, initial_upsample

TRACK_FACE_PX = 100  # tracked face width after rescaling the window: comfortably above HOG's 80
TRACK_MARGIN = 0.6  # the window is the previous box grown by this fraction of its side each way
COARSE_SCALE = 0.5  # one octave down when the policy already runs without upsampling


def search_order(frames: int) -> list[int]:
    """The middle frame first (the clip's representative face), then outwards."""
    middle = frames // 2
    return sorted(range(frames), key=lambda k: (abs(k - middle), k))


def resize_rgb(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 RGB resized by `scale` (bilinear, antialiased when shrinking)."""
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _scaled_boxes(detector: FaceDetector, image: np.ndarray, scale: float, upsample: int,
                  offset: tuple[float, float] = (0.0, 0.0)) -> list[tuple[Box, float]]:
    """Detections on `image` resized by `scale`, mapped back to the coordinates of `image`
    shifted by `offset` (the window's corner in the frame)."""
    small = image if scale == 1.0 else resize_rgb(image, scale)
    ox, oy = offset
    return [((x0 / scale + ox, y0 / scale + oy, x1 / scale + ox, y1 / scale + oy), score)
            for (x0, y0, x1, y1), score in detector.detect_at(small, upsample)]


def _contains(box: Box, x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def coarse_face(detector: FaceDetector, image: np.ndarray, hint: tuple[float, float] | None
                ) -> Face | None:
    """One octave coarser than the policy; only a face containing the hint is trusted."""
    h, w = image.shape[:2]
    upsample = min(initial_upsample(h, w), detector.max_upsample)
    found = (_scaled_boxes(detector, image, 1.0, upsample - 1) if upsample > 0
             else _scaled_boxes(detector, image, COARSE_SCALE, 0))
    if not found:
        return None
    if hint is None or any(v is None or not np.isfinite(v) for v in hint):
        box, score = max(found, key=lambda f: f[1])
    else:
        hx, hy = hint[0] * w, hint[1] * h
        inside = [f for f in found if _contains(f[0], hx, hy)]
        if not inside:
            return None
        box, score = min(inside, key=lambda f: _centre_distance(f[0], hx, hy))
    return detector.face_at(image, box, score)


def track_face(detector: FaceDetector, image: np.ndarray, previous: Box) -> Face | None:
    """The face nearest `previous` in a window around it, searched at ~TRACK_FACE_PX."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = previous
    side = max(x1 - x0, y1 - y0, 1.0)
    grow = TRACK_MARGIN * side
    wx0, wy0 = max(0, int(x0 - grow)), max(0, int(y0 - grow))
    wx1, wy1 = min(w, int(np.ceil(x1 + grow))), min(h, int(np.ceil(y1 + grow)))
    if wx1 - wx0 < 16 or wy1 - wy0 < 16:
        return None
    window = np.ascontiguousarray(image[wy0:wy1, wx0:wx1])
    found = _scaled_boxes(detector, window, TRACK_FACE_PX / side, 0, (wx0, wy0))
    if not found:
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box, score = min(found, key=lambda f: _centre_distance(f[0], cx, cy))
    return detector.face_at(image, box, score)


def _centre_distance(box: Box, x: float, y: float) -> float:
    return ((box[0] + box[2]) / 2 - x) ** 2 + ((box[1] + box[3]) / 2 - y) ** 2


def clip_faces(detector: FaceDetector, frames: Sequence[np.ndarray] | np.ndarray,
               hint: tuple[float, float] | None) -> list[Face | None]:
    """The chosen face of every frame (None where there is none), middle frame first: coarse
    search, then tracking from the last face found; full search wherever those find nothing."""
    faces: list[Face | None] = [None] * len(frames)
    previous: Box | None = None
    for k in search_order(len(frames)):
        image = np.ascontiguousarray(frames[k], dtype=np.uint8)
        face = track_face(detector, image, previous) if previous is not None else None
        if face is None:
            face = coarse_face(detector, image, hint) or detector.best_face(image, hint)
        faces[k] = face
        if face is not None:
            previous = face.box
    return faces
