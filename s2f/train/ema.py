"""An exponential moving average of a model's weights (Polyak averaging), updated in place.

`ema_decay` > 0 in `TrainConfig`: the average, not the raw weights, is what the voice encoder's
run validates, selects and registers (with batch 8 and lr 1e-3 the raw weights are noisy from
step to step; the average is not). BatchNorm's running statistics are averaged too; integer
buffers (its batch counter) are copied.

    ema = Ema(model, decay=0.99)
    ema.update(step)          # after every optimiser step
"""

from __future__ import annotations

import copy
from typing import Any, Generic, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class Ema(Generic[M]):
    """A frozen copy of `model` whose tensors move towards the model's after every step."""

    def __init__(self, model: M, decay: float) -> None:
        self.decay = decay
        self.module: M = copy.deepcopy(model).requires_grad_(False)
        # (ema, weights) tensor lists for the fused update; load_state_dict copies in place,
        # so they stay the live tensors
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(),
                         strict=True))
        self._float = ([e for e, _ in pairs if e.dtype.is_floating_point],
                       [w for e, w in pairs if e.dtype.is_floating_point])
        self._int = ([e for e, _ in pairs if not e.dtype.is_floating_point],
                     [w for e, w in pairs if not e.dtype.is_floating_point])

    @torch.no_grad()
    def update(self, step: int) -> None:
        """ema ← d·ema + (1−d)·weights with d = min(decay, (1+t)/(10+t)) at step t (as TF's
        ExponentialMovingAverage with num_updates): the random initial weights fade fast, and
        the average spans roughly the last t/9 steps until that reaches 1/(1−decay) (from
        step 890 at 0.99: so in the 800-step demo run the knob's value does not bind yet)."""
        d = min(self.decay, (1 + step) / (10 + step))
        # e.lerp_(w, 1 − d) for every tensor at once (on CPU the same per-tensor kernel)
        torch._foreach_lerp_(self._float[0], self._float[1], 1 - d)
        if self._int[0]:
            torch._foreach_copy_(self._int[0], self._int[1])

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
