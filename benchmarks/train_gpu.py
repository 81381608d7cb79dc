"""Throughput of the real training loops, model only and end to end, on a synthetic corpus.

    python -m benchmarks.train_gpu                   # CUDA: paper encoder, batch 64, 8 workers
    python -m benchmarks.train_gpu --tiny            # CPU stand-in: tiny model, seconds
    python -m benchmarks.train_gpu --json OUT.json   # also the rows as JSON

Builds a synthetic corpus on disk (`s2f.train.synthetic`: random-pitch FLAC cuts longer than
the window, face crops, features of the preset's dimension), then measures, for the voice
encoder (`s2f.train.voice.VoiceTrainer` / `train_voice_encoder`, tracking and registry off):
- model only: `train_step` on one fixed batch already on the device (spectrogram, forward,
  loss, backward, fused Adam, EMA; compiled on CUDA) - samples/s and MFU (3 x the forward's
  FLOPs per sample, counted by `macs_per_sample`, against `--peak` TFLOP/s: the H200's dense
  bf16 989);
- loader: the training stream decoded by `--workers` processes (`s2f.train.prefetch`) alone;
- end to end: `train_voice_encoder` for `--steps`, timed between two logged steps after the
  warm-up (the window holds validations and checkpoints: `--val-every`, `--val-batches`);
- peak GPU memory of each phase;
and the face decoder's end-to-end loop (`train_face_decoder`, fp32 and bf16 on CUDA).

Imports only torch, numpy, pyarrow, polars, pydantic, av, PIL and kornia (the decoder):
no Prefect, MLflow or DALI (loader "pyav").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2f.train.tracking import NullTracker

PAPER_PEAK_TFLOPS = 989.0  # H200 dense bf16


class StepClock(NullTracker):
    """Records when each training log step (metrics with a "loss") was reached; the loop reads
    its loss terms back there, so the GPU has finished that step."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if "loss" in metrics:
            self.times[step] = time.perf_counter()

    def rate(self, first: int, batch: int) -> float:
        """Samples/s from logged step `first` to the last logged step."""
        last = max(self.times)
        if first not in self.times or last <= first:
            raise ValueError(f"steps {sorted(self.times)}: none logged after warm-up {first}")
        return (last - first) * batch / (self.times[last] - self.times[first])


@dataclass
class Setup:
    preset: str
    batch: int
    steps: int
    warmup: int
    workers: int
    val_every: int
    val_batches: int
    clips: int
    device: str
    channels: list[int] | None = None
    fc_width: int | None = None
    dim: int = 4096
    decoder_batch: int = 32
    decoder_steps: int = 60
    decoder_preset: str = "paper"
    peak_tflops: float = PAPER_PEAK_TFLOPS
    profile: bool = False
    model_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def tiny_setup() -> Setup:
    return Setup(preset="small", batch=4, steps=12, warmup=4, workers=1, val_every=6,
                 val_batches=2, clips=16, device="cpu", channels=[4] * 6 + [8] * 3,
                 fc_width=32, dim=8, decoder_batch=4, decoder_steps=8, decoder_preset="small",
                 extra={"seconds": 1.0, "val_seconds": 1.0})


def build_corpus(root: Path, s: Setup, seconds: float) -> Any:
    from s2f.train.synthetic import SyntheticCorpus, build
    from storage.layout import DataLayout

    layout = DataLayout(root).ensure()
    marker = root / f"built-{s.clips}-{s.dim}-{seconds}"
    if not marker.exists():
        t0 = time.perf_counter()
        encoder = "vggface" if s.preset == "paper" else "dlib-resnet"
        build(layout, SyntheticCorpus(identities=s.clips, clips_per_identity=1, test_identities=2,
                                      dim=s.dim, seconds=seconds, encoder=encoder,
                                      shard_size=256))
        marker.touch()
        print(f"corpus: {s.clips} clips of {seconds:.1f} s in {time.perf_counter() - t0:.0f} s")
    return layout


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def voice_config(s: Setup, steps: int) -> Any:
    from s2f.train.config import TrainConfig

    over: dict[str, Any] = dict(
        batch_size=s.batch, steps=steps, device=s.device, decoder="random", track=False,
        register_model=False, audio_loader="pyav", loader_workers=s.workers,
        val_every=s.val_every, val_batches=s.val_batches, checkpoint_every=2 * s.val_every,
        log_every=min(10, s.warmup), dev_fraction=0.1, **s.extra)
    if s.channels is not None:
        over["channels"] = s.channels
    if s.fc_width is not None:
        over["fc_width"] = s.fc_width
    if s.preset == "paper":
        over["encoder"] = "vggface"
    return TrainConfig.preset_config(s.preset, **over)


def bench_voice(layout: Any, s: Setup, work: Path) -> dict[str, Any]:
    from s2f.models.voice_encoder import macs_per_sample
    from s2f.train.data import Batch
    from s2f.train.voice import VoiceTrainer

    cfg = voice_config(s, s.steps)
    cuda = torch.cuda.is_available() and s.device in ("auto", "cuda")
    row: dict[str, Any] = {"model": f"voice encoder ({s.preset})", "batch": s.batch,
                           "workers": s.workers, "compile": cfg.torch_compile and cuda,
                           "bf16": cfg.bf16}
    train_flop = 3 * 2 * macs_per_sample(cfg.encoder_config())  # fwd + bwd (2x fwd)
    row["gflop_per_sample_step"] = round(train_flop / 1e9, 1)

    # model only: the loop's own train_step on one batch already on the device
    tr = VoiceTrainer(cfg, layout, None, ckpt_dir=work / "model_only")
    device = tr.device
    row["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if s.model_rate is not None:  # measured in an earlier run (--model-rate): skip it here
        row["model_only_samples_s"], row["model_only_given"] = s.model_rate, True
        return bench_loader_and_e2e(layout, s, work, cfg, tr, row, s.model_rate)
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(s.batch, tr.audio.num_samples, generator=g).to(device)
    batch = Batch([""] * s.batch, waves, torch.randn(s.batch, tr.dim, generator=g).to(device))
    reset_peak(device)
    t0 = time.perf_counter()
    for _ in range(s.warmup):
        tr.train_step(batch)
    sync(device)
    row["warmup_s"] = round(time.perf_counter() - t0, 1)  # includes torch.compile
    n = max(s.steps - s.warmup, 1)
    t0 = time.perf_counter()
    pending = [tr.train_step(batch) for _ in range(n)]
    tr.host_terms(pending)
    sync(device)
    model_rate = n * s.batch / (time.perf_counter() - t0)
    row["model_only_samples_s"] = round(model_rate, 1)
    row["mfu_pct"] = round(100 * model_rate * train_flop / (s.peak_tflops * 1e12), 2)
    row["model_only_peak_gib"] = peak_gib(device)
    if s.profile and device.type == "cuda":
        row["profile"] = profile_steps(tr, batch)

    return bench_loader_and_e2e(layout, s, work, cfg, tr, row, model_rate)


def bench_loader_and_e2e(layout: Any, s: Setup, work: Path, cfg: Any, tr: Any,
                         row: dict[str, Any], model_rate: float) -> dict[str, Any]:
    from s2f.train.prefetch import prefetched
    from s2f.train.voice import train_voice_encoder

    device = tr.device
    # the loader alone: the training stream through the worker processes
    gen = prefetched(tr.train, workers=s.workers, pin=device.type == "cuda",
                     prefetch=cfg.loader_prefetch)
    t0, got, k = time.perf_counter(), 0, 0
    for _, _, b in gen:
        if k == s.workers:  # every worker has started and delivered once
            t0, got = time.perf_counter(), 0
        got += len(b.clip_keys)
        k += 1
        if k >= s.workers + max(8, 2 * s.workers):
            break
    loader_rate = got / (time.perf_counter() - t0)
    gen.close()
    row["loader_samples_s"] = round(loader_rate, 1)
    print(json.dumps(row), flush=True)  # model-only and loader, before the end-to-end run
    del tr
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # end to end: the real loop (loader, validation, checkpoints, EMA), timed after warm-up
    clock = StepClock()
    reset_peak(device)
    t0 = time.perf_counter()
    res = train_voice_encoder(cfg, layout, ckpt_dir=work / "e2e", tracker=clock)
    row["e2e_wall_s"] = round(time.perf_counter() - t0, 1)
    row["e2e_samples_s"] = round(clock.rate(s.warmup, s.batch), 1)
    row["e2e_over_model_pct"] = round(100 * row["e2e_samples_s"] / model_rate, 1)
    row["e2e_peak_gib"] = peak_gib(device)
    last = max(clock.times)
    row["validations_in_window"] = sum(1 for t in range(s.warmup + 1, last + 1)
                                       if t % s.val_every == 0)
    row["final_step"] = res.step
    return row


def profile_steps(tr: Any, batch: Any, steps: int = 5) -> list[tuple[str, float]]:
    """GPU time per kernel over `steps` model-only steps: the 15 largest (name, % of total)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        tr.host_terms([tr.train_step(batch) for _ in range(steps)])
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events) or 1.0
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    return [(e.key[:90], round(100 * e.self_device_time_total / total, 1)) for e in top]


def bench_decoder(layout: Any, s: Setup, work: Path, bf16: bool) -> dict[str, Any]:
    from s2f.train.config import DecoderTrainConfig
    from s2f.train.decoder import train_face_decoder

    cfg = DecoderTrainConfig(preset=s.decoder_preset, batch_size=s.decoder_batch,
                             steps=s.decoder_steps, device=s.device, track=False,
                             register_model=False, log_every=min(10, s.warmup),
                             checkpoint_every=10**9, dev_fraction=0.1, bf16=bf16,
                             loader_workers=s.workers,  # crops are decoded per batch (issue 26)
                             encoder="vggface" if s.preset == "paper" else "dlib-resnet")
    device = torch.device(s.device if s.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    clock = StepClock()
    reset_peak(device)
    t0 = time.perf_counter()
    train_face_decoder(cfg, layout, ckpt_dir=work / f"decoder-{bf16}", tracker=clock)
    return {"model": f"face decoder ({s.decoder_preset})", "batch": s.decoder_batch,
            "bf16": bf16 and device.type == "cuda",
            "e2e_samples_s": round(clock.rate(s.warmup, s.decoder_batch), 1),
            "e2e_wall_s": round(time.perf_counter() - t0, 1), "e2e_peak_gib": peak_gib(device)}


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["model", "batch", "workers", "model_only_samples_s", "mfu_pct", "loader_samples_s",
            "e2e_samples_s", "e2e_over_model_pct", "model_only_peak_gib", "e2e_peak_gib",
            "warmup_s", "bf16"]
    fmt = [lambda v: "" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt[0](r.get(c)) for c in cols) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU stand-in: tiny model and corpus")
    ap.add_argument("--preset", default="paper", choices=["paper", "small"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=220)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--workers", type=int, default=None, dest="workers_set",
                    help="loader processes (default: cpu count - 4, at most 10; --tiny: 1)")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--val-batches", type=int, default=4)
    ap.add_argument("--clips", type=int, default=640)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak", type=float, default=PAPER_PEAK_TFLOPS, help="TFLOP/s for MFU")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--skip-decoder", action="store_true")
    ap.add_argument("--model-rate", type=float, default=None,
                    help="model-only samples/s measured before: skip that phase")
    ap.add_argument("--profile", action="store_true", help="kernel breakdown of the step (CUDA)")
    ap.add_argument("--work", type=Path, default=None, help="corpus and checkpoints (a temp dir)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.tiny:
        s = tiny_setup()
    else:
        s = Setup(preset=args.preset, batch=args.batch, steps=args.steps, warmup=args.warmup,
                  workers=(args.workers_set if args.workers_set is not None
                           else min(10, max(1, (os.cpu_count() or 2) - 4))), val_every=args.val_every, val_batches=args.val_batches,
                  clips=args.clips, device=args.device,
                  dim=4096 if args.preset == "paper" else 128,
                  decoder_preset=args.preset, peak_tflops=args.peak)
    s.profile = args.profile
    s.model_rate = args.model_rate
    if args.tiny and args.workers_set is not None:
        s.workers = args.workers_set
    if args.no_compile:
        s.extra["torch_compile"] = False
    work = args.work or Path(tempfile.mkdtemp(prefix="s2f-train-gpu-"))
    seconds = float(s.extra.get("seconds", 6.0 if s.preset == "paper" else 3.0))
    layout = build_corpus(work / "data", s, seconds=seconds * 4 / 3)  # longer: random crops
    torch.manual_seed(0)
    np.random.seed(0)
    rows = [bench_voice(layout, s, work)]
    print(json.dumps(rows[-1]), flush=True)
    if not args.skip_decoder:
        cuda = (s.device == "auto" and torch.cuda.is_available()) or s.device.startswith("cuda")
        for bf16 in ((False, True) if cuda else (False,)):
            rows.append(bench_decoder(layout, s, work, bf16))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
