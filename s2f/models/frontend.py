"""What every voice front-end shares: the output's target scaling and test-time window averaging.

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

    python -m s2f.models.frontend     # prints the window starts of a 6 s clip with 3 s windows
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

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
