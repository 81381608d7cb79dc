"""Training of the face decoder (Cole et al. 2017) on faces ⋈ face_features.

    features → decoder → (texture, landmarks, image)
    targets: texture = crop warped to the mean shape (TPS), landmarks = the crop's landmarks,
             image = the crop
    loss = L1 texture + λ landmark MSE + L1 image (s2f.models.losses.face_decoder_loss)

The mean shape (mean training landmarks) is stored in the model. Checkpoints and resume as in
`loop.py` (the batch order of epoch e depends only on (seed, e)). The decoder is then frozen
while the voice encoder trains; its `first_layer` is the loss's f_dec.

    python -m s2f.train.decoder_loop DATA_DIR [STEPS]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from s2f.models.face_decoder import FaceDecoder, FaceDecoderConfig, to_mean_shape
from s2f.models.losses import face_decoder_loss_terms
from s2f.progress import TrainProgress
from s2f.train import checkpoint
from s2f.train.checkpoint import RunResult
from s2f.train.config import DecoderTrainConfig, resolve_device
from s2f.train.face_data import FaceSet, load_face_set
from s2f.train.readback import Terms, host_floats
from s2f.train.tracking import (
    FACE_DECODER_MODEL,
    NullTracker,
    data_snapshot_id,
    git_commit,
    image_grid,
    loss_figure,
    make_tracker,
)
from storage.layout import DataLayout


def load_decoder(path: Path, device: str | torch.device = "cpu") -> FaceDecoder:
    """A trained decoder from its checkpoint (a file or a directory with last.pt)."""
    ck = checkpoint.load_checkpoint(path, device)
    model = FaceDecoder(FaceDecoderConfig(**json.loads(ck["decoder_config"])))
    model.load_state_dict(ck["model"])
    return model.to(device).eval()


def _batch_order(n: int, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i:i + batch] for i in range(0, n - batch + 1, batch)] or [perm]


def _evaluate(model: FaceDecoder, data: FaceSet, cfg: DecoderTrainConfig,
              device: torch.device) -> dict[str, float]:
    if len(data) == 0:
        return {}
    model.eval()
    with torch.no_grad():
        idx = torch.arange(len(data))
        terms = host_floats([_step_loss(model, data, idx, cfg, device)[1]])[0]
    return {f"val_{k}": v for k, v in terms.items()}


def _step_loss(model: FaceDecoder, data: FaceSet, idx: torch.Tensor, cfg: DecoderTrainConfig,
               device: torch.device) -> tuple[torch.Tensor, Terms]:
    """The loss and its terms (tensors on the device: no host sync). `bf16` autocasts the
    decoder's forward on CUDA; the loss is taken in float32."""
    img = data.images(idx).to(device, non_blocking=True)
    lm = data.landmarks[idx].to(device, non_blocking=True)
    with torch.no_grad():
        tex_target = to_mean_shape(img, lm, model.mean_shape)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.bf16):
        texture, landmarks, image = model(data.features[idx].to(device, non_blocking=True),
                                          detach_warp=True)
    return face_decoder_loss_terms(texture.float(), landmarks.float(),
                                   None if image is None else image.float(), tex_target, lm,
                                   img, cfg.loss_config())  # type: ignore[return-value]


def train_face_decoder(cfg: DecoderTrainConfig, layout: DataLayout, resume: bool = False,
                       ckpt_dir: Path | None = None, stop_after: int | None = None,
                       tracker: NullTracker | None = None) -> RunResult[FaceDecoder]:
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    probe = cfg.decoder_config(1)
    train = load_face_set(layout, cfg.encoder, "train", cfg.dev_fraction, probe.image_size)
    val = load_face_set(layout, cfg.encoder, "dev", cfg.dev_fraction, probe.image_size)
    if len(train) == 0:
        raise ValueError(f"no faces with {cfg.encoder!r} features under {layout.root}")
    model = FaceDecoder(cfg.decoder_config(train.features.shape[1]),
                        mean_shape=train.landmarks.mean(dim=0)).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest conv kernels, once
    # fused Adam on CUDA (one kernel for all parameters); CPU keeps torch's default
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999),
                           eps=cfg.adam_eps, fused=True if cuda else None)
    ckpt_dir = ckpt_dir or checkpoint.checkpoint_dir(layout, "face_decoder")
    step, epoch, batch_no = 0, 0, 0
    if resume and (p := checkpoint.latest(ckpt_dir)) is not None:
        ck = checkpoint.load_checkpoint(p, device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        checkpoint.set_rng_state(ck["rng"])
        step, epoch, batch_no = int(ck["step"]), int(ck["epoch"]), int(ck["batch"])

    def save() -> Path:
        return checkpoint.save_checkpoint(ckpt_dir, {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "rng": checkpoint.rng_state(),
            "step": step, "epoch": epoch, "batch": batch_no, "config": cfg.model_dump_json(),
            "decoder_config": json.dumps(model.cfg.to_dict())})

    own = tracker is None
    tracker = tracker or make_tracker(cfg.track, cfg.run_name, layout)
    history: dict[str, list[tuple[int, float]]] = {"train_loss": []}
    recent: list[float] = []
    pending: list[Terms] = []  # steps not yet read back from the device (read every log_every)
    status, version = "FAILED", None
    progress = TrainProgress("face decoder", cfg.steps, step, cfg.batch_size)
    try:
        tracker.log_params({**{f"decoder.{k}": v for k, v in cfg.flat().items()},
                            "data_snapshot": data_snapshot_id(layout, ("clips", "faces",
                                                                       "face_features")),
                            "git_commit": git_commit() or "unknown", "train_faces": len(train),
                            "val_faces": len(val), "resumed_at": step})
        done = 0
        while step < cfg.steps and not (stop_after is not None and done >= stop_after):
            order = _batch_order(len(train), cfg.batch_size, cfg.seed, epoch)
            if batch_no >= len(order):
                epoch, batch_no = epoch + 1, 0
                continue
            model.train()
            loss, terms = _step_loss(model, train, torch.from_numpy(order[batch_no]), cfg, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, batch_no, done = step + 1, batch_no + 1, done + 1
            pending.append(terms)
            stop = step >= cfg.steps or (stop_after is not None and done >= stop_after)
            if step % cfg.log_every == 0 or stop:
                logged, pending = host_floats(pending), []
                recent = (recent + [t["loss"] for t in logged])[-cfg.log_every:]
                for t in logged:  # the bar advances as terms are read back
                    progress.step(t["loss"])
            if step % cfg.log_every == 0:
                tracker.log_metrics(logged[-1], step)
                history["train_loss"].append((step, float(np.mean(recent))))
            if step % cfg.checkpoint_every == 0:
                save()
        ckpt = save()
        metrics = _evaluate(model, val, cfg, device)
        progress.validated(metrics.get("val_loss"))
        progress.close()
        tracker.log_metrics(metrics, step)
        tracker.log_figure(loss_figure(history, "face decoder"), "plots/decoder_loss.png")
        show = val if len(val) else train
        k = min(6, len(show))
        with torch.no_grad():
            model.eval()
            _, _, recon = model(show.features[:k].to(device))
        assert recon is not None
        tracker.log_figure(image_grid({"true face": show.images(torch.arange(k)),
                                       "decoder(face feature)": recon}, "face decoder"),
                           "plots/decoder_faces.png")
        if cfg.register_model and step >= cfg.steps:
            from s2f.train.loop import _card

            version = tracker.log_model(model, "face_decoder",
                                        train.features[:2].numpy(), FACE_DECODER_MODEL,
                                        _card("face decoder", cfg.model_dump_json()))
        status = "FINISHED"
    finally:
        progress.close()
        if own:
            tracker.finish(status)
    return RunResult(step, float(np.mean(recent)) if recent else float("nan"), metrics,
                         ckpt, model, history, tracker.run_id, version,
                         time.perf_counter() - t0)


if __name__ == "__main__":
    lay = DataLayout(Path(sys.argv[1]))
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    r = train_face_decoder(DecoderTrainConfig(steps=steps, track=False), lay)
    print(r.step, r.train_loss, r.val, f"{r.seconds:.1f}s")
