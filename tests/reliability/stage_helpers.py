"""Helpers of the reliability suite for the stages after ingestion: a small real corpus of
face clips, the invariants of the `preprocess`, `faces` and `face_features` tables, library
drivers that the crash tests run as child processes (and SIGKILL), and the kill loop.

    from .stage_helpers import check_preprocess, face_corpus, kill_when
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from s2f.preprocess.clips import PreprocessConfig
from s2f.preprocess.shards import OUTPUT_TABLES, shard_is_done
from storage.io import TEMP_GLOB, read_extra, shard_paths
from storage.layout import DataLayout
from storage.schemas import PREPROCESS_STATUSES

from .helpers import check_clips, run_shards

MANIFEST = "pp_train"
# 16 lines over two face videos (ok), one video without a face (no_face) and a missing one
# (missing_media in clips: never reaches preprocess); two lines per clips shard.
FACE_IDS = ["faceaaaaaaa", "facebbbbbbb", "noface00000", "missing0000"]
N_LINES = 16
SHARD_SIZE = 2
# Sort keys of each output table: one row per key.
KEYS = {"preprocess": ["clip_key"], "faces": ["clip_key", "frame_time_s"],
        "face_features": ["clip_key"]}

# What the flow's shard task runs, per clips shard: skip finished shards, else preprocess.
PREPROCESS_DRIVER = """
import sys
from s2f.preprocess.clips import PreprocessConfig
from s2f.preprocess.shards import preprocess_shard, shard_is_done
from storage.io import shard_paths
from storage.layout import DataLayout
layout, config = DataLayout(sys.argv[1]), PreprocessConfig(workers=1, device="cpu")
for shard in shard_paths(layout, "clips"):
    if not shard_is_done(layout, shard, config):
        preprocess_shard(shard, layout, config, progress=False)
        print("done", shard.name, flush=True)
"""

# Train (or resume) a model from a JSON config, checkpoints in argv[3]; always resume=True,
# as `s2f train --resume` does (a first run has no checkpoint to resume from).
TRAIN_DRIVER = """
import json, sys, time
from pathlib import Path
import s2f.train.checkpoint as checkpoint
from storage.layout import DataLayout
# Tiny models train a step in milliseconds: without a pause after each checkpoint a fast
# machine can run to the end between the test's poll and its kill. The pause comes after the
# rename, so what is killed is still a run between two checkpoints.
_save = checkpoint.save_atomic
def _save_then_pause(obj, path):
    out = _save(obj, path)
    time.sleep(0.25)
    return out
checkpoint.save_atomic = _save_then_pause
kind, layout, ckpt, cfg = sys.argv[1], DataLayout(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
if kind == "voice":
    from s2f.train.config import TrainConfig
    from s2f.train.voice import train_voice_encoder
    res = train_voice_encoder(TrainConfig(**json.loads(cfg)), layout, resume=True, ckpt_dir=ckpt)
else:
    from s2f.train.config import DecoderTrainConfig
    from s2f.train.decoder import train_face_decoder
    res = train_face_decoder(DecoderTrainConfig(**json.loads(cfg)), layout, resume=True,
                             ckpt_dir=ckpt)
print("finished at step", res.step, flush=True)
"""


def face_corpus(root: Path) -> dict[str, Path]:
    """Media (real VP9 face clips) and a manifest under `root`; written once."""
    from s2f.media.synthetic_clips import write_face_clip

    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    clips = {"faceaaaaaaa": [(0.5, 0.45)], "facebbbbbbb": [(0.3, 0.5)], "noface00000": []}
    for name, centres in clips.items():
        if not (media / f"{name}.webm").exists():
            write_face_clip(media / f"{name}.webm", "vp9", centres=centres)
    lines = []
    for i in range(N_LINES):
        start = round(0.05 * (i // len(FACE_IDS)), 2)
        lines.append(f"{FACE_IDS[i % len(FACE_IDS)]},{start},{start + 1.2:.2f},0.5,0.45")
    manifest = root / f"{MANIFEST}.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return {"media": media, "manifest": manifest}


def ingest_clips(corpus: dict[str, Path], data_dir: Path) -> DataLayout:
    """The clips table preprocessing reads (ingested in-process with the library)."""
    run_shards(corpus["manifest"], corpus["media"], data_dir, SHARD_SIZE)
    check_clips(data_dir, {MANIFEST: corpus["manifest"]})
    return DataLayout(data_dir)


def read_sorted(layout: DataLayout, table: str) -> pl.DataFrame:
    """Every shard of `table`, each read completely with pyarrow (raises on a torn file),
    concatenated and sorted by the table's key."""
    paths = shard_paths(layout, table)
    assert all(not p.name.startswith(".") and ".tmp" not in p.name for p in paths), paths
    frames = [pl.from_arrow(pq.read_table(p)) for p in paths]
    assert frames, f"no {table} shards"
    return pl.concat(frames).sort(KEYS[table])  # type: ignore[arg-type]


def _unique(frame: pl.DataFrame, table: str) -> None:
    assert frame.select(pl.struct(KEYS[table]).is_unique().all()).item(), \
        f"{table}: a key has two rows"


def check_partial(layout: DataLayout) -> dict[str, int]:
    """What a reader may see at any moment, even right after a kill: only complete shards,
    no key twice, and a `preprocess` shard (written last: it marks its clips shard done)
    only beside its `faces` and `face_features` shards of the same input. Returns how many
    shards of each table exist, plus `unmarked`: clips shards whose faces were written but
    whose `preprocess` marker was not yet (the kill fell between the writes)."""
    counts: dict[str, int] = {}
    for table in OUTPUT_TABLES:
        paths = shard_paths(layout, table)
        counts[table] = len(paths)
        if paths:
            _unique(read_sorted(layout, table), table)
    for path in shard_paths(layout, "preprocess"):
        sha = read_extra(path)["input_sha256"]  # type: ignore[index]
        for other in ("faces", "face_features"):
            sibling = layout.table_dir(other) / path.parent.name / path.name
            assert (read_extra(sibling) or {}).get("input_sha256") == sha, sibling
    counts["unmarked"] = counts["faces"] - counts["preprocess"]
    return counts


def check_preprocess(layout: DataLayout) -> dict[str, pl.DataFrame]:
    """What must hold after a finished run, killed before or not: every clips shard done;
    exactly one `preprocess` row per ok clip, one `face_features` row per ok preprocess row,
    `faces_found` face rows per clip; every shard complete; no temp file listed."""
    clips = pl.concat([pl.from_arrow(pq.read_table(p)) for p in shard_paths(layout, "clips")])
    # The flow's and the driver's configs differ only in what outputs do not depend on.
    config = PreprocessConfig(workers=1, device="cpu")
    assert all(shard_is_done(layout, p, config) for p in shard_paths(layout, "clips")), \
        "a clips shard is not marked done"
    tables = {t: read_sorted(layout, t) for t in OUTPUT_TABLES}
    for table, frame in tables.items():
        _unique(frame, table)
    ok_clips = sorted(clips.filter(pl.col("status") == "ok")["clip_key"].to_list())
    pre = tables["preprocess"]
    assert pre["clip_key"].to_list() == ok_clips, "preprocess rows != ok clips"
    assert set(pre["status"]) <= set(PREPROCESS_STATUSES)
    ok = pre.filter(pl.col("status") == "ok")
    assert tables["face_features"]["clip_key"].to_list() == ok["clip_key"].to_list()
    per_clip = tables["faces"].group_by("clip_key").len()
    found = dict(zip(pre["clip_key"], pre["faces_found"], strict=True))
    assert all(found[k] == n for k, n in per_clip.iter_rows()), "faces rows != faces_found"
    assert sum(found.values()) == tables["faces"].height
    return tables


def temps(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob(TEMP_GLOB) if "prefect" not in p.parts]


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool],
              rng: np.random.Generator, max_delay_s: float, timeout_s: float = 180.0) -> bool:
    """Wait until `ready()` (polled every 20 ms), then SIGKILL the child's process group after
    a random delay in [0, max_delay_s). False if the child finished first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    time.sleep(float(rng.uniform(0.0, max_delay_s)))
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return True
