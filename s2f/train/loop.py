"""The voice encoder's training loop (the paper's recipe), with exact checkpoint/resume.

    waves (B×N, CPU) → device → spectrogram (on the device) → VoiceEncoder → v_s
    loss = speech2face_loss(v_s, v_f, decoder.first_layer, classifier)
    Adam(β1, β2, ε) with StepLR(decay_every, lr_decay) stepped every iteration

A checkpoint every `checkpoint_every` steps and at the end; `resume=True` continues from
`<ckpt_dir>/last.pt` and gives the same weights as an uninterrupted run (same data order: the
batch plan depends only on seed and epoch). Validation compares the loss against always
predicting the mean training feature (`val_loss_mean_baseline`).

Generalising from few identities (the demo corpus has ~100 training speakers):
- `random_crop`: training windows start at random offsets (`s2f.train.data`);
- `select="best_val"`: the weights kept at the end (and registered) are those with the lowest
  validation loss over the run (validation speakers are disjoint from training and test ones);
  `best_step` says when. The checkpoint carries them, so a resumed run selects the same.
- `ema_decay` > 0: an exponential moving average of the weights (Polyak averaging; the
  BatchNorm statistics are averaged too) is what is validated, selected and registered. With
  batch 8 and lr 1e-3 the raw weights are noisy from step to step; the average is not.
- `val_seconds`: validate on windows of that length (the evaluation's primary length, 6 s),
  so selection looks at the input the promotion gate scores.

On CUDA, `bf16` autocasts the encoder's forward to bfloat16 (ignored on CPU); `channels_last`
switches the memory format on any device (on CPU, mkldnn's channels-last convs are ~2x faster).

Several processes (`torchrun ... -m flows.torchrun`, `s2f.train.distributed`): `batch_size` is
the global batch, each rank loads its slice of every batch, BatchNorm is synchronised
(`sync_batchnorm`) and the model trains through DistributedDataParallel (`net`); `model` stays
the bare module. Metrics are reduced over ranks; only rank 0 writes checkpoints, logs and
registers; on resume every rank loads rank 0's checkpoint.

    python -m s2f.train.loop DATA_DIR [STEPS]    # trains the small config (random f_dec if no decoder)
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from s2f.media.audio import spectrogram
from s2f.models.face_decoder import FaceDecoder
from s2f.models.losses import speech2face_loss, speech2face_loss_terms
from s2f.models.voice_encoder import VoiceEncoder
from s2f.progress import TrainProgress
from s2f.train.checkpoint import (
    LAST,
    RunResult,
    checkpoint_dir,
    latest,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from s2f.train.config import TrainConfig, resolve_device
from s2f.train.data import Batch, PairStream
from s2f.train.distributed import current, plain_copy
from s2f.train.prefetch import prefetched
from s2f.train.readback import Terms, host_floats
from s2f.train.tracking import (
    VOICE_ENCODER_MODEL,
    NullTracker,
    data_snapshot_id,
    git_commit,
    image_grid,
    loss_figure,
    make_tracker,
)
from storage.layout import DataLayout

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TrainResult(RunResult[VoiceEncoder]):
    best_step: int = 0                       # the step whose weights were kept (select)


def random_projection(in_dim: int, out_dim: int, seed: int) -> nn.Linear:
    """A fixed random f_dec, for `decoder="random"` only (smoke tests, no decoder trained yet)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_dim, in_dim, generator=g) / in_dim**0.5)
        lin.bias.zero_()
    return lin.requires_grad_(False)


def resolve_loader(name: str, cuda: bool, workers: int = 0) -> Literal["pyav", "dali"]:
    """"auto": DALI when CUDA is present and DALI imports (and no loader workers: they decode
    with PyAV), PyAV otherwise."""
    from s2f.train.dali_audio import dali_available

    if name == "dali" and workers > 0:
        raise ValueError("audio_loader='dali' decodes in the training process: set "
                         "loader_workers=0, or audio_loader='pyav' to decode in the workers")
    if name == "dali" or (name == "auto" and cuda and not workers and dali_available()):
        return "dali"
    return "pyav"


class VoiceTrainer:
    """Holds the model, optimiser, streams and the frozen f_dec of one training run."""

    def __init__(self, cfg: TrainConfig, layout: DataLayout, decoder: FaceDecoder | None,
                 classifier: nn.Module | None = None, ckpt_dir: Path | None = None) -> None:
        self.cfg, self.layout = cfg, layout
        self.dist = current()  # under torchrun: this process's rank, world size and device
        self.device = self.dist.device or resolve_device(cfg.device)
        self.cuda = self.device.type == "cuda"
        if cfg.float64 and self.cuda:
            raise ValueError("float64 is for CPU golden tests; on CUDA train in bf16/float32")
        # the encoder's parameter dtype; spectrograms are cast to it, its output back to float32
        self.dtype = torch.float64 if cfg.float64 else torch.float32
        torch.manual_seed(cfg.seed)
        self.audio = cfg.audio_config()
        self.loader = resolve_loader(cfg.audio_loader, self.cuda, cfg.loader_workers)
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest conv kernels, once
        if cfg.batch_size % self.dist.world:
            raise ValueError(f"batch_size {cfg.batch_size} is the global batch: it must divide "
                             f"by the {self.dist.world} processes")
        part = (self.dist.rank, self.dist.world)  # each rank loads its slice of every batch
        self.train = PairStream(layout, cfg.encoder, "train", self.audio, cfg.batch_size,
                                cfg.seed, cfg.dev_fraction, loader=self.loader,
                                random_crop=cfg.random_crop, part=part,
                                shuffle_voices=cfg.shuffle_voices)
        self.valid = PairStream(layout, cfg.encoder, "dev", cfg.val_audio_config(), cfg.batch_size,
                                cfg.seed, cfg.dev_fraction, shuffle=False, drop_last=False,
                                loader=self.loader, part=part)
        if len(self.train) == 0:
            raise ValueError(f"no training pairs for encoder {cfg.encoder!r} under {layout.root}")
        train_feats = self.train.features()
        self.dim = train_feats.shape[1]
        self.mean_feature = torch.from_numpy(train_feats.mean(axis=0)).to(self.device)
        self.model = VoiceEncoder(cfg.encoder_config(out_dim=self.dim)).to(self.device,
                                                                             self.dtype)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if decoder is not None:
            decoder = decoder.to(self.device).eval().requires_grad_(False)
            self.f_dec: Projection = decoder.first_layer
        elif cfg.decoder == "random":
            self.f_dec = random_projection(self.dim, 1000 if cfg.preset == "paper" else 256,
                                           cfg.seed).to(self.device)
        else:
            raise ValueError("no face decoder given; train one (s2f train-decoder) or set "
                             "decoder='random' explicitly")
        self.decoder = decoder
        self.classifier = None if classifier is None else classifier.to(self.device).eval()
        # torchrun (world > 1): synchronised BatchNorm, and DDP as `net` (trained through);
        # `model` stays the bare module (saved, validated, registered). One process: both same.
        model, self.net = self.dist.wrap(self.model, cfg.sync_batchnorm)
        self.model = cast(VoiceEncoder, model)
        # the averaged weights (`ema_decay`), a frozen copy updated after every step
        self.ema: VoiceEncoder | None = None
        if cfg.ema_decay > 0:
            self.ema = cast(VoiceEncoder, copy.deepcopy(self.model).requires_grad_(False))
        # (ema, weights) tensor lists for the fused update; load_state_dict copies in place,
        # so they stay the live tensors
        pairs = ([] if self.ema is None else
                 list(zip(self.ema.state_dict().values(), self.model.state_dict().values(),
                          strict=True)))
        self._ema_float = ([e for e, _ in pairs if e.dtype.is_floating_point],
                           [w for e, w in pairs if e.dtype.is_floating_point])
        self._ema_int = ([e for e, _ in pairs if not e.dtype.is_floating_point],
                         [w for e, w in pairs if not e.dtype.is_floating_point])
        # fused Adam on CUDA (one kernel for every parameter); CPU keeps torch's default
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr,
                                    betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                                    weight_decay=cfg.weight_decay,
                                    fused=True if self.cuda else None)
        # the training forward compiled (CUDA: fuses BatchNorm/ReLU/pool glue between the convs;
        # training windows have one shape, so it compiles once); validation stays eager
        self.train_net: nn.Module = self.net
        if cfg.torch_compile and self.cuda:
            self.train_net = cast(nn.Module, torch.compile(self.net))
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=cfg.decay_every,
                                                     gamma=cfg.lr_decay)
        self.ckpt_dir = ckpt_dir or checkpoint_dir(layout, "voice_encoder")
        self.step, self.epoch, self.batch = 0, 0, 0
        # the lowest validation loss so far and its weights (`select="best_val"`)
        self.best: dict[str, object] | None = None
        self._valid_cache: list[Batch] | None = None

    # -- one step ---------------------------------------------------------------------------
    @property
    def kept(self) -> VoiceEncoder:
        """The weights that are validated, selected and registered: the EMA when there is one."""
        return self.ema if self.ema is not None else self.model

    def encode(self, waves: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
        # the STFT takes any length: validation's longer windows need no config of their own
        spec = spectrogram(waves.to(self.device, non_blocking=True), self.audio).to(self.dtype)
        if self.cfg.channels_last:
            spec = spec.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.cfg.bf16):
            return (self.model if module is None else module)(spec).float()

    def train_step(self, batch: Batch) -> Terms:
        """One optimisation step; its loss terms stay on the device (`host_terms` reads them:
        on CUDA nothing here waits for the GPU)."""
        self.model.train()
        v_s = self.encode(batch.waves, self.train_net)
        v_f = batch.features.to(self.device, non_blocking=True)
        loss, terms = speech2face_loss_terms(v_s, v_f, self.f_dec, self.classifier,
                                             self.cfg.loss_config())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.update_ema()
        terms["lr"] = self.sched.get_last_lr()[0]
        return terms

    def host_terms(self, pending: list[Terms]) -> list[dict[str, float]]:
        """Steps' loss terms as floats (one device→host copy for all of them), each the mean
        over ranks: the global batch's terms, the same on every rank."""
        return [self.dist.mean(t) for t in host_floats(pending)]

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema ← d·ema + (1−d)·weights with d = min(ema_decay, (1+t)/(10+t)) at step t (as TF's
        ExponentialMovingAverage with num_updates): the random initial weights fade fast, and
        the average spans roughly the last t/9 steps until that reaches 1/(1−ema_decay) (from
        step 890 at 0.99: so in the 800-step demo run the knob's value does not bind yet).
        Integer buffers (BatchNorm's counter) are copied."""
        if self.ema is None:
            return
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        # e.lerp_(w, 1 − d) for every tensor at once (on CPU the same per-tensor kernel)
        torch._foreach_lerp_(self._ema_float[0], self._ema_float[1], 1 - d)
        if self._ema_int[0]:
            torch._foreach_copy_(self._ema_int[0], self._ema_int[1])

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": rng_state(), "step": self.step,
                "epoch": self.epoch, "batch": self.batch, "dim": self.dim,
                "best": self.best,
                "ema": None if self.ema is None else self.ema.state_dict(),
                "config": self.cfg.model_dump_json(),
                "encoder_config": json.dumps(self.model.cfg.to_dict())}

    def save(self) -> Path:
        """Write `last.pt` (under torchrun only rank 0 writes; every rank gets the path)."""
        if not self.dist.is_main:
            return self.ckpt_dir / LAST
        return save_checkpoint(self.ckpt_dir, self.state())

    def resume(self) -> bool:
        """Continue from `<ckpt_dir>/last.pt` if there is one; under torchrun rank 0 reads it
        and every rank loads rank 0's copy."""
        p = latest(self.ckpt_dir) if self.dist.is_main else None
        if not self.dist.distributed:
            if p is not None:
                self.restore(p)
            return p is not None
        ck = self.dist.broadcast(None if p is None else load_checkpoint(p, "cpu"))
        if ck is not None:
            self.load_state(ck)
        return ck is not None

    def restore(self, path: Path) -> None:
        self.load_state(load_checkpoint(path, self.device))

    def load_state(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        self.step, self.epoch, self.batch = int(ck["step"]), int(ck["epoch"]), int(ck["batch"])
        self.best = ck.get("best")
        if self.ema is not None:
            if ck.get("ema") is None:
                raise ValueError("the checkpoint has no EMA weights but ema_decay > 0: resume "
                                 "with the ema_decay it was trained with")
            self.ema.load_state_dict(ck["ema"])

    # -- model selection ----------------------------------------------------------------------
    def note_validation(self, val: dict[str, float]) -> None:
        """Remember the weights if this validation loss is the lowest so far."""
        if "val_loss" not in val:
            return
        if self.best is None or val["val_loss"] < float(self.best["val_loss"]):  # type: ignore[arg-type]
            self.best = {"val_loss": float(val["val_loss"]), "step": self.step,
                         "model": {k: v.detach().clone() for k, v in
                                   self.kept.state_dict().items()}}

    def use_best(self) -> int:
        """Load the kept weights into `model`: the best-validation ones when selecting them
        (the EMA's at that step when averaging), else the last (EMA) weights; the step they
        come from."""
        if self.cfg.select != "best_val" or self.best is None:
            if self.ema is not None:
                self.model.load_state_dict(self.ema.state_dict())
            return self.step
        self.model.load_state_dict(self.best["model"])  # type: ignore[arg-type]
        return int(self.best["step"])  # type: ignore[arg-type]

    # -- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, module: VoiceEncoder | None = None) -> dict[str, float]:
        """Mean loss of `module` (default: the kept weights) over validation batches, next to
        always predicting the mean train feature."""
        if len(self.valid) == 0:
            return {}
        model = (module or self.kept).eval()
        # fixed keys: under torchrun a rank may get no validation rows, and the sums are
        # added over ranks
        sums: dict[str, float] = dict.fromkeys(
            ("val_loss", "val_loss_mean_baseline", "val_cosine", "val_feature_l1"), 0.0)
        n = 0
        for batch in self.validation_batches():
            v_f = batch.features.to(self.device, non_blocking=True)
            v_s = self.encode(batch.waves, model)
            _, terms = speech2face_loss(v_s, v_f, self.f_dec, self.classifier,
                                        self.cfg.loss_config())
            mean = self.mean_feature.expand_as(v_f)
            _, base = speech2face_loss(mean, v_f, self.f_dec, self.classifier,
                                       self.cfg.loss_config())
            cos = torch.nn.functional.cosine_similarity(v_s, v_f).mean()
            b = v_f.shape[0]
            for k, v in {"val_loss": terms["loss"], "val_loss_mean_baseline": base["loss"],
                         "val_cosine": float(cos),
                         "val_feature_l1": float((v_s - v_f).abs().mean())}.items():
                sums[k] = sums.get(k, 0.0) + v * b
            n += b
        total = self.dist.all_reduce_sum({**sums, "n": float(n)})
        n_all = total.pop("n")
        return {k: v / n_all for k, v in total.items()} if n_all else {}

    def validation_batches(self) -> list[Batch]:
        """This rank's validation batches (first windows, fixed order: the same every time),
        loaded once by the loader's workers and kept."""
        if self._valid_cache is None:
            self._valid_cache = [b for _, i, b in prefetched(
                self.valid, forever=False, workers=self.cfg.loader_workers, pin=self.cuda,
                prefetch=self.cfg.loader_prefetch, limit=self.cfg.val_batches)
                if i < self.cfg.val_batches]
        return self._valid_cache

    def training_batches(self) -> Iterator[tuple[int, int, Batch]]:
        """(epoch, batch number, batch) from the resume point on, without end; decoded by
        `loader_workers` processes (0: in this one). Close it to stop the workers."""
        return prefetched(self.train, self.epoch, self.batch, workers=self.cfg.loader_workers,
                          pin=self.cuda, prefetch=self.cfg.loader_prefetch)

    def export_model(self) -> VoiceEncoder:
        """The encoder as one process has it: under torchrun a copy with plain BatchNorm."""
        model = self.model if self.net is self.model else plain_copy(self.model)
        if self.dtype != torch.float32:  # registered and served in float32, as any other run
            model = copy.deepcopy(model).float()
        return cast(VoiceEncoder, model)

    @torch.no_grad()
    def sample_faces(self, k: int = 6) -> dict[str, torch.Tensor] | None:
        if self.decoder is None or len(self.valid) == 0:
            return None
        self.model.eval()
        batch = self.valid.load(self.valid.plan(0)[0][:k])
        _, _, true_img = self.decoder(batch.features.to(self.device))
        _, _, voice_img = self.decoder(self.encode(batch.waves))
        assert true_img is not None and voice_img is not None
        return {"decoder(v_f): face feature": true_img, "decoder(encoder(voice))": voice_img}


def train_voice_encoder(cfg: TrainConfig, layout: DataLayout, decoder: FaceDecoder | None = None,
                        classifier: nn.Module | None = None, resume: bool = False,
                        ckpt_dir: Path | None = None, stop_after: int | None = None,
                        tracker: NullTracker | None = None) -> TrainResult:
    """Train (or resume) the voice encoder for `cfg.steps` steps.

    `stop_after` ends the run early after that many steps of this call (with a checkpoint), as
    an interruption would; the next `resume=True` call carries on."""
    t0 = time.perf_counter()
    tr = VoiceTrainer(cfg, layout, decoder, classifier, ckpt_dir)
    if resume:
        tr.resume()
    own_tracker = tracker is None
    if not tr.dist.is_main:
        tracker = NullTracker()  # under torchrun only rank 0 logs and registers
    tracker = tracker or make_tracker(cfg.track, cfg.run_name, layout)
    history: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_loss": [],
                                                   "val_loss_mean_baseline": []}
    recent: list[float] = []
    pending: list[Terms] = []  # steps not yet read back from the device (read every log_every)
    batches = tr.training_batches()
    status = "FAILED"
    progress = TrainProgress("voice encoder", cfg.steps, tr.step, cfg.batch_size,
                             enabled=tr.dist.is_main)
    try:
        tracker.log_params({**cfg.flat(), "data_snapshot": data_snapshot_id(layout),
                            "git_commit": git_commit() or "unknown", "feature_dim": tr.dim,
                            "train_pairs": tr.train.index.height,
                            "val_pairs": tr.valid.index.height, "resumed_at": tr.step,
                            "device": str(tr.device), "audio_loader_used": tr.loader,
                            "world_size": tr.dist.world,
                            "split": "dev = the dev manifest, else carved from train by identity "
                                     "(sha1 < dev_fraction); test = manifest"})
        tracker.set_tags({"distillation": "on" if classifier is not None else
                          "off (face encoder has no classification layer)",
                          "f_dec": "trained decoder" if decoder is not None else "random"})
        done_here = 0
        if tr.step < cfg.steps and cfg.val_every <= cfg.steps:
            tr.validation_batches()  # decoded once, before training (worker start-up included)
        if tr.step < cfg.steps:
            for epoch, bi, batch in batches:
                pending.append(tr.train_step(batch))
                tr.step, tr.epoch, tr.batch = tr.step + 1, epoch, bi + 1
                done_here += 1
                stop = tr.step >= cfg.steps or (stop_after is not None and done_here >= stop_after)
                if tr.step % cfg.log_every == 0 or stop:
                    logged, pending = tr.host_terms(pending), []
                    recent = (recent + [t["loss"] for t in logged])[-cfg.log_every:]
                    for t in logged:  # the bar advances as terms are read back
                        progress.step(t["loss"])
                if tr.step % cfg.log_every == 0:
                    tracker.log_metrics(logged[-1], tr.step)
                    history["train_loss"].append((tr.step, float(np.mean(recent))))
                if tr.step % cfg.val_every == 0:
                    val = tr.validate()
                    tr.note_validation(val)
                    progress.validated(val.get("val_loss"))
                    tracker.log_metrics(val, tr.step)
                    for k in ("val_loss", "val_loss_mean_baseline"):
                        if k in val:
                            history[k].append((tr.step, val[k]))
                if tr.step % cfg.checkpoint_every == 0:
                    tr.save()
                if stop:
                    break
        batches.close()  # stops the loader's workers before validation and registration
        if tr.step % cfg.val_every != 0 and tr.step >= cfg.steps:
            tr.note_validation(tr.validate())  # the last weights are a candidate too
        ckpt = tr.save()
        best_step = tr.use_best() if tr.step >= cfg.steps else tr.step
        val = tr.validate(tr.model if tr.step >= cfg.steps else None)
        tracker.log_metrics({f"final_{k}": v for k, v in val.items()}, tr.step)
        tracker.log_params({"best_step": best_step})
        tracker.log_figure(loss_figure(history, "voice encoder"), "plots/loss.png")
        faces = tr.sample_faces() if tr.dist.is_main else None
        if faces is not None:
            tracker.log_figure(image_grid(faces, "true feature vs voice"), "plots/faces.png")
        model = tr.export_model()
        version = None
        if cfg.register_model and tr.step >= cfg.steps and tr.dist.is_main:
            spec = spectrogram(tr.train.load(tr.train.plan(0)[0][:2]).waves, tr.audio)
            version = tracker.log_model(
                model, "voice_encoder", spec.numpy(), VOICE_ENCODER_MODEL,
                _card("voice encoder", cfg.model_dump_json()))
        status = "FINISHED"
    finally:
        batches.close()
        progress.close()
        if own_tracker:
            tracker.finish(status)
    return TrainResult(step=tr.step, train_loss=float(np.mean(recent)) if recent else float("nan"),
                       val=val, checkpoint=ckpt, model=model, history=history,
                       best_step=best_step,
                       run_id=tracker.run_id, model_version=version,
                       seconds=time.perf_counter() - t0)


def _card(what: str, config: str) -> str:
    from s2f.train.tracking import MODEL_CARD

    return MODEL_CARD.format(
        name=f"Speech2Face {what}",
        what="Maps 16 kHz speech (compressed complex STFT) to a face feature; decode it with "
             "the face decoder to draw a face." if what == "voice encoder" else
             "Maps a face feature to a frontal face image (Cole et al. 2017).",
        data="the corpus recorded in the run's data_snapshot param", config=config)


if __name__ == "__main__":
    lay = DataLayout(Path(sys.argv[1]))
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    res = train_voice_encoder(TrainConfig(steps=steps, decoder="random", track=False), lay)
    print(res.step, res.train_loss, res.val, f"{res.seconds:.1f}s")
