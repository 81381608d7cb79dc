"""Training-step throughput of the voice encoder (small and paper presets) and the paper
encoder's cost per sample, counted analytically (conv and fc multiply-accumulates).

    python benchmarks/train.py [--steps 3] [--paper-batch 1] [--device auto] [--json OUT]

A step = spectrogram on the device + forward + the Speech2Face loss + backward + Adam, on
random audio (no data loading). FLOPs = 2 × MACs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from s2f.devices import resolve_device
from s2f.media.audio import spectrogram
from s2f.models.losses import speech2face_loss
from s2f.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig, macs_per_sample
from s2f.train.config import TrainConfig


def bench(preset: str, batch: int, steps: int, device: torch.device,
          channels_last: bool) -> dict[str, object]:
    cfg = TrainConfig.preset_config(preset, batch_size=batch)
    enc_cfg = cfg.encoder_config()
    model = VoiceEncoder(enc_cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    f_dec = torch.nn.Linear(enc_cfg.out_dim, 1000 if preset == "paper" else 256).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                           eps=cfg.adam_eps)
    audio = cfg.audio_config()
    waves = torch.randn(batch, audio.num_samples)
    target = torch.randn(batch, enc_cfg.out_dim, device=device)
    use_bf16 = device.type == "cuda" and cfg.bf16

    def step() -> float:
        spec = spectrogram(waves.to(device), audio)
        if channels_last:
            spec = spec.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            v_s = model(spec).float()
        loss, _ = speech2face_loss(v_s, target, f_dec)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    macs = macs_per_sample(enc_cfg)
    return {"preset": preset, "device": str(device), "batch": batch, "channels_last": channels_last,
            "bf16": use_bf16, "s_per_step": round(dt, 4),
            "samples_per_s": round(batch / dt, 2), "gmac_per_sample_fwd": round(macs / 1e9, 3),
            "gflop_per_sample_fwd": round(2 * macs / 1e9, 3),
            "frames": enc_cfg.num_frames, "fc_in": VoiceEncoder.freq_out(enc_cfg) *
            enc_cfg.channels[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--small-batch", type=int, default=8)
    ap.add_argument("--paper-batch", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    paper = VoiceEncoderConfig.paper()
    print(f"paper voice encoder: {macs_per_sample(paper) / 1e9:.2f} GMAC "
          f"= {2 * macs_per_sample(paper) / 1e9:.1f} GFLOP per sample forward (6 s, 598x257)")
    rows = []
    for cl in (False, True):
        rows.append(bench("small", args.small_batch, args.steps, device, cl))
        print(json.dumps(rows[-1]))
    if not args.skip_paper:
        rows.append(bench("paper", args.paper_batch, max(1, args.steps // 2), device, True))
        print(json.dumps(rows[-1]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
