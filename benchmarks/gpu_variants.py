"""Each GPU change of issue 27 side by side, in one run: model-only samples/s and MFU of the
voice encoder's real `train_step` per variant, then evaluation's clips/s on the GPU and the CPU.

    python -m benchmarks.gpu_variants                    # CUDA: the paper encoder, every variant
    python -m benchmarks.gpu_variants --tiny             # CPU stand-in: tiny model, seconds
    python -m benchmarks.gpu_variants --only eager compile --json OUT.json

Variants (`VARIANTS`): eager bf16; `torch.compile` default (the shipped setting); without
channels-last; `mode="reduce-overhead"` (CUDA graphs); `mode="max-autotune-no-cudagraphs"`
(Triton/cuDNN autotuning, minutes to compile); batches 128 and 256 (model-only throughput does
not depend on the learning rate; a run at those batches would scale it, linearly with the
batch, and say so). Each is a fresh `VoiceTrainer` on one fixed batch already on the device,
`--warmup` steps (compilation included, reported as `warmup_s`) then `--steps` timed steps; a
row is printed as soon as it is measured, so a run stopped by its time limit keeps its rows.

Evaluation rows (first): `s2f.registry.inference.encode_waves` (the paper encoder in eval mode, 6 s
clips, random weights: speed only) on the GPU (32 per batch) and the CPU (8), and the paper
protocol's three rankings (`s2f.evaluation.metrics.distance_ranks`: numpy on the CPU,
`device_ranks` on the GPU) for `--rank-queries` queries against a `--rank-pool` pool.

Imports torch, numpy, pyarrow, polars, pydantic, av (no Prefect, MLflow or DALI). The figures
are unmeasured until a GPU session runs `bash benchmarks/gpu_check.sh` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.train_gpu import (
    PAPER_PEAK_TFLOPS,
    Setup,
    build_corpus,
    peak_gib,
    reset_peak,
    sync,
    tiny_setup,
    voice_config,
)


@dataclass(frozen=True)
class Variant:
    name: str
    batch: int = 64
    compile_mode: str | None = "default"  # None: eager
    channels_last: bool = True


# in the order they run: the slowest to compile last, so a time limit costs the fewest rows
VARIANTS = (
    Variant("eager", compile_mode=None),
    Variant("compile"),
    Variant("compile, no channels-last", channels_last=False),
    Variant("compile, batch 128", batch=128),
    Variant("compile, batch 256", batch=256),
    Variant("compile reduce-overhead", compile_mode="reduce-overhead"),
    Variant("compile max-autotune", compile_mode="max-autotune-no-cudagraphs"),
)


def variant_row(layout: Any, s: Setup, v: Variant, work: Path, warmup: int,
                steps: int) -> dict[str, Any]:
    """Model-only samples/s and MFU of the real `train_step` under variant `v`."""
    from s2f.models.voice_encoder import macs_per_sample
    from s2f.train.data import Batch
    from s2f.train.voice import VoiceTrainer

    s = Setup(**{**s.__dict__, "batch": v.batch})
    cfg = voice_config(s, steps).model_copy(update={"torch_compile": False,
                                                    "channels_last": v.channels_last})
    tr = VoiceTrainer(cfg, layout, None, ckpt_dir=work / v.name.replace(" ", "_"))
    cuda = tr.device.type == "cuda"
    if v.compile_mode is not None and cuda:  # the trainer's own compile, with the mode asked
        tr.train_net = torch.compile(tr.net, mode=v.compile_mode)
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(v.batch, tr.audio.num_samples, generator=g).to(tr.device)
    batch = Batch([""] * v.batch, waves, torch.randn(v.batch, tr.dim, generator=g).to(tr.device))
    reset_peak(tr.device)
    t0 = time.perf_counter()
    tr.host_terms([tr.train_step(batch) for _ in range(warmup)])
    sync(tr.device)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr.host_terms([tr.train_step(batch) for _ in range(steps)])
    sync(tr.device)
    rate = steps * v.batch / (time.perf_counter() - t0)
    flop = 3 * 2 * macs_per_sample(cfg.encoder_config())
    row = {"variant": v.name, "batch": v.batch, "compiled": v.compile_mode is not None and cuda,
           "samples_s": round(rate, 1),
           "mfu_pct": round(100 * rate * flop / (s.peak_tflops * 1e12), 2),
           "warmup_s": round(warmup_s, 1), "peak_gib": peak_gib(tr.device)}
    del tr
    if cuda:
        torch.cuda.empty_cache()
    return row


def eval_rows(s: Setup, clips: int, cpu_clips: int, queries: int, pool: int
              ) -> list[dict[str, Any]]:
    """Evaluation's clips/s (encoder) and queries/s (ranking) on the GPU, then the CPU."""
    from s2f.evaluation.metrics import distance_ranks
    from s2f.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig
    from s2f.registry.inference import LoadedModel, ModelRef, encode_waves

    over: dict[str, Any] = {} if s.channels is None else {
        "channels": tuple(s.channels), "fc_width": s.fc_width, "out_dim": s.dim}
    net = VoiceEncoder(VoiceEncoderConfig.preset(s.preset, **over)).eval()
    rng = np.random.default_rng(0)
    seconds = net.cfg.seconds
    waves = [rng.normal(size=int(16000 * seconds)).astype(np.float32) for _ in range(clips)]
    feats = rng.normal(size=(pool, s.dim)).astype(np.float32)
    target = np.arange(queries) % pool
    ref = ModelRef("benchmark", None, None, None)
    devices = (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    rows = []
    for dev in devices:
        n = clips if dev == "cuda" else min(cpu_clips, clips)
        model = LoadedModel(ref, net.to(dev))
        encode_waves(model, waves[:2], seconds, batch_size=2)  # cuDNN plans, allocator
        sync(torch.device(dev))
        t0 = time.perf_counter()
        encode_waves(model, waves[:n], seconds, batch_size=32 if dev == "cuda" else 8)
        sync(torch.device(dev))
        row = {"variant": f"evaluation encoder on {dev}", "batch": 32 if dev == "cuda" else 8,
               "clips_s": round(n / (time.perf_counter() - t0), 2)}
        q = queries if dev == "cuda" else min(queries, 500)
        t0 = time.perf_counter()
        for distance in ("l2", "l1", "cosine"):
            distance_ranks(feats[target[:q]], feats, target[:q], distance,  # type: ignore[arg-type]
                           device=torch.device(dev) if dev == "cuda" else None)
        row["rank_queries_s"] = round(q / (time.perf_counter() - t0), 1)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["variant", "batch", "compiled", "samples_s", "mfu_pct", "warmup_s", "peak_gib",
            "clips_s", "rank_queries_s"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r.get(c) for c in cols]
        out.append("| " + " | ".join("" if v is None else (f"{v:.2f}" if isinstance(v, float)
                                                           else str(v)) for v in cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU stand-in: tiny model and corpus")
    ap.add_argument("--only", nargs="*", default=None, help="variant names to run (prefixes)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip-eval", action="store_true", help="no evaluation rows")
    ap.add_argument("--eval-clips", type=int, default=512)
    ap.add_argument("--eval-cpu-clips", type=int, default=16)
    ap.add_argument("--rank-queries", type=int, default=5000)
    ap.add_argument("--rank-pool", type=int, default=5000)
    ap.add_argument("--peak", type=float, default=PAPER_PEAK_TFLOPS, help="TFLOP/s for MFU")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    s = tiny_setup() if args.tiny else Setup(
        preset="paper", batch=64, steps=args.steps, warmup=args.warmup, workers=0, val_every=100,
        val_batches=1, clips=64, device="auto", peak_tflops=args.peak)
    s.workers = 0
    work = args.work or Path(tempfile.mkdtemp(prefix="s2f-gpu-variants-"))
    seconds = float(s.extra.get("seconds", 6.0))
    layout = build_corpus(work / "data", s, seconds=seconds * 4 / 3)
    variants = [v for v in VARIANTS if args.only is None
                or any(v.name.startswith(o) for o in args.only)]
    if args.tiny:  # the stand-in: small batches, the CPU (no compile there)
        variants = [Variant(v.name, min(8, 4 * v.batch // 64), v.compile_mode, v.channels_last)
                    for v in variants]
    rows: list[dict[str, Any]] = []

    def keep(row: dict[str, Any]) -> None:  # printed and saved at once: a timeout keeps it
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))

    if not args.skip_eval:  # first: seconds, where max-autotune may take minutes
        for row in eval_rows(s, args.eval_clips if not args.tiny else 8,
                             args.eval_cpu_clips if not args.tiny else 4,
                             args.rank_queries if not args.tiny else 64,
                             args.rank_pool if not args.tiny else 64):
            keep(row)
    for v in variants:
        keep(variant_row(layout, s, v, work, args.warmup if not args.tiny else 1,
                         args.steps if not args.tiny else 2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
