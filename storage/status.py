"""`s2f status`: every manifest line with the furthest stage it reached, its status and why.

    s2f status --data-dir s2f-data [--format table|csv]
    python -m storage.status DATA_DIR [table|csv]

    from storage.status import clip_status
    clip_status(DataLayout(data_dir))   # polars DataFrame, one row per non-blank manifest line

The `clips` table (one row per manifest line, from `s2f ingest`) is the spine. Each table in
STAGES (in pipeline order, keyed by `clip_key`) is left-joined in turn: a clip that is `ok` so
far and has a row in the next stage's table moves to that stage and takes its status and error.
A stage table that does not exist yet is skipped. Everything is a polars lazy scan; printing
streams the result in batches, so memory does not grow with the number of lines (beyond the
join's hash table of stage keys). The CSV format prints rows only; the table format appends
counts by (stage, status). A shard that cannot be read whole (torn, truncated, a page failing
its checksum: `storage.io.shard_damage`) is named on stderr and left out; the rest is shown.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import polars as pl
import pyarrow as pa

from storage.io import scan, shard_damage, shard_paths
from storage.layout import DataLayout
from storage.schemas import PREPROCESS

# Stage tables after `clips`, in pipeline order; each needs `clip_key`, `status`, `error`.
STAGES: list[tuple[str, pa.Schema]] = [("preprocess", PREPROCESS)]
COLUMNS = ["manifest", "line_no", "youtube_id", "start_s", "end_s", "stage", "status", "error"]
_BATCH_ROWS = 10_000


def has_clips(layout: DataLayout) -> bool:
    return bool(shard_paths(layout, "clips"))


Shards = dict[str, list[Path]]


def readable_shards(layout: DataLayout, tables: list[str], err: TextIO | None = None) -> Shards:
    """Each table's shards that read whole; the others are named on `err` (stderr)."""
    err = sys.stderr if err is None else err
    readable: Shards = {}
    for table in tables:
        readable[table] = []
        for path in shard_paths(layout, table):
            damage = shard_damage(path)
            if damage is None:
                readable[table].append(path)
            else:
                err.write(f"s2f status: skipping unreadable shard {path}: {damage}\n")
    return readable


def clip_status_lazy(layout: DataLayout, stages: list[tuple[str, pa.Schema]] | None = None,
                     shards: Shards | None = None) -> pl.LazyFrame:
    """The status query, not yet run: rows in manifest, line order. `shards`: the shards to
    read per table (default: the readable ones, the others named on stderr)."""
    stages = STAGES if stages is None else stages
    if shards is None:
        shards = readable_shards(layout, ["clips", *(name for name, _ in stages)])
    frame = (scan(layout, "clips", paths=shards["clips"])
             .select("manifest", "line_no", "youtube_id", "start_s", "end_s", "clip_key",
                     "status", "error")
             .with_columns(pl.lit("clips").alias("stage")))
    for name, _schema in stages:
        if not shards.get(name):
            continue
        stage_rows = (scan(layout, name, paths=shards[name])
                      .select("clip_key", pl.col("status").alias("_stage_status"),
                              pl.col("error").alias("_stage_error"))
                      .unique("clip_key", keep="any"))
        frame = frame.join(stage_rows, on="clip_key", how="left", maintain_order="left")
        # face_only: a face without a voice (the real pairs' distractors) is preprocessed too
        reached = (pl.col("status").is_in(["ok", "face_only"])
                   & pl.col("_stage_status").is_not_null())
        frame = frame.with_columns(
            pl.when(reached).then(pl.lit(name)).otherwise(pl.col("stage")).alias("stage"),
            pl.when(reached).then(pl.col("_stage_status")).otherwise(pl.col("status"))
            .alias("status"),
            pl.when(reached).then(pl.col("_stage_error")).otherwise(pl.col("error"))
            .alias("error"),
        ).drop("_stage_status", "_stage_error")
    # No sort: shards are scanned in path order (manifest, shard index) and the joins keep the
    # left order, so rows already come in manifest, line order, and streaming stays possible.
    return frame.select(COLUMNS)


def clip_status(layout: DataLayout) -> pl.DataFrame:
    """One row per manifest line: manifest, line_no, youtube_id, start_s, end_s, stage,
    status, error (stage = the furthest stage reached)."""
    return clip_status_lazy(layout).collect()


def status_counts(layout: DataLayout, shards: Shards | None = None) -> pl.DataFrame:
    return (clip_status_lazy(layout, shards=shards).group_by("stage", "status").len("rows")
            .sort("stage", "status").collect())


def _fmt(value: object, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.3f}"
    else:
        text = str(value).replace("\n", " ")  # one line per manifest line, always
    return text.ljust(width) if width else text


_TABLE_WIDTHS = {"manifest": 24, "line_no": 8, "youtube_id": 12, "start_s": 10, "end_s": 10,
                 "stage": 11, "status": 16, "error": 0}


def print_status(layout: DataLayout, fmt: str = "table", out: TextIO = sys.stdout) -> int:
    """Print every line's status (table or CSV), then, for tables, counts by (stage, status).
    Returns 0, or 1 when the data directory has no clips yet."""
    if fmt not in ("table", "csv"):
        raise ValueError(f"unknown format {fmt!r}: table or csv")
    if not has_clips(layout):
        out.write(f"no clips yet under {layout.root}: run `s2f ingest --manifest CSV "
                  f"--media-root DIR --data-dir {layout.root}` first\n")
        return 1
    # Checked once for the rows and the counts; unreadable shards are named on stderr.
    shards = readable_shards(layout, ["clips", *(name for name, _ in STAGES)])
    batches = clip_status_lazy(layout, shards=shards).collect_batches(chunk_size=_BATCH_ROWS,
                                                                      lazy=True)
    if fmt == "csv":
        header = True
        for batch in batches:
            out.write(batch.write_csv(include_header=header))
            header = False
        if header:  # no rows at all: still a valid CSV
            out.write(",".join(COLUMNS) + "\n")
        return 0

    out.write(" ".join(_fmt(c, w) for c, w in _TABLE_WIDTHS.items()).rstrip() + "\n")
    for batch in batches:
        for row in batch.iter_rows(named=True):
            out.write(" ".join(_fmt(row[c], w) for c, w in _TABLE_WIDTHS.items()).rstrip()
                      + "\n")
    counts = status_counts(layout, shards)
    out.write(f"\n{counts['rows'].sum()} manifest lines by furthest stage and status:\n")
    skipped = sum(len(shard_paths(layout, t)) - len(p) for t, p in shards.items())
    if skipped:
        out.write(f"  ({skipped} unreadable shards left out, named above on stderr)\n")
    for stage, status, rows in counts.iter_rows():
        out.write(f"  {stage:<11} {status:<16} {rows}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(print_status(DataLayout(sys.argv[1]), *(sys.argv[2:3] or ["table"])))
