"""Atomic training checkpoints that resume bit-for-bit.

A checkpoint holds the model, optimiser and scheduler state, torch's RNG states (CPU and CUDA),
the step and the data position (epoch, next batch), and the config as JSON. It is written to a
temporary file in the same directory, fsynced and renamed over `last.pt`, so a crash never
leaves half a checkpoint. Everything in it is a tensor or plain Python, so it loads with
`torch.load(weights_only=True)`. `RunResult` is what a training call returns
(`s2f.train.runner.run` builds it); `checkpoint_dir` is where each model's checkpoints live.

    python -m s2f.train.checkpoint PATH      # prints step, epoch, batch of a checkpoint
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from storage.io import atomic_path
from storage.layout import DataLayout

LAST = "last.pt"

M = TypeVar("M", bound=nn.Module)


@dataclass
class RunResult(Generic[M]):
    """The outcome of one training call (`train_voice_encoder`, `train_face_decoder`)."""

    step: int
    train_loss: float                        # mean loss of the last `log_every` steps
    val: dict[str, float]
    checkpoint: Path
    model: M
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    run_id: str | None = None
    model_version: str | None = None
    seconds: float = 0.0
    best_step: int = 0                       # the step whose weights were kept (select)


def checkpoint_dir(layout: DataLayout, model: str) -> Path:
    """`<data dir>/checkpoints/<model>` ("voice_encoder", "face_decoder")."""
    return layout.root / "checkpoints" / model


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
    return path


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    """Write `state` as `directory/last.pt`."""
    return save_atomic(state, Path(directory) / LAST)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (a file, or a directory holding `last.pt`) with weights_only=True."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    return torch.load(path, map_location=map_location, weights_only=True)


def latest(directory: Path) -> Path | None:
    p = Path(directory) / LAST
    return p if p.is_file() else None


if __name__ == "__main__":
    ck = load_checkpoint(Path(sys.argv[1]))
    print({k: ck[k] for k in ("step", "epoch", "batch") if k in ck})
