"""A face decoder after Cole et al. (CVPR 2017): face feature → frontal face image.

    feature (D) → first layer fc (D → first_dim, 1000 in the paper; `first_layer`, used by the
    Speech2Face loss) → ReLU → { MLP → 68 landmarks ; fc + CNN → texture in the canonical frame }
    image = thin-plate-spline warp of the texture from the mean-shape landmarks to the predicted ones

Coordinates: landmarks are in kornia's normalised [-1, 1] frame of the crop (``align_corners=
False``: x_norm = (2x+1)/W − 1 for pixel x). `pixels_to_normalized` converts. The warp uses
`kornia.geometry.transform.get_tps_transform` fitted destination → source (warp_image_tps maps
output pixels to input pixels) on a 28-point subset of the landmarks (`WARP_POINTS`) plus 8 fixed
border anchors, so the spline stays tame. In training the image loss does not move the
landmarks (`detach_warp`): through the spline its gradient folds them; they learn from their
own loss.

The texture is the face warped to the mean shape (`to_mean_shape` makes the training targets
from crops and their landmarks); the mean shape is a buffer set from the training data.

    python -m s2f.models.face_decoder       # builds the small decoder and prints its outputs' shapes
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from kornia.geometry.transform import get_tps_transform, warp_image_tps
from torch import nn

NUM_LANDMARKS = 68
# Control points of the face warp: a spread-out subset of the 68 (jaw every other point, brow
# ends and middles, nose, eye corners, mouth corners/midlines). All 68 put several points a
# pixel or two apart (eyelids, lips), where small landmark errors fold the spline.
WARP_POINTS = [0, 2, 4, 6, 8, 10, 12, 14, 16, 17, 19, 21, 22, 24, 26, 27, 30, 31, 33, 35,
               36, 39, 42, 45, 48, 51, 54, 57]
_ANCHORS = torch.tensor([[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0], [1.0, 0.0],
                         [1.0, 1.0], [0.0, 1.0], [-1.0, 1.0], [-1.0, 0.0]])


@dataclass(frozen=True)
class FaceDecoderConfig:
    """Every knob of the face decoder."""

    in_dim: int = 4096
    first_dim: int = 1000
    landmark_hidden: int = 800
    image_size: int = 224
    base_channels: int = 256

    @classmethod
    def paper(cls) -> FaceDecoderConfig:
        return cls()

    @classmethod
    def small(cls, in_dim: int = 128) -> FaceDecoderConfig:
        return cls(in_dim=in_dim, first_dim=256, landmark_hidden=256, image_size=64,
                   base_channels=64)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def pixels_to_normalized(points: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel (x, y) in a size×size image → [-1, 1] (align_corners=False)."""
    return (2.0 * points + 1.0) / size - 1.0


def default_mean_shape() -> torch.Tensor:
    """A placeholder 68-point layout (jaw arc, brows, nose, eyes, mouth) in [-1, 1], used until
    `set_mean_shape` installs the training data's mean."""
    pts: list[tuple[float, float]] = []
    for i in range(17):  # jaw
        a = math.pi * (i / 16)
        pts.append((-0.7 * math.cos(a), -0.1 + 0.75 * math.sin(a)))
    for side in (-1, 1):  # brows
        for i in range(5):
            pts.append((side * (0.15 + 0.1 * i) if side > 0 else -0.55 + 0.1 * i, -0.45))
    for i in range(4):  # nose bridge
        pts.append((0.0, -0.35 + 0.1 * i))
    for i in range(5):  # nostrils
        pts.append((-0.16 + 0.08 * i, 0.12))
    for cx in (-0.3, 0.3):  # eyes
        for i in range(6):
            a = 2 * math.pi * i / 6
            pts.append((cx + 0.1 * math.cos(a + math.pi), -0.27 + 0.04 * math.sin(a)))
    for i in range(12):  # outer lip
        a = 2 * math.pi * i / 12
        pts.append((0.25 * math.cos(a + math.pi), 0.38 + 0.1 * math.sin(a)))
    for i in range(8):  # inner lip
        a = 2 * math.pi * i / 8
        pts.append((0.15 * math.cos(a + math.pi), 0.38 + 0.04 * math.sin(a)))
    return torch.tensor(pts, dtype=torch.float32)


def tps_warp(image: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Warp `image` so that its content at normalised points `src` (B×K×2) lands at `dst`.

    Eight border anchors are added to both sets; the spline is fitted dst → src because
    `warp_image_tps` maps each output coordinate to the input coordinate it samples."""
    b = image.shape[0]
    anchors = _ANCHORS.to(image.device, image.dtype).expand(b, -1, -1)
    src = torch.cat([src.to(image.dtype).expand(b, -1, -1), anchors], dim=1)
    dst = torch.cat([dst.to(image.dtype).expand(b, -1, -1), anchors], dim=1)
    kernel_w, affine_w = get_tps_transform(dst, src)
    return warp_image_tps(image, src, kernel_w, affine_w, align_corners=False,
                          padding_mode="border")


def warp_face(image: torch.Tensor, src68: torch.Tensor, dst68: torch.Tensor) -> torch.Tensor:
    """`tps_warp` on the `WARP_POINTS` subset of 68-point landmarks (B×68×2 or 1×68×2)."""
    return tps_warp(image, src68[:, WARP_POINTS], dst68[:, WARP_POINTS])


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class FaceDecoder(nn.Module):
    """Face feature B×D → (texture B×3×S×S in [0, 1], landmarks B×68×2 in [-1, 1], image)."""

    def __init__(self, cfg: FaceDecoderConfig, mean_shape: torch.Tensor | None = None) -> None:
        super().__init__()
        if cfg.image_size % 16:
            raise ValueError("image_size must be a multiple of 16")
        self.cfg = cfg
        self.fc_first = nn.Linear(cfg.in_dim, cfg.first_dim)
        self.landmark_mlp = nn.Sequential(
            nn.Linear(cfg.first_dim, cfg.landmark_hidden), nn.ReLU(inplace=True),
            nn.Linear(cfg.landmark_hidden, NUM_LANDMARKS * 2))
        nn.init.zeros_(self.landmark_mlp[-1].weight)
        nn.init.zeros_(self.landmark_mlp[-1].bias)
        self.s0 = cfg.image_size // 16
        c = cfg.base_channels
        self.fc_texture = nn.Linear(cfg.first_dim, c * self.s0 * self.s0)
        self.texture_cnn = nn.Sequential(
            _up_block(c, c), _up_block(c, c // 2), _up_block(c // 2, c // 4),
            _up_block(c // 4, c // 4), nn.Conv2d(c // 4, 3, 3, padding=1), nn.Sigmoid())
        shape = default_mean_shape() if mean_shape is None else mean_shape.float()
        self.register_buffer("mean_shape", shape.reshape(NUM_LANDMARKS, 2).clone())

    def set_mean_shape(self, mean_shape: torch.Tensor) -> None:
        self.mean_shape.copy_(mean_shape.reshape(NUM_LANDMARKS, 2))

    def first_layer(self, features: torch.Tensor) -> torch.Tensor:
        """The decoder's first fc layer (before its ReLU): f_dec of the Speech2Face loss."""
        return self.fc_first(features)

    def forward(self, features: torch.Tensor, warp: bool = True,
                detach_warp: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`detach_warp`: the image is warped to detached landmarks, so an image loss trains
        the texture only (landmarks learn from their own loss; training does this)."""
        h = torch.relu(self.first_layer(features))
        landmarks = self.mean_shape + self.landmark_mlp(h).view(-1, NUM_LANDMARKS, 2)
        x = torch.relu(self.fc_texture(h)).view(-1, self.cfg.base_channels, self.s0, self.s0)
        texture = self.texture_cnn(x)
        image = None
        if warp:
            target = landmarks.detach() if detach_warp else landmarks
            image = warp_face(texture, self.mean_shape.unsqueeze(0), target)
        return texture, landmarks, image


def to_mean_shape(crops: torch.Tensor, landmarks: torch.Tensor, mean_shape: torch.Tensor
                  ) -> torch.Tensor:
    """Texture targets: crops (B×3×S×S) warped so that their landmarks move to the mean shape."""
    return warp_face(crops, landmarks, mean_shape.unsqueeze(0))


def main() -> int:
    cfg = FaceDecoderConfig.small()
    model = FaceDecoder(cfg).eval()
    texture, landmarks, image = model(torch.randn(2, cfg.in_dim))
    assert image is not None
    print(tuple(texture.shape), tuple(landmarks.shape), tuple(image.shape))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
