"""Evaluation at scale: retrieval, bootstrap, mean face and similarity at 10k → 1M rows, memory
measured per stage.

    python -m benchmarks.evaluation_scale                                  # 10k and 100k rows
    python -m benchmarks.evaluation_scale --rows 10000 100000 1000000

Synthetic features (no media, no models): N clips of `--dim`-D true features, `--per-identity`
clips per identity (AVSpeech's ~5 segments per video), predictions = the identity's face +
noise. Each stage runs in its own child process on arrays it builds first:

- `mean face`: the train features as real Parquet shards (clips + face_features, `--shard-size`
  rows each, written by the parent); `training_clips` (the train index: its own row) then the
  one pass of `training_feature_blocks` into `FeatureMean`.
- `identity pool`: `group_means` of N features into N / per-identity identity means.
- `identity retrieval`: `retrieval_scores` (cosine ranks of N queries against the identity
  pool + bootstrap CIs of recall@1..50). Its time is N × P: skipped where N × P is above
  `--max-identity-distances`, with the time the measured rate gives.
- `paper protocol`: `paper_retrieval_scores` (5,000 of the N clips, L2, L1, cosine, CIs).
- `bootstrap`: `bootstrap_cis` of recall@1..50 hits of N queries (n_boot × N resamples).
- `similarity`: `similarity_scores` + `diversity_scores` of N predictions.

Columns: `held MB` is what the stage is given (true features, predictions, pool, index: these
grow with N, as a real evaluation's per-row predictions do), `work MB` the peak resident memory
above that during the stage (the kernel's high-water mark reset through /proc/self/clear_refs
just before it), which is what must stay flat; `peak MB` the process's peak during the stage.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import child as runner

ENCODER = "dlib-resnet"
STAGES = ("train_index", "mean_face", "identity_pool", "identity_retrieval", "paper_protocol", "bootstrap",
          "similarity")
LABELS = {"train_index": "train index (clips)", "mean_face": "mean face (Parquet shards)", "identity_pool": "identity pool",
          "identity_retrieval": "identity retrieval + CIs", "paper_protocol": "paper protocol",
          "bootstrap": "bootstrap, 6 K", "similarity": "similarity + diversity"}


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so the next reading is this stage's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        raise RuntimeError(f"cannot reset the peak RSS through /proc/self/clear_refs: {exc}; "
                           f"this benchmark needs Linux") from exc


def synthetic(rows: int, dim: int, per_identity: int, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(true N×D, predictions N×D, identity of each row, identities), float32, in place."""
    rng = np.random.default_rng(seed)
    identities = -(-rows // per_identity)
    target = np.arange(rows) // per_identity
    faces = rng.standard_normal((identities, dim), dtype=np.float32)
    true, pred = faces[target], faces[target]
    for i in range(0, rows, 1 << 16):  # noise in blocks: no N×D float64 temporary
        n = min(1 << 16, rows - i)
        true[i:i + n] += 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
        pred[i:i + n] += 1.5 * rng.standard_normal((n, dim), dtype=np.float32)
    return true, pred, target, identities


def write_train_shards(root: Path, rows: int, dim: int, per_identity: int, shard_size: int
                       ) -> Path:
    """A data directory of `rows` train clips (ok, split train) and their features, in shards
    of `shard_size` rows, written as the pipeline writes them (atomic, schema metadata)."""
    import pyarrow as pa

    from storage.io import write_table_atomic
    from storage.layout import DataLayout
    from storage.schemas import CLIPS, face_features_schema

    shutil.rmtree(root, ignore_errors=True)
    layout = DataLayout(root).ensure()
    rng = np.random.default_rng(1)
    for s, start in enumerate(range(0, rows, shard_size)):
        n = min(shard_size, rows - start)
        keys = [f"c{i:011d}" for i in range(start, start + n)]
        given = {"clip_key": keys, "manifest": ["scale_train"] * n, "split": ["train"] * n,
                 "line_no": list(range(start + 1, start + n + 1)),
                 "youtube_id": [f"v{i // per_identity:010d}" for i in range(start, start + n)],
                 "start_s": [0.0] * n, "end_s": [6.0] * n, "status": ["ok"] * n,
                 "audio_path": [f"audio/{k}.flac" for k in keys]}
        clips = pa.Table.from_arrays(
            [pa.array(given[f.name], f.type) if f.name in given else pa.nulls(n, f.type)
             for f in CLIPS], schema=CLIPS)
        write_table_atomic(clips, layout.shard_path("clips", "scale_train", s))
        flat = pa.array(rng.standard_normal(n * dim, dtype=np.float32))
        schema = face_features_schema(dim)
        feats = pa.Table.from_arrays(
            [pa.array(keys), pa.array([ENCODER] * n), pa.FixedSizeListArray.from_arrays(flat, dim),
             pa.nulls(n, pa.float32())], schema=schema)
        write_table_atomic(feats, layout.shard_path("face_features", "scale_train", s))
    return root


def _mean_face(data: Path) -> list[dict[str, Any]]:
    """Two results: the train index (`training_clips`), then the features' one pass into the
    running mean with the index held."""
    import s2f.train.data  # noqa: F401  (training_clips imports it, and torch: not the index)
    from s2f.evaluation.data import FeatureMean, feed_training_features, training_clips
    from storage.layout import DataLayout

    layout = DataLayout(data)
    _reset_peak()
    at = runner.status_mb("VmRSS")
    start = time.perf_counter()
    train = training_clips(layout, ENCODER)
    index = {"seconds": time.perf_counter() - start, "held_mb": 0.0, "at_mb": at,
             "rows": train.height, "peak_mb": runner.status_mb("VmHWM")}
    _reset_peak()
    after = runner.status_mb("VmRSS")
    start = time.perf_counter()
    mean = FeatureMean()
    feed_training_features(layout, ENCODER, train, [mean])
    mean.mean()
    return [index, {"seconds": time.perf_counter() - start, "held_mb": after - at,
                    "at_mb": after, "rows": train.height, "peak_mb": runner.status_mb("VmHWM")}]


def _stage(kind: str, rows: int, dim: int, per_identity: int, n_boot: int
           ) -> tuple[float, float, float]:
    """Build the stage's inputs, reset the peak, run it: (seconds, held MB, RSS at start)."""
    from s2f.evaluation import metrics
    from s2f.evaluation.data import group_means
    from s2f.evaluation.scores import (
        diversity_scores,
        paper_retrieval_scores,
        retrieval_scores,
        similarity_scores,
    )

    base = runner.status_mb("VmRSS")
    true, pred, target, identities = synthetic(rows, dim, per_identity)
    pool = group_means(true, target, identities) if kind == "identity_retrieval" else None
    ranks = np.random.default_rng(2).geometric(0.02, rows) - 1 if kind == "bootstrap" else None
    held = runner.status_mb("VmRSS") - base
    _reset_peak()
    at = runner.status_mb("VmRSS")
    start = time.perf_counter()
    if kind == "identity_pool":
        group_means(true, target, identities)
    elif kind == "identity_retrieval":
        retrieval_scores(pred, pool, target, "model", 6.0, n_boot)  # type: ignore[arg-type]
    elif kind == "paper_protocol":
        paper_retrieval_scores(pred, true, "model", 6.0, n_boot)
    elif kind == "bootstrap":
        metrics.bootstrap_cis([ranks < k for k in metrics.RECALL_KS], n_boot=n_boot)  # type: ignore[operator]
    elif kind == "similarity":
        similarity_scores(pred, true, "model", 6.0)
        diversity_scores(pred, true, 6.0)
    else:
        raise ValueError(f"unknown stage {kind!r}")
    return time.perf_counter() - start, held, at


def child(args: list[str]) -> list[dict[str, Any]]:
    kind = args[0]
    if kind == "mean_face":
        results = _mean_face(Path(args[1]))
    else:
        rows, dim, per_identity, n_boot = map(int, args[1:5])
        seconds, held, at = _stage(kind, rows, dim, per_identity, n_boot)
        results = [{"seconds": seconds, "held_mb": held, "at_mb": at, "rows": rows,
                    "peak_mb": runner.status_mb("VmHWM")}]
    return [r | {"work_mb": r["peak_mb"] - r["at_mb"]} for r in results]


def run_child(args: list[str]) -> list[dict[str, Any]]:
    result = runner.run_child("benchmarks.evaluation_scale", args)
    return [result] if isinstance(result, dict) else result


def measure(rows: int, args: argparse.Namespace, rate: float | None
            ) -> list[tuple[str, int, dict[str, Any]]]:
    """Every stage at `rows`; `rate`: seconds per query × pool entry of identity retrieval
    measured at a smaller size (for the estimate where it is skipped)."""
    out = []
    distances = rows * rows / args.per_identity  # identity retrieval: N queries × N / k faces
    for kind in STAGES:
        if kind == "train_index":
            continue  # measured with the mean face, in its process
        if kind == "mean_face":
            data = write_train_shards(args.work / f"rows-{rows}", rows, args.dim,
                                      args.per_identity, args.shard_size)
            results = run_child(["mean_face", str(data)])
            index, mean = results if len(results) == 2 else results * 2  # or an error, twice
            shutil.rmtree(data, ignore_errors=True)
            out.append(("train_index", rows, index))
            result = mean
        elif kind == "identity_retrieval" and distances > args.max_identity_distances:
            estimate = f", ~{rate * distances / 60:.0f} min at the rate above" if rate else ""
            result = {"skipped": f"{distances:.1e} query × pool distances{estimate}"}
        else:
            result = run_child([kind, str(rows), str(args.dim), str(args.per_identity),
                                str(args.n_boot)])[0]
        out.append((kind, rows, result))
    return out


def print_table(lines: list[tuple[str, int, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\nevaluation scale: synthetic {args.dim}-D features, {args.per_identity} clips per "
          f"identity, {args.n_boot} bootstrap resamples, face_features shards of "
          f"{args.shard_size} rows; one child process per stage")
    print(f"{'stage':<27} {'rows':>10} {'s':>8} {'us/row':>8} {'held MB':>8} {'work MB':>8} "
          f"{'peak MB':>8}")
    for kind, rows, r in sorted(lines, key=lambda x: (STAGES.index(x[0]), x[1])):
        label = LABELS[kind]
        if "skipped" in r or "error" in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error']}"
            print(f"{label:<27} {rows:>10,} {why}")
            continue
        print(f"{label:<27} {rows:>10,} {r['seconds']:8.2f} {1e6 * r['seconds'] / r['rows']:8.2f} "
              f"{r['held_mb']:8.0f} {r['work_mb']:8.0f} {r['peak_mb']:8.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=128, help="feature width (dlib-resnet: 128)")
    ap.add_argument("--per-identity", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--shard-size", type=int, default=1024,
                    help="rows per face_features shard (docs/ingest.md advises 1024)")
    ap.add_argument("--max-identity-distances", type=float, default=1e10,
                    help="skip identity retrieval above this many query × pool distances")
    ap.add_argument("--work", type=Path, default=Path("/tmp/s2f-evaluation-scale"))
    ap.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return runner.child_result(child(args.child))
    args.work.mkdir(parents=True, exist_ok=True)
    lines: list[tuple[str, int, dict[str, Any]]] = []
    rate = None
    for rows in sorted(args.rows):
        measured = measure(rows, args, rate)
        lines += measured
        for kind, _, r in measured:
            if kind == "identity_retrieval" and "seconds" in r:
                rate = r["seconds"] / (rows * rows / args.per_identity)
        print_table(lines, args)  # as it goes: the largest sizes take longest
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
