"""Scale: ingest + `s2f status` on 20,000 vs 200,000 manifest rows; peak memory must not grow.

    python -m benchmarks.scale                       # 20k and 200k rows, ~2-4 min on 2 cores
    python -m benchmarks.scale --rows 20000 200000 1000000 --real-rows 1000

What is measured, each in its own child process (peak RSS from getrusage, so each figure is that
step's own):

- `plan + ingest (missing media)`: a synthetic AVSpeech manifest of N rows (5 clips per video,
  like AVSpeech) whose media files do not exist: `plan_manifests` (the one streaming pass that
  finds duplicates) and `ingest_shard` for every shard of `--shard-size` rows, i.e. parsing,
  validation, the media lookup per video and the clips Parquet written atomically; every row
  ends as `missing_media`. No FLAC is cut: cutting 200k segments is CPU work proportional to the
  rows (its per-row cost is the next item), not a scaling question.
- `ingest (real media, FLAC)`: `--real-rows` rows over a few real generated media files, short
  segments, FLAC cut for each: the per-row cost of probe + cut + FLAC + Parquet.
- `s2f status`: `storage.status.print_status` over the N-row data directory (every row
  formatted and written to /dev/null), and the clips Parquet bytes on disk per row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLIPS_PER_VIDEO = 5


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


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ingest(work: Path, manifest: Path, media_root: Path, shard_size: int) -> dict[str, Any]:
    from s2f.ingest.manifest import plan_manifests
    from s2f.ingest.shard import ingest_shard
    from storage.layout import DataLayout

    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    layout = DataLayout(data).ensure()
    start = time.perf_counter()
    plans = plan_manifests([manifest], shard_size)
    plan_s = time.perf_counter() - start
    rows, counts = 0, {}
    for plan in plans:
        for shard in plan.shards:
            result = ingest_shard(shard, layout, media_root)
            for k, v in result.counts.items():
                counts[k] = counts.get(k, 0) + v
                rows += v
    seconds = time.perf_counter() - start
    parquet = sum(p.stat().st_size for p in (data / "tables" / "clips").rglob("*.parquet"))
    return {"rows": rows, "seconds": seconds, "plan_s": plan_s, "counts": counts,
            "parquet_bytes": parquet, "shards": sum(len(p.shards) for p in plans)}


def child_status(work: Path) -> dict[str, Any]:
    from storage.layout import DataLayout
    from storage.status import print_status

    start = time.perf_counter()
    with open(os.devnull, "w") as sink:
        print_status(DataLayout(work / "data"), "table", out=sink)
    return {"seconds": time.perf_counter() - start}


def run_child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--child", *args],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[:300]}


def real_media(work: Path, files: int = 4) -> tuple[Path, list[str]]:
    from benchmarks.data import generate, youtube_id

    bench = generate(work / "real", files)
    return bench.media_root, [youtube_id(i) for i in range(files)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--real-rows", type=int, default=1000)
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/s2f-scale"))
    ap.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        kind, work = args.child[0], Path(args.child[1])
        result = (child_status(work) if kind == "status" else
                  child_ingest(work, Path(args.child[2]), Path(args.child[3]),
                               int(args.child[4])))
        print("RESULT " + json.dumps(result | {"rss_mb": round(_peak_mb(), 1)}), flush=True)
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    empty_media = args.work / "no-media"
    empty_media.mkdir(exist_ok=True)
    lines = []
    for rows in args.rows:
        work = args.work / f"rows-{rows}"
        manifest = write_manifest(work / "scale_train.csv", rows)
        ing = run_child(["ingest", str(work), str(manifest), str(empty_media),
                         str(args.shard_size)])
        st = run_child(["status", str(work)])
        lines.append((f"{rows:,} rows, media missing", ing, st))
        shutil.rmtree(work, ignore_errors=True)
    if args.real_rows:
        media, ids = real_media(args.work)
        work = args.work / "real-rows"
        manifest = write_manifest(work / "real_train.csv", args.real_rows, ids)
        ing = run_child(["ingest", str(work), str(manifest), str(media), str(args.shard_size)])
        st = run_child(["status", str(work)])
        lines.append((f"{args.real_rows:,} rows, real media + FLAC", ing, st))
        shutil.rmtree(work, ignore_errors=True)
    print_scale(lines, args.shard_size)
    return 0


def print_scale(lines: list[tuple[str, dict[str, Any], dict[str, Any]]], shard_size: int) -> None:
    print(f"\nscale: ingest (plan + shards of {shard_size:,} rows, no Prefect) and s2f status; "
          f"peak RSS per child process")
    print(f"{'manifest':<34} {'ingest s':>9} {'us/row':>8} {'plan s':>7} {'peak MB':>8} "
          f"{'B/row':>6} {'status s':>9} {'us/row':>7} {'peak MB':>8}")
    for label, ing, st in lines:
        if ing.get("error") or st.get("error"):
            print(f"{label:<34} error: {ing.get('error') or st.get('error')}")
            continue
        rows = max(1, ing["rows"])
        print(f"{label:<34} {ing['seconds']:9.2f} {1e6 * ing['seconds'] / rows:8.1f} "
              f"{ing['plan_s']:7.2f} {ing['rss_mb']:8.0f} {ing['parquet_bytes'] / rows:6.1f} "
              f"{st['seconds']:9.2f} {1e6 * st['seconds'] / rows:7.1f} {st['rss_mb']:8.0f}")
        print(f"{'':<34} statuses {ing['counts']}")


if __name__ == "__main__":
    raise SystemExit(main())
