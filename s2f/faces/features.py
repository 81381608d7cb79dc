"""Face encoders, by name: the face feature v_f of the paper.

Every encoder takes the aligned 224x224 RGB crops of `s2f.faces.align` (uint8, (N, 224, 224, 3))
and returns float32 features (N, D):

- `dlib-resnet` (default, D=128): dlib's ResNet face descriptor. The 224 crop uses dlib's own
  chip template and padding (0.25), so resized to 150x150 it *is* the chip dlib would cut itself
  (`compute_face_descriptor(frame, shape)` agrees within a small distance; tested). No
  identity-classification layer: the distillation term of the loss is off with this encoder.
- `vggface` (D=4096): VGG16 as in the paper (Parkhi et al. 2015): 13 convs, fc6/fc7 4096,
  fc8 2622 identities. The feature is fc7 **after** its ReLU (`VGGFACE_FEATURE`); `VggFace.fc8`
  is the fixed classification layer the distillation loss needs. Input: RGB in 0..255 minus the
  VGG-Face mean image colour (129.1863, 104.7624, 93.5940). Weights: a torch state_dict of the
  converted Oxford VGG-Face weights (keys `conv1_1.weight` ... `fc8.bias`, RGB input), passed as
  `--vggface-weights FILE`; nothing is downloaded.

    from s2f.faces.features import get_encoder
    encoder = get_encoder("dlib-resnet")
    feats = encoder.encode(crops)        # (N, 128) float32

The clip's feature is computed from one representative face (see `s2f.preprocess.clips`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from s2f.faces.dlib_models import RESNET, model_path

VGGFACE_MEAN_RGB = (129.1863, 104.7624, 93.5940)
VGGFACE_FEATURE = "fc7-after-relu"
VGGFACE_IDENTITIES = 2622
DLIB_CHIP_SIZE = 150


class FaceEncoder(Protocol):
    name: str
    dim: int

    def encode(self, crops: np.ndarray) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...


class VggFaceWeightsMissing(ValueError):
    """--encoder vggface without a usable weights file."""


# -- dlib ------------------------------------------------------------------------------------------

class DlibResnetEncoder:
    """dlib's 128-D ResNet descriptor of the aligned crop (one model per thread: not thread-safe)."""

    name = "dlib-resnet"
    dim = 128

    def __init__(self) -> None:
        import dlib

        self._model = dlib.face_recognition_model_v1(str(model_path(RESNET)))

    def encode(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        chips = resize_crops(crops, DLIB_CHIP_SIZE)
        vectors = self._model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {"encoder": self.name, "dim": self.dim, "model": RESNET,
                "input": "224 aligned crop resized to dlib's 150x150 chip (padding 0.25)"}


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, size, size, 3) uint8, antialiased bilinear."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# -- VGG-Face ----------------------------------------------------------------------------------------

_VGG_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class VggFace(nn.Module):
    """VGG16 / VGG-Face. `features(x)` is fc7 after ReLU (4096); `fc8` maps it to 2622 logits."""

    def __init__(self, identities: int = VGGFACE_IDENTITIES) -> None:
        super().__init__()
        self.conv_names: list[str] = []
        channels = 3
        for block, (width, depth) in enumerate(_VGG_BLOCKS, start=1):
            for layer in range(1, depth + 1):
                name = f"conv{block}_{layer}"
                self.add_module(name, nn.Conv2d(channels, width, 3, padding=1))
                self.conv_names.append(name)
                channels = width
        self.fc6 = nn.Linear(512 * 7 * 7, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, identities)
        self.register_buffer("mean_rgb", torch.tensor(VGGFACE_MEAN_RGB).view(1, 3, 1, 1),
                             persistent=False)

    def preprocess(self, crops_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 224, 224, 3) RGB -> float (N, 3, 224, 224) minus the VGG-Face mean."""
        return crops_uint8_nhwc.permute(0, 3, 1, 2).float() - self.mean_rgb

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-subtracted (N, 3, 224, 224) -> fc7 after ReLU (N, 4096). Dropout is off (eval)."""
        convs = iter(self.conv_names)
        for _, depth in _VGG_BLOCKS:
            for _ in range(depth):
                x = torch.relu(getattr(self, next(convs))(x))
            x = nn.functional.max_pool2d(x, 2, 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc6(x))
        return torch.relu(self.fc7(x))

    def classify(self, fc7: torch.Tensor) -> torch.Tensor:
        """fc7 features -> identity logits (fc8): the f_VGG of the distillation loss."""
        return self.fc8(fc7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def load_vggface(weights: Path | str | None, device: str | torch.device = "cpu") -> VggFace:
    """VggFace with the user's converted weights, in eval mode; a clear error without them."""
    if weights is None:
        raise VggFaceWeightsMissing(
            "the vggface encoder needs the VGG-Face weights, which are not shipped or downloaded: "
            "get the Oxford VGG-Face model (https://www.robots.ox.ac.uk/~vgg/software/vgg_face/), "
            "convert it to a torch state_dict with keys conv1_1.weight ... fc8.bias (RGB input, "
            "0-255 minus the mean colour), save it with torch.save, and pass it as "
            "`s2f preprocess --encoder vggface --vggface-weights FILE.pt`.")
    path = Path(weights)
    if not path.is_file():
        raise VggFaceWeightsMissing(f"VGG-Face weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = VggFace()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise VggFaceWeightsMissing(f"{path} is not a VGG-Face state_dict for this model: {exc}"
                                    ) from exc
    return model.eval().to(device)


class VggFaceEncoder:
    name = "vggface"
    dim = 4096

    def __init__(self, weights: Path | str | None, device: str | torch.device | None = None,
                 batch_size: int = 16) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.weights = Path(weights) if weights else None
        self.model = load_vggface(weights, self.device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, crops: np.ndarray) -> np.ndarray:
        out = [np.zeros((0, self.dim), np.float32)]
        for at in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(crops[at:at + self.batch_size]))
            x = self.model.preprocess(batch.to(self.device))
            out.append(self.model.features(x).float().cpu().numpy())
        return np.concatenate(out)

    def info(self) -> dict[str, Any]:
        return {"encoder": self.name, "dim": self.dim, "feature": VGGFACE_FEATURE,
                "mean_rgb": list(VGGFACE_MEAN_RGB), "weights": str(self.weights)}


# -- registry ----------------------------------------------------------------------------------------

ENCODERS: dict[str, Callable[..., FaceEncoder]] = {
    "dlib-resnet": lambda **_: DlibResnetEncoder(),
    "vggface": lambda vggface_weights=None, device=None, **_: VggFaceEncoder(vggface_weights,
                                                                             device),
}
ENCODER_DIMS = {"dlib-resnet": DlibResnetEncoder.dim, "vggface": VggFaceEncoder.dim}

_local = threading.local()


def get_encoder(name: str, *, vggface_weights: Path | str | None = None,
                device: str | None = None) -> FaceEncoder:
    """A new encoder by registry name."""
    if name not in ENCODERS:
        raise ValueError(f"unknown face encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name](vggface_weights=vggface_weights, device=device)


def encoder_for_this_thread(name: str, *, vggface_weights: Path | str | None = None,
                            device: str | None = None) -> FaceEncoder:
    """One encoder per thread and configuration (dlib models are not thread-safe)."""
    cache: dict[tuple[str, str, str], FaceEncoder] = getattr(_local, "encoders", None) or {}
    _local.encoders = cache
    key = (name, str(vggface_weights), str(device))
    if key not in cache:
        cache[key] = get_encoder(name, vggface_weights=vggface_weights, device=device)
    return cache[key]
