"""What `s2f demo` will do and roughly how long it takes here, said before it starts.

Each stage's cost is the one measured for the default demo (README, "Two commands": 2 idle
x86_64 cores, no GPU) scaled by the amount of work asked for (identities, clips, training
steps) and by this machine's speed: one quick timing of the voice encoder's training step
(the demo's largest cost), taken now, against the same timing on the reference machine. A
machine shared with other jobs shows up in that timing, so the estimate follows the load it
starts under, not later changes.

    python -m s2f.demo_estimate [IDENTITIES [TRAIN_STEPS]]    # prints the plan and the estimate
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The default demo as measured (README, `time .venv/bin/s2f demo`, 2 idle x86_64 cores, no GPU,
# 10 min 41 s wall): 400 identities × 1 clip, decoder 400 steps, voice encoder 800 steps (one
# seed; the shuffled-voice control's steps, as many as the model's by default, are scaled from
# it), each trained model evaluated on dev and test; seconds per stage.
REF_IDENTITIES, REF_CLIPS = 400, 400
REF_DECODER_STEPS, REF_TRAIN_STEPS = 400, 800
REF_SECONDS = {"corpus": 197.0, "ingest": 7.0, "preprocess": 31.0, "decoder": 20.0,
               "voice": 275.0, "evaluate": 20.0, "start-up and the rest": 30.0}
# `quick_timing()` on that machine, idle, right after that run (seconds).
REF_STEP_SECONDS = 0.416


def quick_timing(reps: int = 2) -> float:
    """Seconds of one small-preset voice encoder training step (batch 8, 3 s), best of
    `reps`: what the demo's longest stage repeats 800 times."""
    import torch

    from s2f.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig

    cfg = VoiceEncoderConfig.small()
    torch.manual_seed(0)
    model = VoiceEncoder(cfg)
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(8, 2, cfg.num_frames, cfg.num_bins)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    return best


@dataclass
class DemoEstimate:
    stages: dict[str, float]    # seconds per stage on this machine
    speed: float                # this machine's step time / the reference's (1 = as measured)

    @property
    def total(self) -> float:
        return sum(self.stages.values())


def estimate(identities: int, clips_per_identity: int, corpus_exists: bool,
             decoder_steps: int | None, train_steps: int | None,
             step_seconds: float | None = None, seeds: int = 1,
             control_steps: int | None = 0) -> DemoEstimate:
    """`seeds` voice encoders and, unless `control_steps` is 0, the shuffled-voice control
    (None: as many steps as the model, as the demo's default); each trained model is
    evaluated on dev and test."""
    speed = (step_seconds if step_seconds is not None else quick_timing()) / REF_STEP_SECONDS
    clips = identities * clips_per_identity
    steps = train_steps or REF_TRAIN_STEPS
    control = steps if control_steps is None else control_steps
    models = seeds + (control > 0)
    work = {"corpus": 0.0 if corpus_exists else clips / REF_CLIPS,
            "ingest": clips / REF_CLIPS, "preprocess": clips / REF_CLIPS,
            "decoder": (decoder_steps or REF_DECODER_STEPS) / REF_DECODER_STEPS,
            "voice": (seeds * steps + control) / REF_TRAIN_STEPS,
            "evaluate": models * clips / REF_CLIPS, "start-up and the rest": 1.0}
    return DemoEstimate({k: REF_SECONDS[k] * work[k] * speed for k in REF_SECONDS}, speed)


# `s2f real-pairs` on the shared copy of the page (1,030 pairs + 398 faces), measured the same
# way: seconds per pair and per image beyond the demo's per-stage costs.
PAIRS_SECONDS_PER_IMAGE = 0.08      # preprocess: one face image through detect/align/embed
PAIRS_EVAL_SECONDS_PER_CLIP = 1.0   # evaluation extras per scored clip (4 images + demographics)


def count_pairs(pairs_dir: Path) -> tuple[int, int]:
    """(voice-face pairs, face images) of a directory in the page's layout, by listing."""
    audio = sum(1 for f in ("avspeech_res", "voxceleb") for p in (pairs_dir / f / "Wav").glob("*")
                if p.suffix.lower() in (".wav", ".flac"))
    faces = sum(1 for p in pairs_dir.glob("*/Face_ori/*") if p.is_file())
    return audio, faces


def real_pairs_estimate(pairs_dir: Path, preset: str, decoder_steps: int | None,
                        train_steps: int, seeds: int, control_steps: int,
                        step_seconds: float | None = None) -> str:
    """The run time of `s2f real-pairs` here, as text: the demo's per-stage costs scaled by the
    pairs' count and this machine's quick timing (the small preset only; `paper` says so)."""
    from s2f.progress import format_duration

    if preset != "small":
        return "not estimated for the paper preset (a GPU run: minutes per 1,000 steps)"
    speed = (step_seconds if step_seconds is not None else quick_timing()) / REF_STEP_SECONDS
    pairs, faces = count_pairs(pairs_dir)
    models = seeds + (control_steps > 0)
    test = 0.2 * pairs
    seconds = speed * (REF_SECONDS["ingest"] * pairs / REF_CLIPS
                       + PAIRS_SECONDS_PER_IMAGE * faces
                       + REF_SECONDS["decoder"] * (decoder_steps or REF_DECODER_STEPS)
                       / REF_DECODER_STEPS
                       + REF_SECONDS["voice"] * (seeds * train_steps + control_steps)
                       / REF_TRAIN_STEPS
                       + models * (REF_SECONDS["evaluate"] * pairs / REF_CLIPS
                                   + PAIRS_EVAL_SECONDS_PER_CLIP * test)
                       + REF_SECONDS["start-up and the rest"])
    return (f"~{format_duration(seconds)} for {pairs} pairs and {faces} face images "
            f"(a quick timing: {speed:.1f}x the reference machine's step time)")


def plan_text(est: DemoEstimate, identities: int, clips_per_identity: int,
              corpus_exists: bool, seeds: int = 1, control: bool = False) -> str:
    from s2f.progress import format_duration

    corpus = ("reuse the demo corpus" if corpus_exists else
              f"build the demo corpus ({identities} identities × {clips_per_identity} clips, "
              f"~{format_duration(est.stages['corpus'])})")
    load = (f"this machine runs {est.speed:.1f}× slower than the 2 idle cores it was measured on"
            if est.speed > 1.15 else "this machine is about as fast as the one it was "
            "measured on" if est.speed > 0.87 else
            f"this machine runs {1 / est.speed:.1f}× faster than the 2 idle cores it was "
            "measured on")
    return "\n".join([
        f"s2f demo: {corpus}, then ingest, preprocess, train the face decoder "
        f"(~{format_duration(est.stages['decoder'])}) and the voice encoder "
        f"({seeds} seed{'s' if seeds > 1 else ''}"
        f"{' + the shuffled-voice control' if control else ''}: "
        f"~{format_duration(est.stages['voice'])}), evaluate, promote, predict.",
        f"Estimated total: ~{format_duration(est.total)} ({load}; a quick timing, so take it "
        "as a rough guide).",
        "Shorter: --train-steps 200 --decoder-steps 100 (a weaker model), --identities 100 "
        "(a smaller corpus and test set), --no-control (no shuffled-voice control), and "
        "--min-diversity 0 for a smoke test.",
    ])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    identities = int(args[0]) if args else REF_IDENTITIES
    steps = int(args[1]) if len(args) > 1 else None
    t = quick_timing()
    est = estimate(identities, 1, False, None, steps, step_seconds=t)
    print(f"quick timing: {t:.3f} s per step")
    print(plan_text(est, identities, 1, False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
