"""Prefect flow `preprocess`: `clips` shards -> `preprocess`, `faces`, `face_features` shards.

    s2f preprocess --data-dir s2f-data [--frames 3] [--detector hog|cnn]
                   [--encoder dlib-resnet|vggface] [--vggface-weights FILE.pt]

or from Python (after `flows.runtime.configure(data_dir)`):

    from flows.preprocess import PreprocessParams, preprocess_flow
    summary = preprocess_flow(PreprocessParams(data_dir=...))

Thin on purpose: the work is in `s2f.preprocess.shards` and `.clips`. One task per clips shard
(`tables/clips/<manifest>/shard-NNNNN.parquet` -> `tables/{preprocess,faces,face_features}/
<manifest>/shard-NNNNN.parquet`). A shard whose three outputs exist and record the input
shard's SHA-256 and the same parameters, and whose pages pass their checksums, is skipped, so
a re-run redoes only new, changed, failed or damaged shards; within a redone shard, clips whose
`clip_fingerprint` is unchanged are copied from its previous outputs or from the outputs of
another shard size, moved aside before any shard runs (`supersede_outputs`). A shard task that crashes is retried; a shard that still fails is reported and
fails the run after the other shards finish. Bad clips never fail a shard: they get a status.
Models (dlib, VGG-Face) and the DALI pipeline are loaded inside the worker thread, once per
thread. Within a shard, clips are spread over `workers` processes (`s2f.preprocess.pool`;
default one per core): dlib holds the GIL, so the one shard thread would use a single core.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.guards import flow_guard, retry_unless_storage_full, stage_guard
from flows.params import PreprocessParams
from flows.summaries import PreprocessSummary, ShardsFailed, failures_text
from s2f.preprocess.clips import PreprocessConfig
from s2f.preprocess.shards import (
    OUTPUT_TABLES,
    output_paths,
    preprocess_shard,
    read_status_counts,
    shard_is_done,
    supersede_outputs,
)
from storage.io import remove_stale_temps, shard_paths
from storage.layout import DataLayout
from storage.lock import StageLocked
from storage.schemas import PREPROCESS_STATUSES


def preprocess_config(params: PreprocessParams) -> PreprocessConfig:
    """The library's configuration of one shard's work (what a shard's fingerprint records)."""
    return PreprocessConfig(frames=params.frames, detector=params.detector,
                            encoder=params.encoder, vggface_weights=str(params.vggface_weights)
                            if params.vggface_weights else None, device=params.device,
                            workers=params.workers)


@task(name="preprocess-shard", cache_policy=NO_CACHE)
def preprocess_shard_task(clips_shard: Path, data_dir: Path, params: PreprocessParams
                          ) -> dict[str, Any]:
    layout, config = DataLayout(data_dir), preprocess_config(params)
    if shard_is_done(layout, clips_shard, config):
        return {"shard": str(clips_shard), "skipped": True,
                "counts": read_status_counts([output_paths(layout, clips_shard)["preprocess"]])}
    return preprocess_shard(clips_shard, layout, config)


@flow(name="preprocess", **flow_guard("preprocess"), task_runner=ThreadPoolTaskRunner(max_workers=1))
def preprocess_flow(params: PreprocessParams) -> PreprocessSummary:
    """Preprocess every clips shard; returns counts by status, shard counts and table paths.
    Raises StageLocked if another preprocess run holds this data directory."""
    layout = DataLayout(params.data_dir).ensure()
    # A second run would write the same output shards under the first one's feet.
    with stage_guard(layout, "preprocess"):
        # Holding the lock, any temporary file is a killed run's leftover: nobody will rename it.
        removed = remove_stale_temps([layout.table_dir(t) for t in OUTPUT_TABLES])
        if removed:
            get_run_logger().info("removed %d temporary files of killed runs", len(removed))
        return _preprocess(params, layout)


def _preprocess(params: PreprocessParams, layout: DataLayout) -> PreprocessSummary:
    logger = get_run_logger()
    shards = shard_paths(layout, "clips")
    logger.info("preprocess: %d clips shards under %s", len(shards), layout.table_dir("clips"))
    moved = supersede_outputs(layout)  # before any shard is written: the new ones read them
    if moved:
        logger.info("%d output shards of another layout moved aside; their clips are reused "
                    "(`s2f gc` removes them once no longer needed)", len(moved))
    shard_task = preprocess_shard_task.with_options(
        retries=params.retries, retry_delay_seconds=2,
        retry_condition_fn=retry_unless_storage_full)
    futures = [shard_task.submit(s, layout.root, params) for s in shards]
    counts: Counter[str] = Counter()
    done = skipped = run = reused = 0
    failed: list[str] = []
    for future, shard in zip(futures, shards, strict=True):
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - reported below, other shards are kept
            logger.error("shard %s failed: %s", shard, exc)
            failed.append(f"{shard}: " + f"{type(exc).__name__}: {exc}"[:300])
            continue
        counts.update(result["counts"])
        skipped += int(result["skipped"])
        done += int(not result["skipped"])
        run += int(result.get("clips_run", 0))
        reused += int(result.get("clips_reused", 0))
    rows = [{"status": s, "clips": int(counts.get(s, 0)), "meaning": m}
            for s, m in PREPROCESS_STATUSES.items() if counts.get(s)]
    create_table_artifact(key="preprocess-status-counts", table=rows or [{"status": "none",
                                                                          "clips": 0}],
                          description=f"preprocess: {done} shards done, {skipped} skipped, "
                                      f"{len(failed)} failed")
    summary = PreprocessSummary(
        counts=dict(counts), clips=sum(counts.values()), shards_run=done, shards_skipped=skipped,
        clips_run=run, clips_reused=reused,
        failed_shards=failed, tables={t: str(layout.table_dir(t)) for t in OUTPUT_TABLES})
    if failed:
        raise ShardsFailed(f"{len(failed)} of {len(shards)} shards failed (re-run to retry "
                           f"them): {failures_text(failed)}", summary)
    return summary


def run_from_cli(params: PreprocessParams) -> int:
    """`s2f preprocess`: run the flow, print counts by status and where the tables are.
    0 when it finished, 1 when a shard failed, 3 when another preprocess run holds the data
    directory."""
    state = preprocess_flow(params, return_state=True)
    if state.is_failed() and isinstance(exc := state.result(raise_on_failure=False), StageLocked):
        print(f"s2f preprocess: {exc}", file=sys.stderr)
        return 3
    layout = DataLayout(params.data_dir)
    counts = read_status_counts(shard_paths(layout, "preprocess"))
    print("preprocess: clips by status")
    for status in PREPROCESS_STATUSES:
        if counts.get(status):
            print(f"  {status:<14} {counts[status]}")
    for table in OUTPUT_TABLES:
        print(f"  table {table:<14} {layout.table_dir(table)}")
    if not state.is_completed():
        from storage.space import prefect_database_note

        print(f"preprocess failed: {state.message}")
        if note := prefect_database_note():
            print(f"s2f preprocess: {note}", file=sys.stderr)
        return 1
    return 0
