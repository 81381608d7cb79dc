"""Atomic training checkpoints that resume bit-for-bit.

A checkpoint holds the model, optimiser and scheduler state, torch's RNG states (CPU and CUDA),
the step and the data position (epoch, next batch), and the config as JSON. It is written to a
temporary file in the same directory, fsynced and renamed over `last.pt`, so a crash never
leaves half a checkpoint. Training writes them from a background thread (`CheckpointWriter`: a
host copy, then the write; one in flight; its errors raised in the loop). Everything in it is a tensor or plain Python, so it loads with
`torch.load(weights_only=True)`. `RunResult` is what a training call returns
(`s2f.train.runner.run` builds it); `checkpoint_dir` is where each model's checkpoints live.

One folder per run identity (`RunIdentity`: seed, shuffle flag, config hash, input fingerprint
and the frozen parts' weights): `run_checkpoint_dir` is
`<data dir>/checkpoints/<model>/<identity key>`, so seeds, the shuffled control and runs of
another config never share a `last.pt`. A run whose config changed (steps included) is another
run: another folder, trained from step 0 even with `resume`. The checkpoint carries its identity
too, and resuming from one whose identity differs (an explicit `ckpt_dir`, a folder copied by
hand, a checkpoint written before identities) raises `ResumeMismatch`, naming what differs.

    python -m s2f.train.checkpoint PATH      # prints step, epoch, batch of a checkpoint
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from pydantic import BaseModel
from torch import nn

from storage.io import atomic_path
from storage.layout import DataLayout

LAST = "last.pt"
LATEST = "LATEST"  # in a model's folder: the run folder last written

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


# Config fields that never change the weights a run trains: bookkeeping (tracking, names,
# registration, log and checkpoint cadence), where batches are decoded, and the device name
# ("auto" and "cpu" are one device; a checkpoint moves between devices, as between 1 and N
# processes). Every other field is part of the run's identity.
NOT_IDENTITY = frozenset({"track", "run_name", "register_model", "log_every", "checkpoint_every",
                          "loader_workers", "loader_prefetch", "device"})


class ResumeMismatch(ValueError):
    """`resume` found a checkpoint of another run (another seed, shuffle flag, config, inputs or
    frozen decoder): continuing it would train, select and register someone else's weights."""


@dataclass(frozen=True)
class RunIdentity:
    """What makes two training calls the same run: resume continues only its own identity."""

    seed: int
    shuffle_voices: bool
    config_hash: str            # `config_hash`: every other field that changes the weights
    input_fingerprint: str      # `s2f.train.tracking.input_fingerprint` of the shards read
    frozen: str = ""            # sha1 of the frozen parts (the loss's f_dec, the classifier)

    def key(self) -> str:
        """The folder name: `seed0-true-cfg<12 hex>-in<12 hex>[-frozen<8 hex>]`."""
        label = "shuffled" if self.shuffle_voices else "true"
        frozen = f"-frozen{self.frozen[:8]}" if self.frozen else ""
        return (f"seed{self.seed}-{label}-cfg{self.config_hash[:12]}-"
                f"in{self.input_fingerprint[:12]}{frozen}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# fields added after runs were checkpointed: at their default they are left out of the
# identity, so a run from before them keeps its folder (and resumes) after the upgrade
OMITTED_AT_DEFAULT = frozenset({"augment_speed", "augment_gain_db", "augment_snr_db",
                                "f0_input"})


def identity_config(cfg: BaseModel) -> dict[str, Any]:
    """The config fields that change the weights (all but `NOT_IDENTITY` and the config
    class's own `NOT_IDENTITY`, and those of
    `OMITTED_AT_DEFAULT` left at their default)."""
    fields = type(cfg).model_fields
    skip = NOT_IDENTITY | getattr(type(cfg), "NOT_IDENTITY", frozenset())  # + the config's own
    return {k: v for k, v in cfg.model_dump().items() if k not in skip
            and not (k in OMITTED_AT_DEFAULT and v == fields[k].default)}


def config_hash(cfg: BaseModel) -> str:
    """sha256 (16 hex) of `identity_config` without seed and shuffle flag (named on their
    own): a voice run and its shuffled control of one seed share it."""
    body = {k: v for k, v in identity_config(cfg).items()
            if k not in ("seed", "shuffle_voices")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def run_identity(cfg: BaseModel, fingerprint: str, frozen: str = "") -> RunIdentity:
    return RunIdentity(seed=int(getattr(cfg, "seed", 0)),
                       shuffle_voices=bool(getattr(cfg, "shuffle_voices", False)),
                       config_hash=config_hash(cfg), input_fingerprint=fingerprint,
                       frozen=frozen)


def run_checkpoint_dir(layout: DataLayout, model: str, identity: RunIdentity) -> Path:
    """`<data dir>/checkpoints/<model>/<identity key>`: one folder per run."""
    return checkpoint_dir(layout, model) / identity.key()


def check_identity(ck: dict[str, Any], identity: RunIdentity, cfg: BaseModel,
                   where: Path) -> None:
    """Raise `ResumeMismatch` unless checkpoint `ck` (read from `where`) is this run's; the
    message names the identity's parts and the config fields that differ."""
    stored = ck.get("identity")
    if stored == identity.as_dict():
        return
    if stored is None:
        raise ResumeMismatch(f"{where} was written before checkpoints carried their run's "
                             "identity, so it cannot be told apart from another run's: train "
                             "without resume (or remove it) to start this run from step 0")
    diff = [f"{k} {stored.get(k)!r} there, {v!r} here"
            for k, v in identity.as_dict().items() if stored.get(k) != v and k != "config_hash"]
    if stored.get("config_hash") != identity.config_hash:
        before = json.loads(ck.get("config", "{}"))
        diff += [f"{k} {before.get(k)!r} there, {v!r} here"
                 for k, v in identity_config(cfg).items()
                 if k not in ("seed", "shuffle_voices") and before.get(k) != v] or ["config"]
    raise ResumeMismatch(f"{where} is another run's checkpoint ({'; '.join(diff)}): resume "
                         "continues only the run that wrote it. Train without resume, or "
                         "resume from this run's own folder (s2f.train.checkpoint."
                         "run_checkpoint_dir)")


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
    """Write `state` as `directory/last.pt`; a run folder under a model's folder
    (`run_checkpoint_dir`) is also named in the model folder's `LATEST` (the run last
    written: what `load_checkpoint(model folder)` reads, e.g. the face decoder the voice
    encoder trains against)."""
    directory = Path(directory)
    path = save_atomic(state, directory / LAST)
    if "identity" in state and directory.name == RunIdentity(**state["identity"]).key():
        pointer = directory.parent / LATEST
        if not pointer.is_file() or pointer.read_text().strip() != directory.name:
            with atomic_path(pointer) as tmp:
                tmp.write_text(directory.name + "\n")
    return path


def on_host(obj: Any) -> Any:
    """`obj` (a state dict: nested dicts, lists, tuples, tensors, plain values) with every
    tensor copied to host memory: the copy a background write may take its time over while
    training changes the weights in place."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: on_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_host(v) for v in obj)
    return obj


class CheckpointWriteError(RuntimeError):
    """A checkpoint written in the background failed; raised in the training loop."""


class CheckpointWriter:
    """Writes checkpoints from a background thread, so the loop does not wait for a 2 GB
    torch.save + fsync. `submit` copies the state to host memory (in the caller's thread:
    the next step may change the weights), then one thread writes it with `save_checkpoint`
    (temporary file, fsync, rename: a crash leaves the previous `last.pt`). At most one
    write is in flight: `submit` first waits for the previous one. A failed write raises
    `CheckpointWriteError` (its cause chained) at the next `submit` or `join`, i.e. in the
    loop; the runner joins before the final validation's result is used, before
    registration and when a run ends, and `resume` joins first."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._failure: tuple[Path, BaseException] | None = None

    def submit(self, directory: Path, state: dict[str, Any]) -> Path:
        """Start writing `state` as `directory/last.pt`; returns that path."""
        self.join()
        host_state = on_host(state)
        self._thread = threading.Thread(target=self._write, args=(Path(directory), host_state),
                                        name="checkpoint-writer", daemon=True)
        self._thread.start()
        return Path(directory) / LAST

    def _write(self, directory: Path, state: dict[str, Any]) -> None:
        try:
            save_checkpoint(directory, state)
        except BaseException as exc:  # handed to the loop's thread by join()
            self._failure = (directory, exc)

    def join(self) -> None:
        """Wait for the write in flight (if any); raise `CheckpointWriteError` if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            (directory, exc), self._failure = self._failure, None
            raise CheckpointWriteError(f"writing the checkpoint {directory / LAST} failed: "
                                       f"{exc}") from exc


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True: a file, a directory holding `last.pt`, or a
    model's folder whose `LATEST` names the run folder last written."""
    path = Path(path)
    if path.is_dir() and not (path / LAST).is_file() and (path / LATEST).is_file():
        path = path / (path / LATEST).read_text().strip()
    if path.is_dir():
        path = path / LAST
    return torch.load(path, map_location=map_location, weights_only=True)


def latest(directory: Path) -> Path | None:
    p = Path(directory) / LAST
    return p if p.is_file() else None


if __name__ == "__main__":
    ck = load_checkpoint(Path(sys.argv[1]))
    print({k: ck[k] for k in ("step", "epoch", "batch") if k in ck})
