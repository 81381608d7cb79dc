"""Scale of every stage's bookkeeping at 10k → 1M rows: peak RSS and time per row, one table.

    python -m benchmarks.scale --rows 10000,100000,1000000       # ~15-25 min on 2 loaded cores
    python -m benchmarks.scale --rows 20000 --real-rows 1000      # + the per-row cost of real media
    python -m benchmarks.scale --shard-sizes 256,1024,4096 --sweep-rows 100000   # the shard size

Synthetic inputs only (no media is decoded); each step runs in a fresh child process
(`benchmarks.child`), so its peak RSS (getrusage) is its own; `start MB` is the child's resident
memory just before the step (its imports: torch, polars), `peak MB` the high-water mark.

- `ingest`: a synthetic AVSpeech manifest of N rows (5 clips per video) whose media do not
  exist: `plan_manifests` + `ingest_shard` per shard of `--shard-size` rows (parse, validate,
  one media lookup per video, the clips Parquet written atomically); every row `missing_media`.
- `ingest, other shard size`: the same data directory ingested again with 4 × the shard size:
  `supersede_shards` then every shard rebuilt from the moved-aside rows (all reused).
- `s2f status`: `storage.status.print_status` of every row to /dev/null.
- then, on a synthetic *preprocessed* data directory (the parent writes N ok train clips and
  their `preprocess`, `faces` (one frame each, small JPEG crops) and `face_features` (128-D)
  shards, with the extras the pipeline writes):
- `preprocess planning (all done)`: what `s2f preprocess` does when nothing is left to do:
  `supersede_outputs`, `shard_is_done` per shard (input hash, every page's checksum), the
  skipped shards' status counts.
- `preprocess, other shard size`: the clips re-written in shards of 4 × the size (what the
  re-sharded ingest leaves), then `supersede_outputs` + `preprocess_shard` per shard: every
  clip copied by its `clip_fingerprint` (shard bookkeeping; no model is loaded).
- `training-set index`: the voice encoder's `pair_index` (train role).
- `face decoder stream`: `FaceStream` (its index), `mean_landmarks`, then the first
  `--stream-batches` batches of 16 at 64² (`benchmarks.face_stream.child_epoch`).
- the evaluation's stages of `benchmarks.evaluation_scale` (synthetic 128-D features).

`--shard-sizes`: ingest, status and the preprocess planning at `--sweep-rows` rows per shard
size, and Prefect's own cost per task (`--prefect-tasks` no-op tasks mapped in one flow):
what the default shard size was chosen from (docs/performance.md, "Shard size").
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import child

CLIPS_PER_VIDEO = 5
MANIFEST = "scale_train"
ENCODER = "dlib-resnet"
DIM = 128
RESHARD = 4  # the other shard size: this many times --shard-size
LABELS = {
    "ingest": "ingest (plan + shards)", "ingest_reshard": "ingest, other shard size",
    "status": "s2f status", "preprocess_plan": "preprocess planning (all done)",
    "preprocess_reshard": "preprocess, other shard size", "train_index": "training-set index",
    "face_stream": "face decoder stream", "mean_face": "eval: mean face (shards)",
    "identity_pool": "eval: identity pool", "identity_retrieval": "eval: identity retrieval",
    "paper_protocol": "eval: paper protocol", "bootstrap": "eval: bootstrap, 6 K",
    "similarity": "eval: similarity + diversity", "train_index_eval": "eval: train index",
    "real_ingest": "ingest, real media + FLAC", "prefect_tasks": "Prefect: no-op tasks",
}
# Where memory grows with N because the stage's output (or what it is given) does.
GROWS = {
    "ingest": "planning: ~53 B a line", "status": "polars' state per shard file",
    "train_index": "the index: ~100 B a clip", "face_stream": "the index: ~60 B a face",
    "train_index_eval": "the train index", "identity_pool": "N / 5 identity means",
    "identity_retrieval": "its inputs (held)", "paper_protocol": "its inputs (held)",
    "bootstrap": "its inputs (held)", "similarity": "its inputs (held)",
    "mean_face": "the train index it is given",
}


# -- inputs ------------------------------------------------------------------------------------

def write_manifest(path: Path, rows: int, video_ids: list[str] | None = None) -> Path:
    """N AVSpeech lines, written in blocks (memory flat in N)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        block = []
        for i in range(rows):
            vid = video_ids[i % len(video_ids)] if video_ids else f"s{i // CLIPS_PER_VIDEO:010d}"
            # Real media are short: distinct starts 2 ms apart keep every clip key unique.
            start = (0.5 + 0.002 * (i // len(video_ids)) if video_ids
                     else 1.0 + 3 * (i % CLIPS_PER_VIDEO))
            block.append(f"{vid},{start:.6f},{start + (1.5 if video_ids else 2.5):.6f},"
                         f"0.5,0.45\n")
            if len(block) == 10_000:
                fh.write("".join(block))
                block = []
        fh.write("".join(block))
    return path


def _crop_pool(n: int = 64) -> tuple[list[bytes], np.ndarray]:
    """`n` small JPEG crops (56², ~1.5 KB: the stream resizes whatever it decodes) and 68
    landmarks each, in frame pixels."""
    from s2f.faces.align import encode_jpeg
    from s2f.train.synthetic import face

    rng = np.random.default_rng(0)
    jpegs, marks = [], []
    for _ in range(n):
        img, lm = face(rng.uniform(-1, 1, 3).astype(np.float32))
        jpegs.append(encode_jpeg(np.ascontiguousarray(img[::4, ::4])))
        marks.append(lm.reshape(-1))
    return jpegs, np.stack(marks).astype(np.float32)


def _clips_table(first: int, n: int) -> Any:
    import pyarrow as pa

    from storage.layout import clip_key
    from storage.schemas import CLIPS

    ids = [f"s{i // CLIPS_PER_VIDEO:010d}" for i in range(first, first + n)]
    starts = [1.0 + 3 * (i % CLIPS_PER_VIDEO) for i in range(first, first + n)]
    keys = [clip_key(v, s, s + 2.5) for v, s in zip(ids, starts, strict=True)]
    given = {"clip_key": keys, "manifest": [MANIFEST] * n, "split": ["train"] * n,
             "line_no": list(range(first + 1, first + n + 1)), "youtube_id": ids,
             "start_s": starts, "end_s": [s + 2.5 for s in starts], "status": ["ok"] * n,
             "audio_path": [f"audio/{v}/{k}.flac" for v, k in zip(ids, keys, strict=True)],
             "fps": [25.0] * n}
    return pa.Table.from_arrays([pa.array(given[f.name], f.type) if f.name in given
                                 else pa.nulls(n, f.type) for f in CLIPS], schema=CLIPS)


def write_clips(root: Path, rows: int, shard_size: int) -> None:
    """N ok train clips in shards of `shard_size`, with the line ranges ingest records."""
    from storage.io import write_table_atomic
    from storage.layout import DataLayout

    layout = DataLayout(root)
    for s, first in enumerate(range(0, rows, shard_size)):
        n = min(shard_size, rows - first)
        write_table_atomic(_clips_table(first, n), layout.shard_path("clips", MANIFEST, s),
                           extra={"first_line": first + 1, "last_line": first + n})


def write_preprocessed(root: Path, rows: int, shard_size: int) -> None:
    """A finished data directory: clips, and their preprocess/faces/face_features shards as
    `preprocess_shard` writes them (extras, `clip_fingerprint`), one face per clip."""
    import pyarrow as pa

    from s2f.preprocess.clips import PreprocessConfig
    from s2f.preprocess.shards import clip_fingerprint, output_paths, shard_extra
    from storage.io import read_table_verified, write_table_atomic
    from storage.layout import DataLayout
    from storage.schemas import FACES, PREPROCESS, face_features_schema

    shutil.rmtree(root, ignore_errors=True)
    layout = DataLayout(root).ensure()
    write_clips(root, rows, shard_size)
    config = PreprocessConfig()
    jpegs, marks = _crop_pool()
    rng = np.random.default_rng(1)
    for clips in sorted(layout.table_dir("clips").glob(f"{MANIFEST}/shard-*.parquet")):
        extra = shard_extra(clips, config)
        data = read_table_verified(clips)
        keys, n = data.column("clip_key"), data.num_rows
        fps = [clip_fingerprint(r, extra["params"]) for r in data.to_pylist()]
        pick = rng.integers(len(jpegs), size=n)
        pre = {"clip_key": keys, "status": pa.array(["ok"] * n), "error": pa.nulls(n, pa.string()),
               "video_decoder": pa.array(["pyav"] * n), "frames_sampled": pa.array([3] * n, pa.int32()),
               "faces_found": pa.array([1] * n, pa.int32()), "clip_fingerprint": pa.array(fps)}
        faces = {"clip_key": keys, "frame_time_s": pa.array(np.full(n, 2.0)),
                 "bbox": pa.FixedSizeListArray.from_arrays(pa.array(np.tile(
                     np.float32([40, 40, 184, 184]), n)), 4),
                 "landmarks": pa.FixedSizeListArray.from_arrays(pa.array(marks[pick].ravel()), 136),
                 "det_score": pa.array(np.ones(n, np.float32)),
                 "crop_jpeg": pa.array([jpegs[k] for k in pick], pa.binary())}
        feats = {"clip_key": keys, "encoder": pa.array([ENCODER] * n),
                 "feature": pa.FixedSizeListArray.from_arrays(
                     pa.array(rng.standard_normal(n * DIM, dtype=np.float32)), DIM),
                 "l2_norm": pa.array(np.ones(n, np.float32))}
        paths = output_paths(layout, clips)
        for table, schema, columns in (("faces", FACES, faces),
                                       ("face_features", face_features_schema(DIM), feats),
                                       ("preprocess", PREPROCESS, pre)):
            write_table_atomic(pa.Table.from_arrays([pa.array(columns[f.name]).cast(f.type)
                                                     if not isinstance(columns[f.name], pa.Array)
                                                     else columns[f.name].cast(f.type)
                                                     for f in schema], schema=schema),
                               paths[table], extra=extra)


def reshard_clips(root: Path, rows: int, shard_size: int) -> None:
    """The clips in shards of another size, rows unchanged (what a re-sharded ingest leaves)."""
    from storage.layout import DataLayout

    shutil.rmtree(DataLayout(root).table_dir("clips"))
    write_clips(root, rows, shard_size)


# -- the steps (in the child) -----------------------------------------------------------------

def step_ingest(work: Path, manifest: Path, media_root: Path, shard_size: int,
                fresh: bool) -> dict[str, Any]:
    from s2f.ingest.manifest import plan_manifests
    from s2f.ingest.shard import ingest_shard, remove_stale_shards, supersede_shards
    from storage.layout import DataLayout

    data = work / "data"
    if fresh:
        shutil.rmtree(data, ignore_errors=True)
    layout = DataLayout(data).ensure()
    at, start = child.status_mb("VmRSS"), time.perf_counter()
    rows = reused = shards = 0
    for plan in plan_manifests([manifest], shard_size):
        supersede_shards(layout, plan)
        remove_stale_shards(layout, plan.manifest, plan.n_shards, plan.blank_shards)
        for shard in plan.shards:
            result = ingest_shard(shard, layout, media_root)
            rows += sum(result.counts.values())
            reused += result.reused_rows
            shards += 1
    return {"seconds": time.perf_counter() - start, "rows": rows, "start_mb": at,
            "note": f"{shards} shards" + (f", {reused:,} rows reused" if not fresh else "")}


def step_status(data: Path) -> dict[str, Any]:
    from storage.layout import DataLayout
    from storage.status import print_status

    at, start = child.status_mb("VmRSS"), time.perf_counter()
    with open(os.devnull, "w") as sink:
        print_status(DataLayout(data), "table", out=sink)
    return {"seconds": time.perf_counter() - start, "start_mb": at}


def step_preprocess_plan(data: Path) -> dict[str, Any]:
    from s2f.preprocess.clips import PreprocessConfig
    from s2f.preprocess.shards import (
        output_paths,
        read_status_counts,
        shard_is_done,
        supersede_outputs,
    )
    from storage.io import shard_paths
    from storage.layout import DataLayout

    layout, config = DataLayout(data), PreprocessConfig()
    at, start = child.status_mb("VmRSS"), time.perf_counter()
    supersede_outputs(layout)
    done = rows = 0
    for shard in shard_paths(layout, "clips"):
        if shard_is_done(layout, shard, config):
            done += 1
            rows += sum(read_status_counts([output_paths(layout, shard)["preprocess"]]).values())
    return {"seconds": time.perf_counter() - start, "start_mb": at, "rows": rows,
            "note": f"{done} shards done"}


def step_preprocess_reshard(data: Path) -> dict[str, Any]:
    from s2f.preprocess.clips import PreprocessConfig
    from s2f.preprocess.shards import preprocess_shard, supersede_outputs
    from storage.io import shard_paths
    from storage.layout import DataLayout

    layout, config = DataLayout(data), PreprocessConfig()
    at, start = child.status_mb("VmRSS"), time.perf_counter()
    supersede_outputs(layout)
    ran = reused = shards = 0
    for shard in shard_paths(layout, "clips"):
        result = preprocess_shard(shard, layout, config, progress=False)
        ran += result["clips_run"]
        reused += result["clips_reused"]
        shards += 1
    return {"seconds": time.perf_counter() - start, "start_mb": at, "rows": ran + reused,
            "note": f"{shards} shards, {reused:,} clips reused, {ran} run"}


def step_train_index(data: Path) -> dict[str, Any]:
    from s2f.train.data import pair_index
    from storage.layout import DataLayout

    at, start = child.status_mb("VmRSS"), time.perf_counter()
    index = pair_index(DataLayout(data), ENCODER, "train", 0.1)
    return {"seconds": time.perf_counter() - start, "start_mb": at,
            "note": f"{index.height:,} train clips"}


def step_face_stream(data: Path, batches: int) -> dict[str, Any]:
    from benchmarks.face_stream import child_epoch

    at = child.status_mb("VmRSS")
    r = child_epoch(data, 64, 16, max_batches=batches, dev_fraction=0.1)
    return {"seconds": r["index_s"], "start_mb": at, "rows": r["faces"],
            "note": f"index + mean shape; then {r['trained']:,} faces in "
                    f"{r['epoch_s']:.1f} s ({1e6 * r['epoch_s'] / max(1, r['trained']):.0f} "
                    f"us/face), {r['reads']} shard reads"}


def step_prefect_tasks(work: Path, tasks: int) -> dict[str, Any]:
    from flows.runtime import configure

    configure(work / "prefect-data")
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    @task
    def noop(i: int) -> int:
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def many(n: int) -> float:
        start = time.perf_counter()
        futures = noop.map(list(range(n)))
        [f.result() for f in futures]
        return time.perf_counter() - start

    many(2)  # the server's start and the first run, not counted
    return {"seconds": many(tasks), "rows": tasks, "start_mb": 0.0}


def run_step(args: list[str]) -> dict[str, Any]:
    kind, paths = args[0], [Path(a) for a in args[1:]]
    if kind in ("ingest", "ingest_reshard", "real_ingest"):
        result = step_ingest(paths[0], paths[1], paths[2], int(args[4]), kind != "ingest_reshard")
    elif kind == "status":
        result = step_status(paths[0])
    elif kind == "preprocess_plan":
        result = step_preprocess_plan(paths[0])
    elif kind == "preprocess_reshard":
        result = step_preprocess_reshard(paths[0])
    elif kind == "train_index":
        result = step_train_index(paths[0])
    elif kind == "face_stream":
        result = step_face_stream(paths[0], int(args[2]))
    elif kind == "prefect_tasks":
        result = step_prefect_tasks(paths[0], int(args[2]))
    else:
        raise ValueError(f"unknown step {kind!r}")
    return result | {"peak_mb": child.peak_rss_mb()}


# -- the parent ---------------------------------------------------------------------------------

Line = tuple[str, int, dict[str, Any]]


def _step(kind: str, rows: int, *args: Any) -> Line:
    result = child.run_child("benchmarks.scale", [kind, *map(str, args)])
    result.setdefault("rows", rows)
    print(f"  {LABELS[kind]:<32} {rows:>10,} {result.get('seconds', float('nan')):8.2f} s"
          + (f"  error: {result['error']}" if "error" in result else ""), flush=True)
    return kind, rows, result


def measure_ingest(rows: int, args: argparse.Namespace, shard_size: int) -> list[Line]:
    work = args.work / f"ingest-{rows}"
    manifest = write_manifest(work / f"{MANIFEST}.csv", rows)
    empty = args.work / "no-media"
    empty.mkdir(parents=True, exist_ok=True)
    lines = [_step("ingest", rows, work, manifest, empty, shard_size)]
    if not args.sweep:
        lines.append(_step("ingest_reshard", rows, work, manifest, empty, RESHARD * shard_size))
    lines.append(_step("status", rows, work / "data"))
    shutil.rmtree(work, ignore_errors=True)
    return lines


def measure_preprocessed(rows: int, args: argparse.Namespace, shard_size: int) -> list[Line]:
    data = args.work / f"preprocessed-{rows}"
    write_preprocessed(data, rows, shard_size)
    lines = [_step("preprocess_plan", rows, data)]
    if not args.sweep:
        reshard_clips(data, rows, RESHARD * shard_size)
        lines.append(_step("preprocess_reshard", rows, data))
        lines.append(_step("train_index", rows, data))
        lines.append(_step("face_stream", rows, data, args.stream_batches))
    shutil.rmtree(data, ignore_errors=True)
    return lines


def measure_evaluation(rows: int, args: argparse.Namespace, rate: float | None) -> list[Line]:
    from benchmarks import evaluation_scale

    ns = argparse.Namespace(dim=DIM, per_identity=CLIPS_PER_VIDEO, n_boot=args.n_boot,
                            shard_size=args.shard_size, max_identity_distances=args.max_distances,
                            work=args.work / "evaluation")
    out = []
    for kind, n, r in evaluation_scale.measure(rows, ns, rate):
        kind = "train_index_eval" if kind == "train_index" else kind
        r = r | {"start_mb": r.get("at_mb", 0.0)} if "peak_mb" in r else r
        out.append((kind, n, r))
        print(f"  {LABELS[kind]:<32} {n:>10,} {r.get('seconds', float('nan')):8.2f} s", flush=True)
    return out


def print_table(lines: list[Line], title: str) -> None:
    print(f"\n{title}")
    print(f"{'stage':<32} {'rows':>10} {'s':>8} {'us/row':>8} {'start MB':>8} {'peak MB':>8} "
          f"{'work MB':>8}  notes")
    order = list(LABELS)
    for kind, rows, r in sorted(lines, key=lambda x: (order.index(x[0]), x[1])):
        label = LABELS[kind]
        if "error" in r or "skipped" in r:
            print(f"{label:<32} {rows:>10,} {'error: ' + r['error'] if 'error' in r else 'skipped: ' + r['skipped']}")
            continue
        n = max(1, r.get("rows") or rows)
        print(f"{label:<32} {rows:>10,} {r['seconds']:8.2f} {1e6 * r['seconds'] / n:8.2f} "
              f"{r.get('start_mb', 0):8.0f} {r['peak_mb']:8.0f} "
              f"{r['peak_mb'] - r.get('start_mb', 0):8.0f}  {r.get('note', '')}")


def print_flatness(lines: list[Line]) -> None:
    """Peak RSS, and the work above the start (imports; for the evaluation's stages also the
    inputs they are given), at the largest size against the smallest, per stage."""
    print(f"\n{'stage':<32} {'peak MB':>16} {'growth':>7} {'work MB':>14} {'growth':>7}  "
          "where it grows")
    by_kind: dict[str, list[tuple[int, float, float]]] = {}
    for kind, rows, r in lines:
        if "peak_mb" in r:
            by_kind.setdefault(kind, []).append((rows, r["peak_mb"],
                                                 r["peak_mb"] - r.get("start_mb", 0)))
    for kind in LABELS:
        sizes = sorted(by_kind.get(kind, []))
        if len(sizes) < 2:
            continue
        (_, peak0, work0), (_, peak1, work1) = sizes[0], sizes[-1]
        growth = peak1 / peak0 - 1
        print(f"{LABELS[kind]:<32} {peak0:7.0f} → {peak1:<6.0f} {100 * growth:+6.0f}% "
              f"{work0:5.0f} → {work1:<6.0f} {100 * (work1 / max(work0, 1) - 1):+6.0f}%  "
              f"{GROWS.get(kind, '') if growth > 0.1 else ''}")


def sweep(args: argparse.Namespace) -> None:
    """Bookkeeping cost against the shard size, and Prefect's cost per task."""
    lines: list[Line] = []
    for size in args.shard_sizes:
        print(f"shard size {size}:")
        for kind, rows, r in [*measure_ingest(args.sweep_rows, args, size),
                              *measure_preprocessed(args.sweep_rows, args, size)]:
            lines.append((kind, rows, r | {"note": f"shard size {size:,}; {r.get('note', '')}"}))
    if args.prefect_tasks:
        lines.append(_step("prefect_tasks", args.prefect_tasks, args.work, args.prefect_tasks))
    print_table(lines, f"shard size: {args.sweep_rows:,} rows, one child process per step")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    from s2f.ingest.manifest import DEFAULT_SHARD_SIZE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=_ints, default=[10_000, 100_000])
    ap.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    ap.add_argument("--real-rows", type=int, default=0,
                    help="also ingest this many rows over a few real media files (FLAC cut)")
    ap.add_argument("--stream-batches", type=int, default=500)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--max-distances", type=float, default=1e10,
                    help="skip identity retrieval above this many query × pool distances")
    ap.add_argument("--no-evaluation", action="store_true")
    ap.add_argument("--shard-sizes", type=_ints, default=None)
    ap.add_argument("--sweep-rows", type=int, default=100_000)
    ap.add_argument("--prefect-tasks", type=int, default=200)
    ap.add_argument("--work", type=Path, default=Path("/tmp/s2f-scale"))
    ap.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.sweep = args.shard_sizes is not None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child is not None:
        return child.child_result(run_step(args.child))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        sweep(args)
        return 0
    lines: list[Line] = []
    rate = None
    for rows in sorted(args.rows):
        print(f"{rows:,} rows:", flush=True)
        lines += measure_ingest(rows, args, args.shard_size)
        lines += measure_preprocessed(rows, args, args.shard_size)
        if not args.no_evaluation:
            measured = measure_evaluation(rows, args, rate)
            lines += measured
            for kind, n, r in measured:
                if kind == "identity_retrieval" and "seconds" in r:
                    rate = r["seconds"] / (n * n / CLIPS_PER_VIDEO)
    if args.real_rows:
        lines.append(measure_real(args))
    print_table(lines, f"scale: shards of {args.shard_size:,} rows (other size: "
                       f"{RESHARD * args.shard_size:,}); one child process per step")
    print_flatness(lines)
    return 0


def measure_real(args: argparse.Namespace) -> Line:
    """`--real-rows` rows over 4 generated media files, a FLAC cut for each."""
    from benchmarks.data import generate, youtube_id

    bench = generate(args.work / "real", 4)
    work = args.work / "real-rows"
    manifest = write_manifest(work / "real_train.csv", args.real_rows,
                              [youtube_id(i) for i in range(4)])
    line = _step("real_ingest", args.real_rows, work, manifest, bench.media_root,
                 args.shard_size)
    shutil.rmtree(work, ignore_errors=True)
    return line


if __name__ == "__main__":
    raise SystemExit(main())
