"""Shared by the training tests: a TrainConfig small enough for one CPU step."""

from __future__ import annotations

from s2f.train.config import TrainConfig


def tiny(**over: object) -> TrainConfig:
    """A tiny paper-CNN/ge2e config (1 s windows, narrow layers, 1 step, no tracking)."""
    base: dict[str, object] = dict(
        preset="small", seconds=1.0, channels=[4] * 6 + [8] * 3, fc_width=32, batch_size=4,
        steps=1, checkpoint_every=100, val_every=1000, log_every=1, dev_fraction=0.2,
        decoder="random", track=False, register_model=False, val_seconds=None, ema_decay=0.0,
        ge2e_head_width=16)
    base.update(over)
    return TrainConfig(**base)  # type: ignore[arg-type]
