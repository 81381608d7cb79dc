"""The voice encoder of Speech2Face (Oh et al. 2019, Table 1): spectrogram B×2×T×257 → feature D.

Every conv is conv → ReLU → BatchNorm with 4×4 kernels; max pooling (2×1) shrinks only time;
convs 12 and 13 have stride 2; then average pooling over all of time, fc+ReLU, fc.

Padding (`VoiceEncoderConfig.padding`):
- ``same`` (default): stride-1 convs keep the size (zero-pad 1 before and 2 after, what
  PyTorch's ``padding="same"`` does for an even 4×4 kernel); the stride-2 convs pad 1 on each side, which gives the
  table's 18×128 and 9×64 exactly. Input to the first fc: 512 × 64 = 32,768.
- ``valid``: no padding anywhere (the open ports): 57 bins left, 512 × 57 = 29,184 into the fc.

Final activation (`final_activation`): ``relu`` for VGG-Face fc7 taken after its ReLU,
``none`` for dlib's 128-D descriptor (signed). Layer 13 gets ReLU+BN like every other conv
(before the time pooling).

This is the ``paper`` voice front-end (the default); ``ge2e`` is `s2f.models.ge2e`. Both can end
in a target scaler (`standardized`) and average 3 s windows at test time
(`test_window_seconds`): `s2f.models.frontend`.

    python -m s2f.models.voice_encoder          # prints every layer's output shape (paper config)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from s2f.models.frontend import TargetScaler, window_average

# (kind, channels, stride) in the paper's order; "pool" is maxpool 2×1 along time.
PAPER_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv", 64, 1), ("conv", 64, 1), ("conv", 128, 1), ("pool", 0, 0),
    ("conv", 128, 1), ("pool", 0, 0), ("conv", 128, 1), ("pool", 0, 0),
    ("conv", 256, 1), ("pool", 0, 0), ("conv", 512, 1), ("conv", 512, 2), ("conv", 512, 2),
)


@dataclass(frozen=True)
class VoiceEncoderConfig:
    """Every knob of the voice encoder."""

    channels: tuple[int, ...] = field(default=(64, 64, 128, 128, 128, 256, 512, 512, 512))
    seconds: float = 6.0
    padding: Literal["same", "valid"] = "same"
    fc_width: int = 4096
    out_dim: int = 4096
    final_activation: Literal["relu", "none"] = "relu"
    num_bins: int = 257
    standardized: bool = False                # a TargetScaler after fc2 (standardize_targets)
    test_window_seconds: float | None = None  # eval: average predictions over such windows

    @classmethod
    def paper(cls) -> VoiceEncoderConfig:
        """The table as written: 6 s, VGG-Face fc7 (4096-D, after ReLU)."""
        return cls()

    @classmethod
    def small(cls) -> VoiceEncoderConfig:
        """Channels /8, 3 s, fc 256, D=128 signed (dlib's face descriptor)."""
        return cls(channels=(8, 8, 16, 16, 16, 32, 64, 64, 64), seconds=3.0, fc_width=256,
                   out_dim=128, final_activation="none")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> VoiceEncoderConfig:
        base = {"paper": cls.paper, "small": cls.small}[name]()
        return replace(base, **overrides)  # type: ignore[arg-type]

    @property
    def num_frames(self) -> int:
        return (round(self.seconds * 16000) - 400) // 160 + 1

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def _conv_block(c_in: int, c_out: int, stride: int, padding: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    if padding == "same":
        if stride == 1:  # what padding="same" does for an even kernel, without its warning
            layers.append(nn.ZeroPad2d((1, 2, 1, 2)))
        pad = 0 if stride == 1 else 1
    elif padding == "valid":
        pad = 0
    else:
        raise ValueError(f"unknown padding {padding!r}")
    layers += [nn.Conv2d(c_in, c_out, 4, stride=stride, padding=pad),
               nn.ReLU(inplace=True), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers)


class VoiceEncoder(nn.Module):
    """Spectrogram B×2×T×F → predicted face feature B×D."""

    def __init__(self, cfg: VoiceEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        convs = [k for k in PAPER_LAYERS if k[0] == "conv"]
        if len(cfg.channels) != len(convs):
            raise ValueError(f"need {len(convs)} conv widths, got {len(cfg.channels)}")
        layers: list[nn.Module] = []
        c_in, i = 2, 0
        for kind, _, stride in PAPER_LAYERS:
            if kind == "pool":
                layers.append(nn.MaxPool2d((2, 1), stride=(2, 1)))
            else:
                layers.append(_conv_block(c_in, cfg.channels[i], stride, cfg.padding))
                c_in, i = cfg.channels[i], i + 1
        self.features = nn.Sequential(*layers)
        self.fc_in = c_in * self.freq_out(cfg)
        self.fc1 = nn.Linear(self.fc_in, cfg.fc_width)
        self.fc2 = nn.Linear(cfg.fc_width, cfg.out_dim)
        self.scaler = TargetScaler(cfg.out_dim) if cfg.standardized else None

    @staticmethod
    def freq_out(cfg: VoiceEncoderConfig) -> int:
        """Frequency bins left after the convs (64 with "same", 57 with "valid")."""
        f = cfg.num_bins
        for kind, _, stride in PAPER_LAYERS:
            if kind != "conv":
                continue
            if cfg.padding == "same":
                f = f if stride == 1 else (f + 2 - 4) // stride + 1
            else:
                f = (f - 4) // stride + 1
        return f

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if not self.training and self.cfg.test_window_seconds:
            frames = (round(self.cfg.test_window_seconds * 16000) - 400) // 160 + 1
            return window_average(self._predict, spec, frames, dim=2)
        return self._predict(spec)

    def _predict(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.features(spec)               # B×C×T'×F'
        x = x.mean(dim=2)                     # average pool over all time → B×C×F'
        x = torch.relu(self.fc1(x.flatten(1)))
        x = self.fc2(x)
        if self.scaler is not None:
            x = self.scaler(x)
        if self.cfg.final_activation == "relu":
            x = torch.relu(x)
        return x


def forward_shapes(model: VoiceEncoder, spec: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Every layer's output shape (C, T, F) for the table, then the pooled and fc shapes.

    Works on the meta device (no compute): `forward_shapes(model.to("meta"), torch.empty(...,
    device="meta"))`."""
    out: list[tuple[str, tuple[int, ...]]] = [("input", tuple(spec.shape[1:]))]
    x = spec
    for layer in model.features:
        x = layer(x)
        name = "maxpool" if isinstance(layer, nn.MaxPool2d) else "conv"
        out.append((name, tuple(x.shape[1:])))
    x = x.mean(dim=2, keepdim=True)
    out.append(("avgpool", tuple(x.shape[1:])))
    x = torch.relu(model.fc1(x.flatten(1)))
    out.append(("fc_relu", tuple(x.shape[1:])))
    out.append(("fc", tuple(model.fc2(x).shape[1:])))
    return out


def macs_per_sample(cfg: VoiceEncoderConfig) -> int:
    """Multiply-accumulates of one forward pass, counted analytically (convs and fcs)."""
    t, f, c_in, macs, i = cfg.num_frames, cfg.num_bins, 2, 0, 0
    for kind, _, stride in PAPER_LAYERS:
        if kind == "pool":
            t //= 2
            continue
        if cfg.padding == "same":
            if stride != 1:
                t, f = (t + 2 - 4) // stride + 1, (f + 2 - 4) // stride + 1
        else:
            t, f = (t - 4) // stride + 1, (f - 4) // stride + 1
        c_out = cfg.channels[i]
        macs += t * f * c_out * c_in * 16
        c_in, i = c_out, i + 1
    macs += c_in * f * cfg.fc_width + cfg.fc_width * cfg.out_dim
    return macs


def main() -> int:
    cfg = VoiceEncoderConfig.paper()
    with torch.device("meta"):
        model = VoiceEncoder(cfg)
        spec = torch.empty(1, 2, cfg.num_frames, cfg.num_bins)
    for name, shape in forward_shapes(model, spec):
        print(f"{name:8s} {shape}")
    print(f"fc input {model.fc_in}; {macs_per_sample(cfg) / 1e9:.2f} GMAC per sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
