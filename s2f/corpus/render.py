"""Talking-head frames: a morphed face with a neck and shoulders, moving slightly over a simple
background.

`make_sprite` cuts the head out of the aligned face (a feathered outline: the jaw line and an
arc over the forehead) and adds a neck and shoulders; `VideoLayout.draw` picks, per video, a
frame size, a background (two-colour gradient with smooth and fine noise), the face's size and
place (sometimes off-centre) and a smooth head motion (sums of slow sinusoids in translation,
rotation and scale); `VideoLayout.draw_frame(t)` draws the frame at time t. All draws come from the caller's
generator, so a video is a function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FRAME_SIZES = ((320, 240), (352, 264), (384, 288), (416, 312), (448, 336), (480, 360))
MIN_FACE_PX = 104  # smallest jaw width in a frame; dlib's HOG finds faces from about 80 px


@dataclass
class Sprite:
    rgb: Image.Image           # head, neck and shoulders (colour also bleeds past the outline)
    alpha: Image.Image         # their opacity, L
    anchor: tuple[float, float]  # the face's centre (centre of its HOG box), sprite pixels
    jaw_px: float              # jaw width (landmark 0 to 16), sprite pixels
    top: float                 # highest opaque row above the anchor, sprite pixels (positive)
    chin: float                # chin below the anchor, sprite pixels (positive)


def make_sprite(face: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int],
                rng: np.random.Generator) -> Sprite:
    """Head cut out of the aligned face image along its landmarks, over a neck and shoulders
    of a random clothing colour. `box` is the face's HOG box in the face image."""
    size = face.shape[0]
    pts = np.asarray(landmarks, np.float64)
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    anchor = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    jaw = pts[0:17]
    jaw_w = float(np.linalg.norm(pts[16] - pts[0]))
    brow_top = float(pts[17:27, 1].min())
    chin_y = float(pts[8, 1])
    face_h = chin_y - brow_top
    # outline: jaw pushed out a little, then a half ellipse over the forehead
    jaw_out = centre + (jaw - centre) * 1.04
    mid = (pts[0] + pts[16]) / 2
    rx = jaw_w / 2 * 1.04
    ry = mid[1] - (brow_top - 0.55 * face_h)
    angles = np.linspace(0.0, math.pi, 24)[1:-1]
    arc = np.stack([mid[0] + rx * np.cos(angles), mid[1] - ry * np.sin(angles)], 1)
    outline = np.vstack([jaw_out, arc])
    top = float(outline[:, 1].min())

    height = int(size * 1.4)
    face_img = Image.fromarray(face)
    rgb = Image.new("RGB", (size, height), (0, 0, 0))
    rgb.paste(face_img, (0, 0))
    alpha = Image.new("L", (size, height), 0)
    draw_rgb, draw_a = ImageDraw.Draw(rgb), ImageDraw.Draw(alpha)
    # skin tone for the neck: median colour of the cheeks and nose
    inner = face[int(pts[29, 1]) - 6:int(pts[33, 1]) + 6, int(pts[3, 0]) + 4:int(pts[13, 0]) - 4]
    skin = tuple(int(v) for v in np.median(inner.reshape(-1, 3), 0)) if inner.size else (180, 140, 120)
    shade = tuple(int(v * 0.85) for v in skin)
    cloth = tuple(int(v) for v in rng.integers(20, 200, 3))
    neck_w = jaw_w * 0.62
    sh_top = chin_y + face_h * 0.2
    neck = [mid[0] - neck_w / 2, chin_y - face_h * 0.35, mid[0] + neck_w / 2, sh_top + face_h * 0.2]
    draw_rgb.rectangle(neck, fill=shade)
    draw_a.rectangle(neck, fill=255)
    ellipse = [mid[0] - jaw_w * 1.2, sh_top, mid[0] + jaw_w * 1.2, sh_top + face_h * 1.8]
    draw_rgb.ellipse(ellipse, fill=cloth)
    draw_a.ellipse(ellipse, fill=255)
    head_mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(head_mask).polygon([tuple(p) for p in outline], fill=255)
    head_mask = head_mask.filter(ImageFilter.GaussianBlur(2.5))
    rgb.paste(face_img, (0, 0), head_mask)
    alpha.paste(255, (0, 0), head_mask)
    alpha = alpha.filter(ImageFilter.GaussianBlur(1.0))
    return Sprite(rgb=rgb, alpha=alpha, anchor=(float(anchor[0]), float(anchor[1])),
                  jaw_px=jaw_w, top=float(anchor[1] - top), chin=float(chin_y - anchor[1]))


def make_background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A two-colour linear gradient at a random angle, with smooth and fine noise."""
    c0, c1 = rng.integers(30, 230, 3).astype(np.float32), rng.integers(30, 230, 3).astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xs - width / 2) * math.cos(ang) / width + (ys - height / 2) * math.sin(ang) / height + 0.5
    t = np.clip(t, 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    # smooth blobs, mostly in brightness, then fine grain
    coarse = rng.normal(0, 1, (6, 8, 1)) + 0.3 * rng.normal(0, 1, (6, 8, 3))
    smooth = np.stack([np.asarray(Image.fromarray(coarse[..., c].astype(np.float32))
                                  .resize((width, height), Image.BICUBIC)) for c in range(3)], -1)
    img += smooth * rng.uniform(5, 14) + rng.normal(0, rng.uniform(1, 3), img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


@dataclass
class Motion:
    """Smooth head motion: each of dx, dy (pixels), angle (degrees) and log-scale is a sum of
    two sinusoids of random amplitude, frequency (0.08-0.45 Hz) and phase."""

    amp: np.ndarray   # (4, 2)
    freq: np.ndarray  # (4, 2)
    phase: np.ndarray  # (4, 2)

    @classmethod
    def draw(cls, rng: np.random.Generator, width: int, height: int) -> Motion:
        scale = np.array([[0.012 * width], [0.012 * height], [1.6], [0.015]])
        amp = rng.uniform(0.4, 1.0, (4, 2)) * scale
        return cls(amp=amp, freq=rng.uniform(0.08, 0.45, (4, 2)), phase=rng.uniform(0, 2 * math.pi, (4, 2)))

    def at(self, t: float) -> tuple[float, float, float, float]:
        v = (self.amp * np.sin(2 * math.pi * self.freq * t + self.phase)).sum(1)
        return float(v[0]), float(v[1]), float(v[2]), float(math.exp(v[3]))

    @property
    def max_shift(self) -> np.ndarray:
        return self.amp.sum(1)


@dataclass
class VideoLayout:
    width: int
    height: int
    background: Image.Image
    rgb: Image.Image           # sprite colour at twice the frame's scale
    alpha: Image.Image         # sprite opacity at twice the frame's scale
    anchor: tuple[float, float]  # face centre in the 2× sprite
    centre: tuple[float, float]  # frame position of the anchor without motion
    jaw_px: float              # jaw width in the frame, pixels
    motion: Motion
    gain: float                # brightness of the person in this video

    @classmethod
    def draw(cls, sprite: Sprite, rng: np.random.Generator) -> VideoLayout:
        width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
        background = make_background(width, height, rng)
        motion = Motion.draw(rng, width, height)
        jaw = max(MIN_FACE_PX, rng.uniform(0.36, 0.46) * height)
        s = jaw / sprite.jaw_px
        w, h = sprite.rgb.size
        gain = float(rng.uniform(0.9, 1.1))
        size2 = (max(1, round(2 * w * s)), max(1, round(2 * h * s)))
        rgb = sprite.rgb.resize(size2, Image.LANCZOS)
        if abs(gain - 1) > 1e-3:
            rgb = rgb.point([min(255, int(i * gain + 0.5)) for i in range(256)] * 3)
        alpha = sprite.alpha.resize(size2, Image.LANCZOS)
        anchor = (sprite.anchor[0] * size2[0] / w, sprite.anchor[1] * size2[1] / h)  # 2× units
        shift = motion.max_shift
        half = jaw * 0.62 + shift[0]
        top = sprite.top * s * 0.85 + shift[1]   # a little hair may leave the frame
        bottom = sprite.chin * s + shift[1]
        x_lo, x_hi = half, width - half
        y_lo, y_hi = top, height - bottom
        if rng.random() < 0.5:  # off-centre
            cx = rng.uniform(x_lo, x_hi) if x_hi > x_lo else width / 2
        else:
            cx = width / 2 + rng.uniform(-0.03, 0.03) * width
        cy = rng.uniform(y_lo, y_hi) if y_hi > y_lo else (y_lo + y_hi) / 2
        return cls(width=width, height=height, background=background, rgb=rgb, alpha=alpha, anchor=anchor,
                   centre=(float(cx), float(cy)), jaw_px=jaw, motion=motion, gain=gain)

    def face_centre(self, t: float) -> tuple[float, float]:
        """Frame position (pixels) of the face's centre at time t."""
        dx, dy, _, _ = self.motion.at(t)
        return self.centre[0] + dx, self.centre[1] + dy

    def draw_frame(self, t: float) -> np.ndarray:
        """The frame at time t. The sprite is held at twice the frame's scale and sampled
        nearest-neighbour into a patch of twice the size, then box-filtered down by 2: a
        2×2-supersampled warp, much faster than PIL's bilinear affine transform."""
        dx, dy, deg, scale = self.motion.at(t)
        cx, cy = self.centre[0] + dx, self.centre[1] + dy
        th = math.radians(deg)
        cos, sin = math.cos(th) * scale, math.sin(th) * scale
        ax, ay = self.anchor  # in the 2× sprite
        # forward map (frame pixels): x = c + R·s·(p/2 − a/2); bounding box of the corners
        w, h = self.rgb.size
        corners = (np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) - (ax, ay)) / 2
        fx = cx + cos * corners[:, 0] - sin * corners[:, 1]
        fy = cy + sin * corners[:, 0] + cos * corners[:, 1]
        x0, y0 = max(int(math.floor(fx.min())), 0), max(int(math.floor(fy.min())), 0)
        x1, y1 = min(int(math.ceil(fx.max())), self.width), min(int(math.ceil(fy.max())), self.height)
        frame = self.background.copy()
        if x1 > x0 and y1 > y0:
            # inverse map in 2× units: P = A + (1/s)·R(−θ)·(X + 2·(x0 − c)), X = 2× patch pixel
            inv = 1.0 / (scale * scale)
            a, b = cos * inv, sin * inv
            ox, oy = 2 * (x0 - cx), 2 * (y0 - cy)
            coeffs = (a, b, ax + a * ox + b * oy, -b, a, ay - b * ox + a * oy)
            size = (2 * (x1 - x0), 2 * (y1 - y0))
            rgb = self.rgb.transform(size, Image.AFFINE, coeffs, resample=Image.NEAREST).reduce(2)
            alpha = self.alpha.transform(size, Image.AFFINE, coeffs, resample=Image.NEAREST).reduce(2)
            frame.paste(rgb, (x0, y0), alpha)
        return np.asarray(frame)
