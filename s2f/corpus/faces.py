"""Real faces from the shipped photographs, and new identities morphed from them.

1. `detect_real_faces`: every face dlib's HOG detector finds in `s2f/assets/faces` (upsample 1,
   then 2 for a photo where 1 finds none), its 68 landmarks, and the face aligned by a
   similarity transform into the canonical `CANVAS`×`CANVAS` frame (`align_to_canvas`).
2. `morph`: a new face from two or three aligned real faces: each is warped to the weighted mean
   of their landmark shapes with a piecewise-affine warp over a Delaunay triangulation
   (`scipy.spatial.Delaunay`, barycentric coordinates, bilinear sampling; no OpenCV), then the
   warped images are blended with the same weights.
3. `FaceModels.analyse`: HOG detection on the morph (it must still be a face), landmarks and the
   dlib ResNet 128-D descriptor, the identity's face embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import Delaunay

from s2f.faces.dlib_models import RESNET, SHAPE_68, model_path

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "faces"
CANVAS = 256                 # side of the aligned face image, pixels
FACE_SIZE = 0.56             # larger side of the landmark box, as a fraction of CANVAS
FACE_CENTRE = (0.5, 0.56)    # centre of the landmark box, as fractions of CANVAS (x, y)
N_BORDER = 5                 # fixed warp anchors per canvas side (corners included)


@dataclass
class RealFace:
    """One face found in one photograph."""

    file: str                  # photo file name in the assets folder
    index: int                 # index of the face among the photo's detections (sorted, see below)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels
    score: float               # HOG detection score
    landmarks: np.ndarray      # 68×2 in photo pixels
    aligned: np.ndarray        # CANVAS×CANVAS×3 uint8, similarity-aligned to the template
    aligned_landmarks: np.ndarray  # 68×2 in canvas pixels
    embedding: np.ndarray      # dlib ResNet descriptor, computed on the photo

    @property
    def key(self) -> str:
        return f"{self.file}#{self.index}"


@dataclass
class FaceAnalysis:
    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray      # 68×2
    embedding: np.ndarray      # 128 float32


class FaceModels:
    """dlib's HOG detector, 68-point shape predictor and ResNet face encoder (one set per
    process: dlib's objects are neither thread-safe nor picklable)."""

    def __init__(self) -> None:
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(model_path(SHAPE_68)))
        self.encoder = dlib.face_recognition_model_v1(str(model_path(RESNET)))
        self._dlib = dlib

    def detect(self, img: np.ndarray, upsample: int = 0) -> list[tuple[tuple[int, int, int, int], float]]:
        """HOG detections as (box, score), highest score first."""
        rects, scores, _ = self.detector.run(np.ascontiguousarray(img), upsample, 0.0)
        found = [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores, strict=True)]
        return sorted(found, key=lambda d: -d[1])

    def landmarks(self, img: np.ndarray, box: tuple[int, int, int, int]):
        shape = self.predictor(np.ascontiguousarray(img), self._dlib.rectangle(*box))
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        return shape, pts

    def analyse(self, img: np.ndarray, upsample: int = 0) -> FaceAnalysis | None:
        """The best HOG face of `img` with landmarks and descriptor; None if there is no face."""
        found = self.detect(img, upsample)
        if not found:
            return None
        box, score = found[0]
        shape, pts = self.landmarks(img, box)
        emb = np.asarray(self.encoder.compute_face_descriptor(np.ascontiguousarray(img), shape),
                         np.float32)
        return FaceAnalysis(box=box, score=score, landmarks=pts, embedding=emb)


# -- similarity alignment -------------------------------------------------------------------------

def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2×3, uniform scale, rotation, translation) taking
    the points `src` onto `dst` (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def template_from(shapes: list[np.ndarray], iterations: int = 4) -> np.ndarray:
    """Mean landmark shape by generalised Procrustes, placed in the canvas: its box's larger
    side is FACE_SIZE·CANVAS and its centre is at FACE_CENTRE."""
    ref = shapes[0]
    for _ in range(iterations):
        ref = np.mean([apply_affine(umeyama(s, ref), s) for s in shapes], axis=0)
    lo, hi = ref.min(0), ref.max(0)
    scale = FACE_SIZE * CANVAS / (hi - lo).max()
    centre = np.array(FACE_CENTRE) * CANVAS
    return (ref - (lo + hi) / 2) * scale + centre


def align_to_canvas(img: np.ndarray, landmarks: np.ndarray, template: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Warp `img` by the similarity taking `landmarks` onto `template`: (canvas image, landmarks
    in canvas pixels). Pixels outside the photo repeat its edge."""
    m = umeyama(landmarks, template)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    # Work on the part of the photo the canvas sees (plus the filter's support).
    pad = 8 + int(2 / scale)
    h, w = img.shape[:2]
    x0, x1 = max(int(sx.min()) - pad, 0), min(int(np.ceil(sx.max())) + pad, w - 1)
    y0, y1 = max(int(sy.min()) - pad, 0), min(int(np.ceil(sy.max())) + pad, h - 1)
    src = img[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    if scale < 0.8:  # shrinking: low-pass first so that the resampling does not alias
        src = ndimage.gaussian_filter(src, sigma=(0.45 / scale, 0.45 / scale, 0), mode="nearest")
    out = _sample(src, sx - x0, sy - y0)
    return out, apply_affine(m, landmarks)


def _sample(img: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Bilinear sampling of an H×W×3 image at float pixel coordinates (edge repeated)."""
    out = np.empty(sx.shape + (img.shape[2],), np.float32)
    coords = np.stack([sy, sx])
    for c in range(img.shape[2]):
        out[..., c] = ndimage.map_coordinates(img[..., c], coords, order=1, mode="nearest")
    return out


# -- real faces ----------------------------------------------------------------------------------

def photo_files(faces_dir: Path = ASSETS_DIR) -> list[Path]:
    return sorted(p for p in Path(faces_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def detect_real_faces(models: FaceModels, faces_dir: Path = ASSETS_DIR) -> list[RealFace]:
    """Every HOG face of every photo, in a fixed order (photo file name, then top-to-bottom,
    left-to-right by box), with landmarks, dlib descriptor (from the photo) and the aligned
    canvas image."""
    raw = []
    for path in photo_files(faces_dir):
        img = np.asarray(Image.open(path).convert("RGB"))
        found = models.detect(img, upsample=1) or models.detect(img, upsample=2)
        for box, score in sorted(found, key=lambda d: (d[0][1] // 16, d[0][0])):
            shape, pts = models.landmarks(img, box)
            emb = np.asarray(models.encoder.compute_face_descriptor(img, shape), np.float32)
            raw.append((path.name, box, score, pts, img, emb))
    template = template_from([r[3] for r in raw])
    faces, per_photo = [], {}
    for name, box, score, pts, img, emb in raw:
        aligned, alm = align_to_canvas(img, pts, template)
        idx = per_photo.get(name, 0)
        per_photo[name] = idx + 1
        faces.append(RealFace(file=name, index=idx, box=box, score=score, landmarks=pts,
                              aligned=np.clip(aligned + 0.5, 0, 255).astype(np.uint8),
                              aligned_landmarks=alm, embedding=emb))
    return faces


# -- morphing ------------------------------------------------------------------------------------

def border_points(n: int = N_BORDER, size: int = CANVAS) -> np.ndarray:
    """Fixed anchors on the canvas border (n per side, corners included): the warp leaves the
    border in place and stretches smoothly in between."""
    t = np.linspace(0, size - 1, n)
    lo, hi = np.zeros(n), np.full(n, size - 1.0)
    pts = np.concatenate([np.stack([t, lo], 1), np.stack([t, hi], 1),
                          np.stack([lo, t], 1)[1:-1], np.stack([hi, t], 1)[1:-1]])
    return pts


def piecewise_affine_maps(target: np.ndarray, sources: list[np.ndarray], size: int = CANVAS
                          ) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each source point set, the (x, y) source coordinates of every output pixel under the
    piecewise-affine warp that moves `source` points onto `target` points. The Delaunay
    triangulation is of the target; each output pixel's barycentric coordinates in its
    target triangle weight that triangle's source vertices."""
    border = border_points(size=size)
    tgt = np.vstack([target, border])
    tri = Delaunay(tgt)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    pix = np.stack([xs.ravel(), ys.ravel()], 1)
    simplex = tri.find_simplex(pix, tol=1e-6)
    inside = simplex >= 0
    s = np.where(inside, simplex, 0)
    t = tri.transform[s]                                   # (P, 3, 2)
    b2 = np.einsum("pij,pj->pi", t[:, :2], pix - t[:, 2])  # first two barycentric coordinates
    bary = np.concatenate([b2, 1 - b2.sum(1, keepdims=True)], 1)
    verts = tri.simplices[s]                               # (P, 3)
    maps = []
    for src in sources:
        srcx = np.vstack([src, border])
        sp = np.einsum("pk,pkd->pd", bary, srcx[verts])
        sp[~inside] = pix[~inside]
        maps.append((sp[:, 0].reshape(size, size), sp[:, 1].reshape(size, size)))
    return maps


def morph(faces: list[RealFace], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend aligned real faces: warp each to the weighted mean shape, then mix the pixels with
    the same weights. Returns (CANVAS×CANVAS×3 uint8 image, 68×2 mean shape)."""
    weights = np.asarray(weights, np.float64)
    weights = weights / weights.sum()
    target = sum(w * f.aligned_landmarks for w, f in zip(weights, faces, strict=True))
    maps = piecewise_affine_maps(target, [f.aligned_landmarks for f in faces])
    acc = np.zeros((CANVAS, CANVAS, 3), np.float32)
    for w, f, (sx, sy) in zip(weights, faces, maps, strict=True):
        acc += np.float32(w) * _sample(f.aligned.astype(np.float32), sx, sy)
    return np.clip(acc + 0.5, 0, 255).astype(np.uint8), target


MAX_WEIGHT = 0.7      # no real face may dominate a morph
SAME_PERSON = 0.6     # dlib's threshold: descriptors closer than this are one person


def mixable(faces: list[RealFace]) -> np.ndarray:
    """n×n booleans: may faces i and j be mixed? Not when dlib takes them for the same person
    (descriptor distance below SAME_PERSON; bald_guys.jpg holds six photos of each of four
    men), nor a face with itself: a morph of two photos of one person is that person."""
    e = np.asarray([f.embedding for f in faces], np.float64)
    d = np.linalg.norm(e[:, None] - e[None], axis=2)
    return d >= SAME_PERSON


def sample_mix(rng: np.random.Generator, allowed: np.ndarray, primary: int | None = None,
               pool: tuple[int, ...] | None = None) -> tuple[list[int], list[float]]:
    """Two or three real faces (the first is `primary` when given), each mixable with the
    others (`allowed`, from `mixable`), all from `pool` when given (a split's faces), and
    blending weights from a Dirichlet(3, …, 3), redrawn until no weight exceeds MAX_WEIGHT."""
    n = len(allowed)
    if pool is not None:
        inside = np.zeros(n, bool)
        inside[list(pool)] = True
        allowed = allowed & inside[None, :]
    k = int(rng.integers(2, 4))
    if primary is not None:
        picks = [int(primary)]
    else:
        picks = [int(rng.integers(n)) if pool is None else int(pool[int(rng.integers(len(pool)))])]
    while len(picks) < k:
        ok = np.nonzero(np.all(allowed[picks], axis=0))[0]
        if len(ok) == 0:
            if len(picks) < 2:
                raise ValueError(f"real face {picks[0]} may not be mixed with any other")
            break
        picks.append(int(rng.choice(ok)))
    while True:
        w = rng.dirichlet(np.full(len(picks), 3.0))
        if w.max() <= MAX_WEIGHT:
            return picks, [float(x) for x in w]
