"""What every voice front-end shares: target scaling, test-time window averaging, the F0 input.

A voice front-end maps speech to a predicted face feature B×D. Two exist: ``paper`` (the
paper's CNN over the complex spectrogram, `s2f.models.voice_encoder.VoiceEncoder`) and
``ge2e`` (a pretrained GE2E speaker encoder and a trained head, `s2f.models.ge2e`). Both end in
the same two optional pieces, kept here so that they behave the same:

- `TargetScaler` (``standardize_targets``): the network predicts per-dimension z-scores and the
  scaler, fitted on the training features, maps them back (``z·std + mean``). The statistics are
  buffers of the module, so they travel with its weights (safetensors) and the inversion
  happens inside ``forward``: every caller (validation, evaluation, predict, serving) gets
  features in their own units, and the loss is the paper's on those features.
- `window_average` (``test_window_average``): in eval mode, an input longer than the window is
  cut into windows (hop: half a window, the last one flush with the end) whose predictions are
  averaged. Training sees one window per clip; this only changes inference.
- `F0Input` (``f0_input``, ge2e only): the input's median F0 (`s2f.models.pitch.median_f0`, the
  F0 ridge's measurement) as one more input of the head: log F0 standardised with the training
  clips' statistics (buffers, saved with the model); an unvoiced input is 0, the training mean.
  The model measures it on its own input wave, so training (on the augmented wave), evaluation,
  predict and serving all compute it the same way, with no second input to pass.

    python -m s2f.models.frontend     # prints the window starts of a 6 s clip with 3 s windows
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from s2f.models.pitch import median_f0

FRONTENDS = ("paper", "ge2e")
TEST_WINDOW_SECONDS = 3.0  # the window `test_window_average` averages over


class TargetScaler(nn.Module):
    """``z → z·std + mean`` per dimension; identity until `fit`. Buffers, so saved with the
    model."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, features: torch.Tensor, min_std: float = 1e-6) -> None:
        """Mean and standard deviation of the training features N×D (a constant dimension
        keeps std `min_std`, so its z-score is finite)."""
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0, unbiased=False).clamp_min(min_std))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z.dtype) + self.mean.to(z.dtype)


class F0Input(nn.Module):
    """Waves B×N (16 kHz) → their standardised log median F0, B×1 (no gradient: a measurement).
    Identity statistics (mean 0, std 1 of log Hz) until `fit`."""

    def __init__(self, sample_rate: int = 16000) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.register_buffer("log_mean", torch.zeros(()))
        self.register_buffer("log_std", torch.ones(()))

    @torch.no_grad()
    def fit(self, f0_hz: np.ndarray, min_std: float = 1e-3) -> None:
        """Mean and standard deviation of log F0 over the voiced training clips (`f0_hz`, NaN or
        0 where unvoiced); at least two must be voiced."""
        f0 = np.asarray(f0_hz, np.float64)
        log_f0 = np.log(f0[np.isfinite(f0) & (f0 > 0)])
        if log_f0.size < 2:
            raise ValueError(f"f0_input: {log_f0.size} of {f0.size} training clips are voiced; "
                             "the F0 statistics need at least two")
        self.log_mean.fill_(float(log_f0.mean()))
        self.log_std.fill_(max(float(log_f0.std()), min_std))

    @torch.no_grad()
    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        host = waves.detach().float().cpu().numpy()
        f0 = np.array([median_f0(w, self.sample_rate) for w in host])
        voiced = np.isfinite(f0) & (f0 > 0)
        log_f0 = torch.from_numpy(np.log(np.where(voiced, f0, 1.0))).float().to(waves.device)
        z = (log_f0 - self.log_mean.float()) / self.log_std.float()
        return torch.where(torch.from_numpy(voiced).to(waves.device), z, 0.0)[:, None]


def window_starts(length: int, window: int) -> list[int]:
    """Starts of windows of `window` samples (or frames) over `length`, hop half a window, the
    last flush with the end; one window (start 0) when the input is not longer."""
    if length <= window:
        return [0]
    hop = max(1, window // 2)
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def window_average(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, window: int,
                   dim: int) -> torch.Tensor:
    """Mean of `fn` over the windows of `x` along `dim` (all windows in one batch)."""
    length = x.shape[dim]
    starts = window_starts(length, window)
    if len(starts) == 1:
        return fn(x)
    parts = [x.narrow(dim, s, window) for s in starts]
    out = fn(torch.cat(parts, dim=0))          # (W·B)×D
    return out.view(len(starts), x.shape[0], -1).mean(dim=0)


if __name__ == "__main__":
    print(window_starts(6 * 16000, round(TEST_WINDOW_SECONDS * 16000)))
