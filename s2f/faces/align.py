"""Similarity alignment of a face to a canonical 68-point template, and the 224x224 crop.

The template is dlib's mean face shape (the one `dlib.get_face_chip` aligns to, points 17-67,
normalised to [0, 1]) placed in a `size` x `size` chip with dlib's padding convention
(padding 0.25 of the face on each side, like dlib's face-recognition chips); the 17 jaw points
(0-16) are the mean of the annotated faces in `s2f/assets/faces` after that alignment
(`python -m s2f.faces.align` recomputes them). The similarity (rotation, uniform scale,
translation) is fitted on dlib's subset of points (eyes, nose, upper lip: `ALIGN_POINTS`):
jaw, eyebrows and lower lip move with pose and expression and would tilt the crop. Resized to
150x150 the crop is dlib's own face chip (descriptor distance ~0.05-0.12, tested).

kornia has no similarity estimator, so `umeyama` is the closed-form least-squares solution
(Umeyama 1991) in torch, batched. `warp_faces` warps with `kornia.geometry.transform.warp_affine`
on whatever device the frames are on (M maps source pixels to destination pixels,
dsize=(h, w), align_corners=True: pixel centres at integer coordinates, dlib's convention).

    M = similarity_to_template(landmarks68)          # (B, 2, 3), frame px -> crop px
    crops = warp_faces(frames_bchw_float, M)         # (B, 3, 224, 224)
"""

from __future__ import annotations

import io

import numpy as np
import torch

CROP_SIZE = 224
CROP_PADDING = 0.25

# dlib's mean face shape for points 17..67 (dlib/image_transforms/interpolation.h,
# get_face_chip_details), x and y normalised to the face's [0, 1] box.
_DLIB_MEAN_X = [
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689]
_DLIB_MEAN_Y = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182]

# Jaw points 0..16 in the same normalised frame: mean of the 43 annotated faces of
# s2f/assets/faces after alignment on ALIGN_POINTS (`python -m s2f.faces.align`).
_JAW_MEAN = [
    -0.089129, 0.269824,
    -0.085674, 0.428490,
    -0.071766, 0.582485,
    -0.042132, 0.739498,
    0.016002, 0.886135,
    0.110399, 1.012446,
    0.224177, 1.122563,
    0.349279, 1.212356,
    0.493370, 1.238531,
    0.646922, 1.216169,
    0.789559, 1.132233,
    0.918381, 1.028438,
    1.025375, 0.904561,
    1.095340, 0.756739,
    1.129474, 0.595267,
    1.145573, 0.428945,
    1.154860, 0.259424,
]

# The points the similarity is fitted on, as in dlib's get_face_chip_details: 17-67 without
# the eyebrows (17-26) and the lower lip (55-59, 65-67), which move with expression.
ALIGN_POINTS = [i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67)]


def template_normalised() -> np.ndarray:
    """The 68-point template in the face's normalised [0, 1] frame, (68, 2)."""
    inner = np.stack([_DLIB_MEAN_X, _DLIB_MEAN_Y], axis=1)
    return np.concatenate([np.asarray(_JAW_MEAN, dtype=np.float64).reshape(17, 2), inner])


def template_pixels(size: int = CROP_SIZE, padding: float = CROP_PADDING) -> np.ndarray:
    """The template in crop pixels: the face box plus `padding` of it on each side fills the
    `size` x `size` chip (dlib's get_face_chip convention)."""
    return (template_normalised() + padding) / (1 + 2 * padding) * size


def umeyama(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transform mapping src points to dst points, batched.

    src, dst: (B, N, 2) or (N, 2). Returns (B, 2, 3) (or (2, 3)) with dst ~ s R src + t,
    R a proper rotation (no reflection)."""
    squeeze = src.dim() == 2
    if squeeze:
        src, dst = src[None], dst[None]
    src64, dst64 = src.double(), dst.double()
    mu_s, mu_d = src64.mean(1, keepdim=True), dst64.mean(1, keepdim=True)
    xs, xd = src64 - mu_s, dst64 - mu_d
    cov = xd.transpose(1, 2) @ xs / src.shape[1]  # (B, 2, 2)
    u, sv, vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.stack([torch.ones_like(sign), sign], dim=1)  # (B, 2)
    rot = u @ torch.diag_embed(d) @ vh
    var_s = (xs ** 2).sum(dim=2).mean(dim=1)  # (B,)
    scale = (sv * d).sum(dim=1) / var_s.clamp_min(1e-12)
    trans = mu_d.squeeze(1) - scale[:, None] * (rot @ mu_s.transpose(1, 2)).squeeze(2)
    m = torch.cat([scale[:, None, None] * rot, trans[:, :, None]], dim=2).to(src.dtype)
    return m[0] if squeeze else m


def similarity_to_template(landmarks: torch.Tensor, size: int = CROP_SIZE,
                           padding: float = CROP_PADDING) -> torch.Tensor:
    """(B, 68, 2) frame-pixel landmarks -> (B, 2, 3) frame -> crop similarity."""
    template = torch.as_tensor(template_pixels(size, padding), dtype=torch.float64,
                               device=landmarks.device)
    src = landmarks[:, ALIGN_POINTS].double()
    dst = template[ALIGN_POINTS].expand(src.shape[0], -1, -1)
    return umeyama(src, dst).float()


def apply_affine(points: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Map (B, N, 2) points with (B, 2, 3) matrices."""
    return points @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


def warp_faces(frames: torch.Tensor, m: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """Warp (B, C, H, W) float frames into (B, C, size, size) crops; m maps frame -> crop px."""
    from kornia.geometry.transform import warp_affine

    return warp_affine(frames, m.to(frames.dtype), dsize=(size, size), mode="bilinear",
                       padding_mode="zeros", align_corners=True)


def crop_footprint(m: torch.Tensor, height: int, width: int, size: int = CROP_SIZE,
                   margin: int = 2) -> tuple[int, int, int, int]:
    """The frame region (x0, y0, x1, y1) that the crops of all `m` read from, clamped."""
    a, t = m[:, :, :2].double(), m[:, :, 2].double()
    corners = torch.tensor([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]],
                           dtype=torch.float64, device=m.device)
    src = (corners[None] - t[:, None]) @ torch.linalg.inv(a).transpose(1, 2)  # crop -> frame
    lo, hi = src.reshape(-1, 2).amin(0), src.reshape(-1, 2).amax(0)
    x0, y0 = max(0, int(lo[0]) - margin), max(0, int(lo[1]) - margin)
    x1, y1 = min(width, int(hi[0]) + margin + 1), min(height, int(hi[1]) + margin + 1)
    return x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)


def warp_faces_from_frames(frames: torch.Tensor, m: torch.Tensor, size: int = CROP_SIZE
                           ) -> torch.Tensor:
    """uint8 (B, H, W, 3) frames -> float (B, 3, size, size) crops, on the frames' device.

    Only the region the crops read from is converted to float and warped (a face is a small
    part of a 720p frame), with M shifted to that region; the result equals `warp_faces` on
    the whole frame."""
    x0, y0, x1, y1 = crop_footprint(m, frames.shape[1], frames.shape[2], size)
    region = frames[:, y0:y1, x0:x1].permute(0, 3, 1, 2).float()
    shifted = m.clone()
    shifted[:, :, 2] += m[:, :, :2] @ torch.tensor([x0, y0], dtype=m.dtype, device=m.device)
    return warp_faces(region, shifted, size)


def to_uint8_hwc(crops: torch.Tensor) -> np.ndarray:
    """(B, 3, h, w) float crops in [0, 255] -> (B, h, w, 3) uint8 numpy on the CPU."""
    return crops.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def encode_jpeg(crop: np.ndarray, quality: int = 92) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(crop, mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def mean_jaw_from_annotations() -> np.ndarray:
    """Recompute `_JAW_MEAN` from the annotated faces in s2f/assets/faces, (17, 2)."""
    from pathlib import Path

    from s2f.faces.annotations import read_dlib_xml

    faces_dir = Path(__file__).resolve().parents[1] / "assets" / "faces"
    inner = np.stack([_DLIB_MEAN_X, _DLIB_MEAN_Y], axis=1)
    jaws = []
    for xml in sorted(faces_dir.glob("*_with_face_landmarks.xml")):
        for image in read_dlib_xml(xml):
            for marks in image.landmarks:
                if marks is None:
                    continue
                m = umeyama(torch.from_numpy(marks[ALIGN_POINTS]),
                            torch.from_numpy(inner[[i - 17 for i in ALIGN_POINTS]]))
                jaws.append(apply_affine(torch.from_numpy(marks[None, :17]), m[None])[0].numpy())
    return np.mean(jaws, axis=0)


if __name__ == "__main__":
    jaw = mean_jaw_from_annotations()
    print("_JAW_MEAN = [")
    for x, y in jaw:
        print(f"    {x:.6f}, {y:.6f},")
    print("]")
