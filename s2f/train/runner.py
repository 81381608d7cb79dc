"""One training loop for every model: steps, loss window, validation, selection, checkpoints,
MLflow tracking and registration. Each model supplies a `Trainer` (its step, its validation
and its state): `s2f.train.voice.VoiceTrainer`, `s2f.train.decoder.DecoderTrainer`.

Per step: the trainer's `train_step` (its loss terms stay on the device); every `log_every`
steps (and at the end) the pending terms are read back in one copy (`s2f.train.readback`), the
last step's terms are logged and the mean of the last `log_every` losses joins the history;
every `val_every` steps (trainers that validate during training) the kept weights are
validated and noted as a candidate (`KeptWeights`); every `checkpoint_every` steps a checkpoint,
written from a background thread (`CheckpointWriter`; joined before registration and at the end).
At the end: a last checkpoint, the selected weights (best on dev, or the last; the EMA's when
averaging), their validation, the figures, and the model registered as `challenger`.

`stop_after` ends a call after that many steps of its own (with a checkpoint), as an
interruption would; `resume=True` continues from the checkpoint with the same weights as an
uninterrupted run. Under torchrun only rank 0 logs, writes and registers.

    res = run(VoiceTrainer(cfg, layout, decoder), resume=True)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from s2f.progress import TrainProgress
from s2f.train.checkpoint import CheckpointWriter, RunResult
from s2f.train.ema import Ema
from s2f.train.readback import Terms
from s2f.train.tracking import NullTracker, image_grid, loss_figure, make_tracker
from storage.layout import DataLayout

M = TypeVar("M", bound=nn.Module)


class RunConfig(Protocol):
    """The knobs of a config (`TrainConfig`, `DecoderTrainConfig`) that the loop reads."""

    steps: int
    batch_size: int
    log_every: int
    checkpoint_every: int
    track: bool
    run_name: str | None
    register_model: bool

    def model_dump_json(self) -> str: ...


class KeptWeights(Generic[M]):
    """Which weights a run keeps, validates and registers: the EMA's when averaging, else the
    model's; with `select="best_val"` those of the lowest validation loss seen (`best`, carried
    by the checkpoint so that a resumed run selects the same)."""

    def __init__(self, model: M, ema: Ema[M] | None,
                 select: Literal["best_val", "last"] = "last") -> None:
        self.model, self.ema, self.select = model, ema, select
        self.best: dict[str, object] | None = None

    @property
    def module(self) -> M:
        return self.ema.module if self.ema is not None else self.model

    def note(self, val: dict[str, float], step: int) -> None:
        """Remember the weights if this validation loss is the lowest so far."""
        if "val_loss" not in val:
            return
        if self.best is None or val["val_loss"] < float(self.best["val_loss"]):  # type: ignore[arg-type]
            self.best = {"val_loss": float(val["val_loss"]), "step": step,
                         "model": {k: v.detach().clone() for k, v in
                                   self.module.state_dict().items()}}

    def use(self, step: int) -> int:
        """Load the kept weights into `model`: the best-validation ones when selecting them
        (the EMA's at that step when averaging), else the last (EMA) weights; the step they
        come from."""
        if self.select != "best_val" or self.best is None:
            if self.ema is not None:
                self.model.load_state_dict(self.ema.state_dict())
            return step
        self.model.load_state_dict(self.best["model"])  # type: ignore[arg-type]
        return int(self.best["step"])  # type: ignore[arg-type]


class Trainer(Protocol[M]):
    """What a model's trainer gives the loop. `step`, `epoch`, `batch` are the position (the
    loop advances them; the checkpoint carries them)."""

    cfg: RunConfig
    layout: DataLayout
    label: str                  # "voice encoder": the progress bar's and loss figure's title
    loss_plot: str              # artifact path of the loss figure
    final_prefix: str           # prefix of the final validation's metric names
    val_every: int | None       # validate every N steps; None: once, at the end
    is_main: bool               # rank 0 (or one process): logs, writes and registers
    model: M
    kept: KeptWeights[M]
    writer: CheckpointWriter    # `save` hands its checkpoint to it (a background write)
    step: int
    epoch: int
    batch: int

    def run_params(self) -> dict[str, Any]: ...
    def run_tags(self) -> dict[str, str]: ...
    def prepare(self) -> None: ...
    def training_batches(self) -> Iterator[tuple[int, int, Any]]: ...
    def train_step(self, batch: Any) -> Terms: ...
    def host_terms(self, pending: list[Terms]) -> list[dict[str, float]]: ...
    def validate(self, module: M | None = None) -> dict[str, float]: ...
    def save(self) -> Path: ...
    def resume(self) -> bool: ...
    def sample_images(self) -> tuple[str, str, dict[str, torch.Tensor]] | None: ...
    def export_model(self) -> M: ...
    def registration(self) -> tuple[str, np.ndarray, str, str]: ...


@dataclass
class LossLog:
    """The loss history, the last `log_every` losses and the steps not yet read back."""

    history: dict[str, list[tuple[int, float]]]
    recent: list[float] = field(default_factory=list)
    pending: list[Terms] = field(default_factory=list)

    def train_loss(self) -> float:
        return float(np.mean(self.recent)) if self.recent else float("nan")


def run(tr: Trainer[M], resume: bool = False, stop_after: int | None = None,
        tracker: NullTracker | None = None) -> RunResult[M]:
    """Train (or resume) `tr` for `cfg.steps` steps; see the module docstring."""
    t0 = time.perf_counter()
    cfg = tr.cfg
    if resume:
        tr.resume()
    own_tracker = tracker is None
    if not tr.is_main:
        tracker = NullTracker()  # under torchrun only rank 0 logs and registers
    tracker = tracker or make_tracker(cfg.track, cfg.run_name, tr.layout)
    log = LossLog({"train_loss": []} if tr.val_every is None else
                  {"train_loss": [], "val_loss": [], "val_loss_mean_baseline": []})
    batches = tr.training_batches()
    status = "FAILED"
    progress = TrainProgress(tr.label, cfg.steps, tr.step, cfg.batch_size, enabled=tr.is_main)
    try:
        tracker.log_params(tr.run_params())
        if tags := tr.run_tags():
            tracker.set_tags(tags)
        if tr.step < cfg.steps:
            tr.prepare()
            _train(tr, batches, stop_after, tracker, progress, log)
        batches.close()  # stops the loader's workers before validation and registration
        ckpt, val, best_step = _conclude(tr, tracker, progress)
        tr.writer.join()  # the last checkpoint is on disk (or its error raised) before registering
        model, version = _publish(tr, tracker, log)
        status = "FINISHED"
    finally:
        tr.writer.join()  # no write outlives the run (a failure's error chains to the first)
        batches.close()
        progress.close()
        if own_tracker:
            tracker.finish(status)
    return RunResult(step=tr.step, train_loss=log.train_loss(), val=val, checkpoint=ckpt,
                     model=model, history=log.history, best_step=best_step,
                     run_id=tracker.run_id, model_version=version,
                     seconds=time.perf_counter() - t0)


def _train(tr: Trainer[M], batches: Iterator[tuple[int, int, Any]], stop_after: int | None,
           tracker: NullTracker, progress: TrainProgress, log: LossLog) -> None:
    """Steps until `cfg.steps` (or `stop_after` steps of this call)."""
    cfg = tr.cfg
    done_here = 0
    for epoch, bi, batch in batches:
        log.pending.append(tr.train_step(batch))
        tr.step, tr.epoch, tr.batch = tr.step + 1, epoch, bi + 1
        done_here += 1
        stop = tr.step >= cfg.steps or (stop_after is not None and done_here >= stop_after)
        if tr.step % cfg.log_every == 0 or stop:
            logged, log.pending = tr.host_terms(log.pending), []
            log.recent = (log.recent + [t["loss"] for t in logged])[-cfg.log_every:]
            for t in logged:  # the bar advances as terms are read back
                progress.step(t["loss"])
        if tr.step % cfg.log_every == 0:
            tracker.log_metrics(logged[-1], tr.step)
            log.history["train_loss"].append((tr.step, float(np.mean(log.recent))))
        if tr.val_every is not None and tr.step % tr.val_every == 0:
            val = tr.validate()
            tr.kept.note(val, tr.step)
            progress.validated(val.get("val_loss"))
            tracker.log_metrics(val, tr.step)
            for k in ("val_loss", "val_loss_mean_baseline"):
                if k in val:
                    log.history[k].append((tr.step, val[k]))
        if tr.step % cfg.checkpoint_every == 0:
            tr.save()
        if stop:
            break


def _conclude(tr: Trainer[M], tracker: NullTracker, progress: TrainProgress
              ) -> tuple[Path, dict[str, float], int]:
    """The last checkpoint, the selected weights and their validation (logged)."""
    finished = tr.step >= tr.cfg.steps
    if finished and tr.val_every is not None and tr.step % tr.val_every != 0:
        tr.kept.note(tr.validate(), tr.step)  # the last weights are a candidate too
    ckpt = tr.save()
    best_step = tr.kept.use(tr.step) if finished else tr.step
    val = tr.validate(tr.model if finished else None)
    if tr.val_every is None:
        progress.validated(val.get("val_loss"))  # the run's only validation
    tracker.log_metrics({f"{tr.final_prefix}{k}": v for k, v in val.items()}, tr.step)
    if tr.val_every is not None:  # only runs validated during training choose among steps
        tracker.log_params({"best_step": best_step})
    return ckpt, val, best_step


def _publish(tr: Trainer[M], tracker: NullTracker, log: LossLog) -> tuple[M, str | None]:
    """The figures, the model as one process has it, and its registered version (when the
    run finished and `register_model`)."""
    tracker.log_figure(loss_figure(log.history, tr.label), tr.loss_plot)
    images = tr.sample_images() if tr.is_main else None
    if images is not None:
        path, title, rows = images
        tracker.log_figure(image_grid(rows, title), path)
    model = tr.export_model()
    version = None
    if tr.cfg.register_model and tr.step >= tr.cfg.steps and tr.is_main:
        name, example, registered, card = tr.registration()
        version = tracker.log_model(model, name, example, registered, card)
    return model, version
