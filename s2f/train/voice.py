"""The voice encoder's training (the paper's recipe), with exact checkpoint/resume.

`VoiceTrainer` is the encoder's step, validation and state; the loop (cadence, checkpoints,
selection, tracking, registration) is `s2f.train.runner.run`, shared with the face decoder.

    waves (B×N, CPU) → device → spectrogram (on the device) → VoiceEncoder → v_s
    loss = speech2face_loss(v_s, v_f, decoder.first_layer, classifier)
    Adam(β1, β2, ε) with StepLR(decay_every, lr_decay) stepped every iteration

A checkpoint every `checkpoint_every` steps and at the end, in the run's own folder
(`s2f.train.checkpoint.run_checkpoint_dir`: one per seed, shuffle flag, config, input
fingerprint and f_dec); `resume=True` continues from its `last.pt` and gives the same weights
as an uninterrupted run (same data order: the batch plan depends only on seed and epoch), and
refuses another run's checkpoint (`ResumeMismatch`). Validation compares the loss against always
predicting the mean training feature (`val_loss_mean_baseline`), and logs `val_pred_rank`, the
numerical rank of the validation predictions (`prediction_rank`: a collapsed model varies few
directions of the feature; averaged over processes under torchrun, each its own slice).

Generalising from few identities (the demo corpus has ~100 training speakers):
- `random_crop`: training windows start at random offsets (`s2f.train.data`);
- `select="best_val"`: the weights kept at the end (and registered) are those with the lowest
  validation loss over the run (validation speakers are disjoint from training and test ones);
  `best_step` says when. The checkpoint carries them, so a resumed run selects the same.
- `ema_decay` > 0: an exponential moving average of the weights (`s2f.train.ema`; the
  BatchNorm statistics are averaged too) is what is validated, selected and registered. With
  batch 8 and lr 1e-3 the raw weights are noisy from step to step; the average is not.
- `val_seconds`: validate on windows of that length (the evaluation's primary length, 6 s),
  so selection looks at the input the promotion gate scores.

Voice front-end (`voice_frontend`, `s2f.models.frontend`): `paper` (the CNN above, over the
spectrogram) or `ge2e` (the pretrained speaker encoder + head, `s2f.models.ge2e`, which takes
the wave itself): same loop, loss, checkpoints and registration; the ge2e weights' provenance
goes into the run's params and the model card. With `standardize_targets` the model's target
scaler is fitted on the training features before the EMA copy is made; with `f0_input` (ge2e)
its F0 statistics on the median F0 of up to `F0_FIT_CLIPS` training clips (first windows, not
augmented). `augment_*` perturb the training stream's waves only (`s2f.train.augment`).

On CUDA, `bf16` autocasts the encoder's forward to bfloat16 (ignored on CPU); `channels_last`
switches the memory format on any device (on CPU, mkldnn's channels-last convs are ~2x faster).

Several processes (`torchrun ... -m flows.torchrun`, `s2f.train.distributed`): `batch_size` is
the global batch, each rank loads its slice of every batch, BatchNorm is synchronised
(`sync_batchnorm`) and the model trains through DistributedDataParallel (`net`); `model` stays
the bare module. Metrics are reduced over ranks; only rank 0 writes checkpoints, logs and
registers; on resume every rank loads rank 0's checkpoint.

    python -m s2f.train.voice DATA_DIR [STEPS]    # trains the small config (random f_dec if no decoder)
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from s2f.devices import resolve_device
from s2f.media.audio import spectrogram
from s2f.models.face_decoder import FaceDecoder
from s2f.models.ge2e import GE2E_TRAINED_ON, Ge2eConfig, Ge2eVoiceEncoder, ge2e_provenance
from s2f.models.losses import speech2face_loss, speech2face_loss_terms
from s2f.models.pitch import median_f0
from s2f.models.voice_encoder import VoiceEncoder
from s2f.registry.names import VOICE_ENCODER_NAME
from s2f.train.checkpoint import (
    LAST,
    CheckpointWriter,
    RunResult,
    check_identity,
    latest,
    load_checkpoint,
    rng_state,
    run_checkpoint_dir,
    run_identity,
    set_rng_state,
)
from s2f.train.config import TrainConfig
from s2f.train.data import Batch, PairStream
from s2f.train.distributed import current, plain_copy, state_digest
from s2f.train.ema import Ema
from s2f.train.prefetch import prefetched
from s2f.train.readback import Terms, host_floats
from s2f.train.runner import KeptWeights, run
from s2f.train.tracking import (
    NullTracker,
    git_commit,
    input_fingerprint,
    model_card,
)
from storage.layout import DataLayout

Projection = Callable[[torch.Tensor], torch.Tensor]
VoiceModel = VoiceEncoder | Ge2eVoiceEncoder  # the voice front-ends (`voice_frontend`)
TrainResult = RunResult[VoiceModel]  # what `train_voice_encoder` returns


F0_FIT_CLIPS = 512  # training clips whose median F0 fits `f0_input`'s statistics
HEAD_WITH_F0 = " (its inputs: the speaker embedding and the input's median F0)"


# A singular value of the centred predictions counts toward their rank above this fraction
# of the largest: float32 noise of a dead direction is ~1e-7 of it, a live one ~1e-2 or more.
PRED_RANK_TOL = 1e-3


def prediction_rank(preds: list[torch.Tensor]) -> int:
    """Numerical rank of the centred validation predictions (rows: clips): how many
    directions of the face feature the model actually varies. A collapse shows here first:
    the small CNN at lr 1e-3 on raw targets ends at 6 of 128 (its fc1 ReLUs die), whatever
    the loss says. 0 for fewer than two predictions."""
    if not preds or sum(len(p) for p in preds) < 2:
        return 0
    x = torch.cat(preds).double()
    sv = torch.linalg.svdvals(x - x.mean(dim=0))
    return int((sv > PRED_RANK_TOL * sv[0]).sum()) if float(sv[0]) > 0 else 0


def voice_model(cfg: TrainConfig, out_dim: int, train_features: np.ndarray,
                train_f0: np.ndarray | None = None) -> VoiceModel:
    """The configured front-end, predicting `out_dim`-D features; with `standardize_targets`
    its target scaler fitted on `train_features` (N×D), with `f0_input` its F0 statistics on
    `train_f0` (Hz, NaN where unvoiced)."""
    fc = cfg.frontend_config(out_dim=out_dim)
    model: VoiceModel = Ge2eVoiceEncoder(fc) if isinstance(fc, Ge2eConfig) else VoiceEncoder(fc)
    if model.scaler is not None:
        model.scaler.fit(torch.from_numpy(np.asarray(train_features, np.float32)))
    f0 = getattr(model, "f0", None)
    if f0 is not None:
        if train_f0 is None:
            raise ValueError("f0_input: the training clips' median F0 is needed to fit it")
        f0.fit(train_f0)
    return model


def training_f0(stream: PairStream, limit: int = F0_FIT_CLIPS) -> np.ndarray:
    """Median F0 (Hz, NaN unvoiced) of the first window of up to `limit` training clips, spread
    evenly over the index: what `f0_input` standardises with. Every rank computes the same."""
    n, batch = stream.index.height, stream.batch_size  # DALI's pipeline takes one batch at most
    positions = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64))
    out: list[float] = []
    for i in range(0, len(positions), batch):
        waves = stream.load(positions[i:i + batch]).waves.numpy()  # no epoch: not augmented
        out += [median_f0(w, stream.audio.sample_rate) for w in waves]
    return np.asarray(out)


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
    from s2f.media.dali_audio import dali_available

    if name == "dali" and workers > 0:
        raise ValueError("audio_loader='dali' decodes in the training process: set "
                         "loader_workers=0, or audio_loader='pyav' to decode in the workers")
    if name == "dali" or (name == "auto" and cuda and not workers and dali_available()):
        return "dali"
    return "pyav"


class VoiceTrainer:
    """Holds the model, optimiser, streams and the frozen f_dec of one training run: the
    voice encoder's `s2f.train.runner.Trainer`."""

    label, loss_plot, final_prefix = "voice encoder", "plots/loss.png", "final_"

    def __init__(self, cfg: TrainConfig, layout: DataLayout, decoder: FaceDecoder | None,
                 classifier: nn.Module | None = None, ckpt_dir: Path | None = None) -> None:
        self.cfg, self.layout = cfg, layout
        self.val_every: int | None = cfg.val_every
        self.dist = current()  # under torchrun: this process's rank, world size and device
        self.is_main = self.dist.is_main
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
                                shuffle_voices=cfg.shuffle_voices, augment=cfg.augment())
        self.valid = PairStream(layout, cfg.encoder, "dev", cfg.val_audio_config(), cfg.batch_size,
                                cfg.seed, cfg.dev_fraction, shuffle=False, drop_last=False,
                                loader=self.loader, part=part)
        if len(self.train) == 0:
            raise ValueError(f"no training pairs for encoder {cfg.encoder!r} under {layout.root}")
        train_feats = self.train.features()
        self.dim = train_feats.shape[1]
        self.mean_feature = torch.from_numpy(train_feats.mean(axis=0)).to(self.device)
        train_f0 = training_f0(self.train) if cfg.f0_input else None
        self.model = voice_model(cfg, self.dim, train_feats, train_f0).to(self.device, self.dtype)
        self.takes_waves = bool(getattr(self.model, "takes_waves", False))
        if cfg.channels_last and not self.takes_waves:
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
        self.model = cast(VoiceModel, model)
        # the averaged weights (`ema_decay`), a frozen copy updated after every step
        self.ema = Ema(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        # validated, selected and registered: the EMA's, the best on dev with select="best_val"
        self.kept = KeptWeights(self.model, self.ema, cfg.select)
        # fused Adam on CUDA (one kernel for every parameter); CPU keeps torch's default
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr,
                                    betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                                    weight_decay=cfg.weight_decay,
                                    fused=True if self.cuda else None)
        # the training forward compiled (CUDA: fuses BatchNorm/ReLU/pool glue between the convs;
        # training windows have one shape, so it compiles once); validation stays eager
        self.train_net: nn.Module = self.net
        if cfg.torch_compile and self.cuda and not self.takes_waves:  # ge2e: an LSTM + tiny head
            self.train_net = cast(nn.Module, torch.compile(self.net))
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=cfg.decay_every,
                                                     gamma=cfg.lr_decay)
        # one checkpoint folder per run identity (seed, shuffle flag, config, inputs, f_dec):
        # seeds and the shuffled control never resume from each other's weights
        self.fingerprint = input_fingerprint(layout)
        self.identity = run_identity(cfg, self.fingerprint, self.frozen_digest())
        self.ckpt_dir = ckpt_dir or run_checkpoint_dir(layout, "voice_encoder", self.identity)
        self.writer = CheckpointWriter()
        self.step, self.epoch, self.batch = 0, 0, 0
        self._valid_cache: list[Batch] | None = None

    def frozen_digest(self) -> str:
        """sha1 of the frozen parts the loss reads (f_dec's layer, the classifier): another
        decoder is another run."""
        f_dec = self.decoder.fc_first if self.decoder is not None else self.f_dec
        parts = [m for m in (f_dec, self.classifier) if isinstance(m, nn.Module)]
        return state_digest(nn.ModuleList(parts))

    # -- one step ---------------------------------------------------------------------------
    def encode(self, waves: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
        waves = waves.to(self.device, non_blocking=True)
        if self.takes_waves:  # ge2e: its own mel front-end, in the model
            spec = waves.to(self.dtype)
        else:  # the STFT takes any length: validation's longer windows need no config of their own
            spec = spectrogram(waves, self.audio).to(self.dtype)
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
        if self.ema is not None:
            self.ema.update(self.step)
        terms["lr"] = self.sched.get_last_lr()[0]
        return terms

    def host_terms(self, pending: list[Terms]) -> list[dict[str, float]]:
        """Steps' loss terms as floats (one device→host copy for all of them), each the mean
        over ranks: the global batch's terms, the same on every rank."""
        return [self.dist.mean(t) for t in host_floats(pending)]

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": rng_state(), "step": self.step,
                "epoch": self.epoch, "batch": self.batch, "dim": self.dim,
                "best": self.kept.best,
                "ema": None if self.ema is None else self.ema.state_dict(),
                "config": self.cfg.model_dump_json(), "identity": self.identity.as_dict(),
                "encoder_config": json.dumps(self.model.cfg.to_dict())}

    def save(self) -> Path:
        """Write `last.pt` (under torchrun only rank 0 writes; every rank gets the path)."""
        if not self.dist.is_main:
            return self.ckpt_dir / LAST
        return self.writer.submit(self.ckpt_dir, self.state())  # written in the background

    def resume(self) -> bool:
        """Continue from `<ckpt_dir>/last.pt` if there is one; under torchrun rank 0 reads it
        and every rank loads rank 0's copy. A checkpoint of another run identity raises
        `ResumeMismatch` (on every rank)."""
        self.writer.join()  # a write in flight is the newest last.pt
        p = latest(self.ckpt_dir) if self.dist.is_main else None
        if not self.dist.distributed:
            ck = None if p is None else load_checkpoint(p, self.device)
        else:
            ck = self.dist.broadcast(None if p is None else load_checkpoint(p, "cpu"))
        if ck is not None:
            check_identity(ck, self.identity, self.cfg, self.ckpt_dir)
            self.load_state(ck)
        return ck is not None

    def load_state(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        self.step, self.epoch, self.batch = int(ck["step"]), int(ck["epoch"]), int(ck["batch"])
        self.kept.best = ck.get("best")
        if self.ema is not None:
            if ck.get("ema") is None:
                raise ValueError("the checkpoint has no EMA weights but ema_decay > 0: resume "
                                 "with the ema_decay it was trained with")
            self.ema.load_state_dict(ck["ema"])

    # -- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, module: VoiceModel | None = None) -> dict[str, float]:
        """Mean loss of `module` (default: the kept weights) over validation batches, next to
        always predicting the mean train feature."""
        if len(self.valid) == 0:
            return {}
        model = (module or self.kept.module).eval()
        # fixed keys: under torchrun a rank may get no validation rows, and the sums are
        # added over ranks
        sums: dict[str, float] = dict.fromkeys(
            ("val_loss", "val_loss_mean_baseline", "val_cosine", "val_feature_l1"), 0.0)
        n = 0
        preds: list[torch.Tensor] = []
        for batch in self.validation_batches():
            v_f = batch.features.to(self.device, non_blocking=True)
            v_s = self.encode(batch.waves, model)
            preds.append(v_s.detach().float().cpu())
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
        if not n_all:
            return {}
        rank = self.dist.mean({"val_pred_rank": float(prediction_rank(preds))})
        return {**{k: v / n_all for k, v in total.items()}, **rank}

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

    def export_model(self) -> VoiceModel:
        """The encoder as one process has it: under torchrun a copy with plain BatchNorm."""
        model = self.model if self.net is self.model else plain_copy(self.model)
        if self.dtype != torch.float32:  # registered and served in float32, as any other run
            model = copy.deepcopy(model).float()
        return cast(VoiceModel, model)

    @torch.no_grad()
    def sample_images(self, k: int = 6) -> tuple[str, str, dict[str, torch.Tensor]] | None:
        """(artifact path, title, rows) of the face figure: the decoder's face from the true
        feature next to the one from the voice; None without a decoder or dev pairs."""
        if self.decoder is None or len(self.valid) == 0:
            return None
        self.model.eval()
        batch = self.valid.load(self.valid.plan(0)[0][:k])
        _, _, true_img = self.decoder(batch.features.to(self.device))
        _, _, voice_img = self.decoder(self.encode(batch.waves))
        assert true_img is not None and voice_img is not None
        return ("plots/faces.png", "true feature vs voice",
                {"decoder(v_f): face feature": true_img, "decoder(encoder(voice))": voice_img})

    # -- the run's records ------------------------------------------------------------------
    def run_params(self) -> dict[str, Any]:
        return {**self.cfg.flat(), "input_fingerprint": self.fingerprint,
                "config_hash": self.identity.config_hash, "frozen_sha1": self.identity.frozen,
                "checkpoint_dir": str(self.ckpt_dir),
                "git_commit": git_commit() or "unknown", "feature_dim": self.dim,
                "train_pairs": self.train.index.height, "val_pairs": self.valid.index.height,
                "resumed_at": self.step, "device": str(self.device),
                "audio_loader_used": self.loader, "world_size": self.dist.world,
                **self.frontend_params(),
                "split": "dev = the dev manifest, else carved from train by identity "
                         "(sha1 < dev_fraction); test = manifest"}

    def frontend_params(self) -> dict[str, str]:
        """The front-end and where its pretrained weights come from (run params)."""
        if not self.takes_waves:
            return {"voice_frontend_pretrained": "none (the paper's CNN, trained from scratch)"}
        return {"voice_frontend_pretrained": "GE2E speaker encoder (resemblyzer)",
                **ge2e_provenance()}

    def run_tags(self) -> dict[str, str]:
        return {"distillation": "on" if self.classifier is not None else
                "off (face encoder has no classification layer)",
                "f_dec": "trained decoder" if self.decoder is not None else "random"}

    def prepare(self) -> None:
        """Validation batches decoded once, before training (worker start-up included)."""
        if self.cfg.val_every <= self.cfg.steps:
            self.validation_batches()

    def registration(self) -> tuple[str, np.ndarray, str, str]:
        """(artifact name, example input, registered name, model card)."""
        waves = self.train.load(self.train.plan(0)[0][:2]).waves
        example = waves if self.takes_waves else spectrogram(waves, self.audio)
        if self.takes_waves:
            p = ge2e_provenance()
            what = ("Maps 16 kHz speech to a face feature through a pretrained GE2E speaker "
                    f"encoder ({p['ge2e_package']} {p['ge2e_version']}, {p['ge2e_weights_file']} "
                    f"sha256 {p['ge2e_weights_sha256'][:16]}…, "
                    f"{'fine-tuned' if self.cfg.ge2e_finetune else 'frozen'}) and a trained MLP "
                    f"head{HEAD_WITH_F0 if self.cfg.f0_input else ''}; decode it with the "
                    f"face decoder to draw a face. The speaker encoder was trained on "
                    f"{GE2E_TRAINED_ON}")
        else:
            what = ("Maps 16 kHz speech (compressed complex STFT) to a face feature through the "
                    "paper's CNN, trained from scratch; decode it with the face decoder to draw "
                    "a face.")
        return ("voice_encoder", example.numpy(), VOICE_ENCODER_NAME,
                model_card("voice encoder", what, self.cfg.model_dump_json()))


def train_voice_encoder(cfg: TrainConfig, layout: DataLayout, decoder: FaceDecoder | None = None,
                        classifier: nn.Module | None = None, resume: bool = False,
                        ckpt_dir: Path | None = None, stop_after: int | None = None,
                        tracker: NullTracker | None = None) -> TrainResult:
    """Train (or resume) the voice encoder for `cfg.steps` steps (`s2f.train.runner.run`).

    `stop_after` ends the run early after that many steps of this call (with a checkpoint), as
    an interruption would; the next `resume=True` call carries on."""
    return run(VoiceTrainer(cfg, layout, decoder, classifier, ckpt_dir), resume, stop_after,
               tracker)


if __name__ == "__main__":
    lay = DataLayout(Path(sys.argv[1]))
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    res = train_voice_encoder(TrainConfig(steps=steps, decoder="random", track=False), lay)
    print(res.step, res.train_loss, res.val, f"{res.seconds:.1f}s")
