"""Training of the face decoder (Cole et al. 2017) on faces ⋈ face_features.

    features → decoder → (texture, landmarks, image)
    targets: texture = crop warped to the mean shape (TPS), landmarks = the crop's landmarks,
             image = the crop
    loss = L1 texture + λ landmark MSE + L1 image (s2f.models.losses.face_decoder_loss)

The mean shape (mean training landmarks) is stored in the model. `DecoderTrainer` is the
decoder's step, validation and state; `s2f.train.runner.run` owns the loop (checkpoints and
resume as for the voice encoder, one folder per run identity: the batch order of epoch e
depends only on (seed, e)). Training faces are streamed from the shards (`s2f.train.face_data.
FaceStream`: a seeded shard order, a shuffle window of `shuffle_rows` faces, crops decoded per
batch, by `loader_workers` processes when there are any); the dev faces (at most
`face_data.DEV_FACES_MAX`) are decoded once and kept. The decoder validates once, at the end,
`DEV_BATCH` faces per forward. It is then frozen while the voice encoder trains; its
`first_layer` is the loss's f_dec.

    python -m s2f.train.decoder DATA_DIR [STEPS]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from s2f.devices import resolve_device
from s2f.models.face_decoder import FaceDecoder, FaceDecoderConfig, to_mean_shape
from s2f.models.losses import face_decoder_loss_terms
from s2f.registry.names import FACE_DECODER_NAME
from s2f.train import checkpoint
from s2f.train.checkpoint import RunResult
from s2f.train.config import DecoderTrainConfig
from s2f.train.face_data import FaceBatch, FaceStream, resident_faces
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


def load_decoder(path: Path, device: str | torch.device = "cpu") -> FaceDecoder:
    """A trained decoder from its checkpoint: a file, a run folder with last.pt, or the
    model folder (`checkpoint_dir(layout, "face_decoder")`: the run last written)."""
    ck = checkpoint.load_checkpoint(path, device)
    model = FaceDecoder(FaceDecoderConfig(**json.loads(ck["decoder_config"])))
    model.load_state_dict(ck["model"])
    return model.to(device).eval()


# Dev faces per validation forward: bounds its activations (at 224², a few GB on the GPU);
# the demo's dev faces are one forward. The terms are means over faces: chunks are weighted by
# their size, so the chunking changes no value beyond float rounding.
DEV_BATCH = 128


class DecoderTrainer:
    """The face decoder's model, optimiser and face sets: its `s2f.train.runner.Trainer`."""

    label, loss_plot, final_prefix = "face decoder", "plots/decoder_loss.png", ""
    val_every: int | None = None  # validated once, at the end
    is_main = True

    def __init__(self, cfg: DecoderTrainConfig, layout: DataLayout,
                 ckpt_dir: Path | None = None) -> None:
        self.cfg, self.layout = cfg, layout
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        size = cfg.decoder_config(1).image_size
        self.train = FaceStream(layout, cfg.encoder, "train", cfg.dev_fraction, size,
                                cfg.batch_size, cfg.seed, cfg.shuffle_rows)
        if self.train.faces == 0:
            raise ValueError(f"no faces with {cfg.encoder!r} features under {layout.root}")
        dev = FaceStream(layout, cfg.encoder, "dev", cfg.dev_fraction, size, cfg.batch_size)
        self.dev_faces = dev.faces  # all of dev; `valid` holds up to DEV_FACES_MAX of them
        self.valid = resident_faces(dev)
        self.example = self.train.load(np.arange(min(2, self.train.faces)))  # registration's input
        self.model = FaceDecoder(cfg.decoder_config(self.example.features.shape[1]),
                                 mean_shape=self.train.mean_landmarks()).to(self.device)
        self.kept = KeptWeights(self.model, None)  # no EMA, no selection: the last weights
        self.cuda = self.device.type == "cuda"
        # the training forward compiled with `torch_compile` on CUDA (one shape: compiles
        # once); validation and export use the eager module, which shares its weights
        self.train_model = cast(FaceDecoder, torch.compile(self.model)) \
            if cfg.torch_compile and self.cuda else self.model
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest conv kernels, once
        # fused Adam on CUDA (one kernel for all parameters); CPU keeps torch's default
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999),
                                    eps=cfg.adam_eps, fused=True if self.cuda else None)
        # one folder per run identity (seed, config, inputs); the model folder's LATEST names
        # the run last written, the decoder `load_decoder(checkpoint_dir(...))` reads
        self.fingerprint = input_fingerprint(layout, ("clips", "faces", "face_features"))
        self.identity = checkpoint.run_identity(cfg, self.fingerprint)
        self.ckpt_dir = ckpt_dir or checkpoint.run_checkpoint_dir(layout, "face_decoder",
                                                                  self.identity)
        self.writer = checkpoint.CheckpointWriter()
        self.step, self.epoch, self.batch = 0, 0, 0

    def training_batches(self) -> Iterator[tuple[int, int, FaceBatch]]:
        """(epoch, batch number, faces) from the resume point on, without end, decoded by
        `loader_workers` processes (0: in this one). Close it to stop the workers."""
        return prefetched(self.train, self.epoch, self.batch, workers=self.cfg.loader_workers,
                          pin=self.cuda, prefetch=self.cfg.loader_prefetch)

    def prepare(self) -> None:
        """Nothing to load ahead: the dev faces are decoded at start, training faces per batch."""

    def train_step(self, batch: FaceBatch) -> Terms:
        self.model.train()
        loss, terms = self.step_loss(self.train_model, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return terms

    def host_terms(self, pending: list[Terms]) -> list[dict[str, float]]:
        return host_floats(pending)

    def step_loss(self, model: FaceDecoder, batch: FaceBatch) -> tuple[torch.Tensor, Terms]:
        """The loss and its terms (tensors on the device: no host sync). `bf16` autocasts the
        decoder's forward on CUDA; the loss is taken in float32. Crops travel as uint8."""
        img = batch.crops.to(self.device, non_blocking=True).float() / 255.0
        lm = batch.landmarks.to(self.device, non_blocking=True)
        with torch.no_grad():
            tex_target = to_mean_shape(img, lm, model.mean_shape)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.cfg.bf16):
            texture, landmarks, image = model(batch.features.to(self.device, non_blocking=True),
                                              detach_warp=True)
        return face_decoder_loss_terms(texture.float(), landmarks.float(),
                                       None if image is None else image.float(), tex_target, lm,
                                       img, self.cfg.loss_config())  # type: ignore[return-value]

    def validate(self, module: FaceDecoder | None = None) -> dict[str, float]:
        """The loss terms over the kept dev faces, `DEV_BATCH` per forward, weighted by size."""
        if self.valid is None:
            return {}
        model = (module or self.model).eval()
        n = len(self.valid)
        with torch.no_grad():
            chunks = [self.valid.take(slice(i, i + DEV_BATCH)) for i in range(0, n, DEV_BATCH)]
            per_chunk = host_floats([self.step_loss(model, c)[1] for c in chunks])
        if len(chunks) == 1:  # one forward: its own means (no re-weighting to round)
            terms = per_chunk[0]
        else:
            terms = {k: sum(len(c) * t[k] for c, t in zip(chunks, per_chunk, strict=True)) / n
                     for k in per_chunk[0]}
        return {f"val_{k}": v for k, v in terms.items()}

    # -- checkpoints --------------------------------------------------------------------------
    def save(self) -> Path:
        return self.writer.submit(self.ckpt_dir, {  # written in the background
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "rng": checkpoint.rng_state(), "step": self.step, "epoch": self.epoch,
            "batch": self.batch, "config": self.cfg.model_dump_json(),
            "identity": self.identity.as_dict(), "decoder_config": json.dumps(self.model.cfg.to_dict())})

    def resume(self) -> bool:
        """Continue from `<ckpt_dir>/last.pt` if there is one (`ResumeMismatch` if it is
        another run's)."""
        self.writer.join()  # a write in flight is the newest last.pt
        p = checkpoint.latest(self.ckpt_dir)
        if p is None:
            return False
        ck = checkpoint.load_checkpoint(p, self.device)
        checkpoint.check_identity(ck, self.identity, self.cfg, self.ckpt_dir)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        checkpoint.set_rng_state(ck["rng"])
        self.step, self.epoch, self.batch = int(ck["step"]), int(ck["epoch"]), int(ck["batch"])
        return True

    # -- the run's records ------------------------------------------------------------------
    def run_params(self) -> dict[str, Any]:
        return {**{f"decoder.{k}": v for k, v in self.cfg.flat().items()},
                "input_fingerprint": self.fingerprint,
                "decoder.config_hash": self.identity.config_hash,
                "git_commit": git_commit() or "unknown", "train_faces": self.train.faces,
                "dev_faces": self.dev_faces, "val_faces": len(self.valid or ()),
                "resumed_at": self.step}

    def run_tags(self) -> dict[str, str]:
        return {}

    @torch.no_grad()
    def sample_images(self, k: int = 6) -> tuple[str, str, dict[str, torch.Tensor]]:
        """(artifact path, title, rows): dev faces (train's when there are none) and the
        decoder's reconstruction from their features."""
        show = (self.valid.take(slice(0, k)) if self.valid is not None
                else self.train.load(np.arange(min(k, self.train.faces))))
        self.model.eval()
        _, _, recon = self.model(show.features.to(self.device))
        assert recon is not None
        return ("plots/decoder_faces.png", "face decoder",
                {"true face": show.images(), "decoder(face feature)": recon})

    def export_model(self) -> FaceDecoder:
        return self.model

    def registration(self) -> tuple[str, np.ndarray, str, str]:
        """(artifact name, example input, registered name, model card)."""
        return ("face_decoder", self.example.features.numpy(), FACE_DECODER_NAME,
                model_card("face decoder", "Maps a face feature to a frontal face image "
                           "(Cole et al. 2017).", self.cfg.model_dump_json()))


def train_face_decoder(cfg: DecoderTrainConfig, layout: DataLayout, resume: bool = False,
                       ckpt_dir: Path | None = None, stop_after: int | None = None,
                       tracker: NullTracker | None = None) -> RunResult[FaceDecoder]:
    """Train (or resume) the face decoder for `cfg.steps` steps (`s2f.train.runner.run`)."""
    return run(DecoderTrainer(cfg, layout, ckpt_dir), resume, stop_after, tracker)


if __name__ == "__main__":
    lay = DataLayout(Path(sys.argv[1]))
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    r = train_face_decoder(DecoderTrainConfig(steps=steps, track=False), lay)
    print(r.step, r.train_loss, r.val, f"{r.seconds:.1f}s")
