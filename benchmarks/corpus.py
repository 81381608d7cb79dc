"""How long the built-in demo corpus takes to build (the budget: the default corpus, 400
identities × 1 clip, in under 5 minutes on 2 cores).

    python benchmarks/corpus.py                        # default corpus, 2 workers, temp dir
    python benchmarks/corpus.py --identities 12 --clips-per-identity 2
    taskset -c 0,1 python benchmarks/corpus.py         # pin to 2 cores on a bigger machine

Prints one table: identities, clips, media minutes, wall seconds, the CPU seconds of each stage
summed over processes (real-face detection in the parent; morph + check + embedding; voices;
frame rendering; encoding + muxing), CPU seconds of this process and its workers in all, and MB
written. On a shared machine wall time depends on the other load; CPU seconds do not, and
CPU s / 2 is what 2 idle cores need at the least.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from s2f.corpus import DEMO_CLIPS_PER_IDENTITY, DEMO_IDENTITIES

BUDGET_S = 300.0


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--identities", type=int, default=DEMO_IDENTITIES)
    ap.add_argument("--clips-per-identity", type=int, default=DEMO_CLIPS_PER_IDENTITY)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the corpus here (default: temp dir, removed)")
    args = ap.parse_args(argv)

    from s2f.corpus.build import CorpusConfig, build_demo_corpus

    tmp = None
    out = args.out
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="s2f-corpus-bench-"))
        out = tmp / "corpus"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    try:
        summary = build_demo_corpus(CorpusConfig(
            out=out, identities=args.identities, clips_per_identity=args.clips_per_identity,
            seed=args.seed, workers=args.workers))
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    cols = [("identities", f"{summary.identities}"), ("clips", f"{summary.clips}"),
            ("videos", f"{sum(summary.videos.values())}"),
            ("media min", f"{summary.media_seconds / 60:.1f}"), ("wall s", f"{wall:.1f}")]
    cols += [(f"{k} CPU s", f"{v:.1f}") for k, v in summary.stage_seconds.items()]
    cols += [("CPU s", f"{cpu:.1f}"), ("MB", f"{summary.bytes_written / 1e6:.1f}")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    widths = [max(len(h), len(v)) for h, v in cols]
    print(f"demo corpus build: {args.workers} worker(s) on {cores} usable core(s), seed {args.seed}, "
          f"load average at the end {load:.1f}")
    print("  ".join(h.rjust(w) for (h, _), w in zip(cols, widths, strict=True)))
    print("  ".join(v.rjust(w) for (_, v), w in zip(cols, widths, strict=True)))
    if (args.identities, args.clips_per_identity) == (DEMO_IDENTITIES, DEMO_CLIPS_PER_IDENTITY):
        verdict = "within" if wall < BUDGET_S else "OVER"
        print(f"{verdict} the {BUDGET_S:.0f} s budget for the default corpus")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
