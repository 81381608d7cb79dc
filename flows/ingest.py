"""Prefect flows `ingest` (AVSpeech manifests -> `clips`, one row per manifest line) and
`ingest-pairs` (a directory of real voice-face pairs laid out like the Speech2Face project page
-> the same `clips` table, one row per pair: `s2f.ingest.pairs`; `s2f real-pairs` runs it).

    s2f ingest --manifest avspeech_train.csv --manifest avspeech_test.csv \\
               --media-root media/ --data-dir s2f-data [--download] [--shard-size 1024]
    s2f ingest --manifest latest.csv --split train ...   # a name that does not end in the split

or from Python (after `flows.runtime.configure(data_dir)`):

    from flows.ingest import IngestParams, ingest_flow
    summary = ingest_flow(IngestParams(manifests=[...], media_root=..., data_dir=...))

Thin on purpose: the work is in `s2f.ingest`. One planning task streams every manifest once
(shard byte offsets, duplicate clip keys), then one task per shard of `shard_size` lines
(`.map`, so the task runner can run shards in parallel) validates, probes, cuts audio and writes
`tables/clips/<manifest>/shard-NNNNN.parquet` atomically. A re-run skips shards whose inputs are
unchanged. Another `shard_size` (default: the data directory's current one) moves the old
shards aside first and the new shards copy every clip whose `clip_fingerprint` is unchanged. With `download`, a missing video is fetched by the `download-video` task, retried
with exponential backoff, then recorded as `download_failed`. Bad rows are normal and never fail
the run; a shard that crashes (a full disk, a bug) fails the flow after the other shards finish,
and a re-run redoes only that shard.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped
from tqdm import tqdm

from flows.guards import download_slot, flow_guard, stage_guard
from flows.params import IngestPairsParams, IngestParams
from flows.summaries import IngestSummary, ShardsFailed, failures_text
from s2f.ingest.download import download_video
from s2f.ingest.manifest import (
    DEFAULT_SHARD_SIZE,
    ManifestPlan,
    ShardPlan,
    manifest_name_of,
    plan_manifests,
)
from s2f.ingest.media import MediaError, find_media
from s2f.ingest.prior import read_prior_clips
from s2f.ingest.shard import (
    ShardResult,
    current_shard_size,
    ingest_shard,
    remove_stale_shards,
    supersede_shards,
)
from storage.io import remove_stale_temps
from storage.layout import DataLayout
from storage.lock import StageLocked
from storage.schemas import CLIP_STATUSES


@task(name="plan-ingest", cache_policy=NO_CACHE)
def plan_ingest(manifests: list[Path], shard_size: int, split: str | None = None,
                data_dir: Path | None = None) -> list[ManifestPlan]:
    """Plan the run against the whole data directory: earlier runs' clips of other manifests
    decide duplicates and split conflicts too (`s2f.ingest.prior`)."""
    prior = None
    if data_dir is not None:
        prior = read_prior_clips(data_dir, {manifest_name_of(p) for p in manifests})
        for shard in prior.unreadable:
            get_run_logger().warning("clips shard not read for the cross-run checks: %s", shard)
    return plan_manifests(manifests, shard_size, split, prior)


@task(name="download-video", cache_policy=NO_CACHE)
def download_video_task(youtube_id: str, media_root: Path, url_template: str) -> Path:
    return download_video(youtube_id, media_root, url_template)


# Two shards naming the same missing video must not both run yt-dlp on one `.part` file.
_download_locks: dict[str, threading.Lock] = {}
_download_locks_guard = threading.Lock()


def _fetcher(media_root: Path, url_template: str, retries: int, first_delay_s: float):
    delays = [first_delay_s * 2**attempt for attempt in range(retries)]
    download = download_video_task.with_options(retries=retries, retry_delay_seconds=delays)

    def fetch(youtube_id: str) -> Path:
        with _download_locks_guard:
            lock = _download_locks.setdefault(youtube_id, threading.Lock())
        with lock:
            try:
                return find_media(media_root, youtube_id)  # another shard fetched it meanwhile
            except MediaError:
                with download_slot():  # with a Prefect server: a bound over all hosts
                    return download(youtube_id, media_root, url_template)

    return fetch


@task(name="ingest-shard", cache_policy=NO_CACHE)
def ingest_shard_task(plan: ShardPlan, data_dir: Path, media_root: Path,
                      params: IngestParams) -> ShardResult:
    fetch = (_fetcher(media_root, params.url_template, params.download_retries,
                      params.download_retry_delay_s) if params.download else None)
    return ingest_shard(plan, DataLayout(data_dir), media_root, fetch, params.download)


def _status_table(counts: Counter[str]) -> list[dict[str, Any]]:
    return [{"status": status, "rows": int(counts.get(status, 0)), "meaning": meaning}
            for status, meaning in CLIP_STATUSES.items() if counts.get(status)]


@flow(name="ingest", **flow_guard("ingest"), task_runner=ThreadPoolTaskRunner(max_workers=2))
def ingest_flow(params: IngestParams) -> IngestSummary:
    """Ingest every manifest line into `clips`; returns counts by status and table paths.
    Raises StageLocked if another ingest run holds this data directory."""
    params.check_media_root()
    layout = DataLayout(params.data_dir).ensure()
    # A second ingest on the same data directory would rewrite and delete the same shards.
    with stage_guard(layout, "ingest"):
        # Holding the lock, any temporary file is a killed run's leftover: nobody will rename it.
        removed = remove_stale_temps([layout.table_dir("clips"), layout.root / "audio"])
        if removed:
            get_run_logger().info("removed %d temporary files of killed runs", len(removed))
        return _ingest(params)


def _ingest(params: IngestParams) -> IngestSummary:
    logger = get_run_logger()
    layout = DataLayout(params.data_dir).ensure()
    if params.download:
        params.media_root.mkdir(parents=True, exist_ok=True)

    shard_size = (params.shard_size or current_shard_size(
        layout, [manifest_name_of(p) for p in params.manifests]) or DEFAULT_SHARD_SIZE)
    plans: list[ManifestPlan] = plan_ingest(params.manifests, shard_size, params.split,
                                            layout.root)
    for plan in plans:
        # Before any shard is written: another layout's shards are read by the new ones.
        moved = supersede_shards(layout, plan)
        if moved:
            logger.info("%s: %d shards of another layout moved aside; their clips are reused "
                        "(`s2f gc` removes them once no longer needed)", plan.manifest, len(moved))
        removed = remove_stale_shards(layout, plan.manifest, plan.n_shards, plan.blank_shards)
        if removed:
            logger.info("%s shrank: removed %d stale shards", plan.manifest, len(removed))
    shards = [shard for plan in plans for shard in plan.shards]
    logger.info("%d manifests, %d lines (%d blank), %d shards of up to %d lines",
                len(plans), sum(p.lines for p in plans), sum(p.blank_lines for p in plans),
                len(shards), shard_size)

    futures = ingest_shard_task.map(shards, unmapped(layout.root), unmapped(params.media_root),
                                    unmapped(params))
    counts, results, failed = collect_shards(futures, len(shards), "ingest shards")
    return ingest_summary(layout, counts, results, failed,
                          lines=int(sum(p.lines for p in plans)),
                          blank_lines=int(sum(p.blank_lines for p in plans)),
                          tables=[p.manifest for p in plans])


def collect_shards(futures: Any, n: int, desc: str
                   ) -> tuple[Counter[str], list[ShardResult], list[str]]:
    """Wait for every shard task: counts by status, the results, and the failures (reported
    after the rest have finished: a full disk or a bug, never a bad row). Progress on the
    terminal and as the `ingest-progress` artifact."""
    logger = get_run_logger()
    progress_id = create_progress_artifact(0.0, key="ingest-progress",
                                           description=f"{desc}: shards done")
    counts: Counter[str] = Counter()
    results: list[ShardResult] = []
    failed: list[str] = []
    with tqdm(total=n, desc=desc, unit="shard", file=sys.stderr) as bar:
        for done, future in enumerate(as_completed(futures), start=1):
            try:
                result = future.result()
            except Exception as exc:  # an environment failure or a bug: report after the rest
                failed.append(f"{type(exc).__name__}: {exc}")
                logger.error("shard failed: %s", exc)
            else:
                results.append(result)
                counts.update(result.counts)
            bar.update(1)
            if progress_id is not None and (done == n or done % 10 == 0):
                update_progress_artifact(progress_id, 100.0 * done / max(n, 1))
    if progress_id is not None:
        update_progress_artifact(progress_id, 100.0)
    return counts, results, failed


def ingest_summary(layout: DataLayout, counts: Counter[str], results: list[ShardResult],
                   failed: list[str], lines: int, blank_lines: int, tables: list[str]
                   ) -> IngestSummary:
    """The status-count artifact and the summary; raises after them if a shard failed."""
    create_table_artifact(_status_table(counts), key="ingest-status-counts",
                          description="clips rows by status after this ingest run")
    summary = IngestSummary(
        counts={k: int(v) for k, v in sorted(counts.items())}, clips=int(sum(counts.values())),
        lines=lines, blank_lines=blank_lines,
        shards_run=sum(not r.skipped for r in results),
        shards_skipped=sum(r.skipped for r in results),
        clips_run=sum(r.media_rows for r in results),
        clips_reused=sum(r.reused_rows for r in results),
        tables=sorted({str(layout.table_dir("clips") / t) for t in tables}),
        failed_shards=failed)
    get_run_logger().info("ingest summary: %s", summary.model_dump())
    if failed:
        raise ShardsFailed(f"{len(failed)} shards failed (re-run to retry them): "
                           f"{failures_text(failed)}", summary)
    return summary


def run_from_cli(params: IngestParams) -> int:
    """`s2f ingest`: 0 when the run finished (bad rows are normal), 1 when shards failed (the
    summary, then one line of why), 2 for bad parameters, 3 when another ingest run holds the
    data directory."""
    try:
        params.check_media_root()
        params.check_split_names()
    except ValueError as exc:
        print(f"s2f ingest: invalid parameters:\n{exc}", file=sys.stderr)
        return 2
    try:
        summary = ingest_flow(params)
    except StageLocked as exc:
        print(f"s2f ingest: {exc}", file=sys.stderr)
        return 3
    except ShardsFailed as exc:  # the summary of what finished, then why the rest did not
        from storage.space import prefect_database_note

        print_ingest_summary(exc.summary, params.data_dir)  # type: ignore[arg-type]
        print(f"s2f ingest: {exc}", file=sys.stderr)
        if note := prefect_database_note():
            print(f"s2f ingest: {note}", file=sys.stderr)
        return 1
    print_ingest_summary(summary, params.data_dir)
    return 0


def print_ingest_summary(summary: IngestSummary, data_dir: Path) -> None:
    print(f"clips tables: {', '.join(summary.tables)}")
    print(f"{summary.lines} lines ({summary.blank_lines} blank), {summary.clips} rows, "
          f"{summary.shards} shards ({summary.shards_skipped} unchanged, skipped"
          + (f"; {len(summary.failed_shards)} failed" if summary.failed_shards else "") + ")")
    if summary.clips_reused:
        print(f"{summary.clips_reused} clips reused from earlier shard files (unchanged inputs), "
              f"{summary.clips_run} probed and cut")
    for status, n in summary.counts.items():
        print(f"  {status:<16} {n}")
    print(f"details: s2f status --data-dir {data_dir}")


# -- the real voice-face pairs source --------------------------------------------------------

@task(name="plan-pairs", cache_policy=NO_CACHE)
def plan_pairs(pairs: Path, seed: int, fractions: tuple[float, float, float],
               shard_size: int) -> list[Any]:
    """List the pairs directory (no decoding), split it by person, cut it into shards."""
    from s2f.ingest.pairs import assign_splits, plan_pair_shards, scan_pairs

    records = scan_pairs(pairs)
    assign_splits(records, seed=seed, fractions=fractions)
    return plan_pair_shards(records, shard_size)


@task(name="ingest-pairs-shard", cache_policy=NO_CACHE)
def ingest_pair_shard_task(shard: Any, data_dir: Path) -> ShardResult:
    from s2f.ingest.pairs import ingest_pair_shard

    return ingest_pair_shard(shard, DataLayout(data_dir))


@flow(name="ingest-pairs", **flow_guard("ingest-pairs"), task_runner=ThreadPoolTaskRunner(max_workers=2))
def ingest_pairs_flow(params: IngestPairsParams) -> IngestSummary:
    """Ingest a directory laid out like the Speech2Face project page (`s2f.ingest.pairs`) into
    `clips`: one row per stem, split by person, audio cut to FLAC; same statuses, shards and
    skip rules as manifest ingest. Raises StageLocked if another ingest holds the data dir."""
    from s2f.ingest.pairs import remove_stale_pair_shards

    layout = DataLayout(params.data_dir).ensure()
    logger = get_run_logger()
    with stage_guard(layout, "ingest"):
        removed = remove_stale_temps([layout.table_dir("clips"), layout.root / "audio"])
        if removed:
            logger.info("removed %d temporary files of killed runs", len(removed))
        shards = plan_pairs(params.pairs, params.split_seed, params.split_fractions,
                            params.shard_size)
        remove_stale_pair_shards(layout, shards)
        logger.info("%s: %d pairs shards", params.pairs, len(shards))
        futures = ingest_pair_shard_task.map(shards, unmapped(layout.root))
        counts, results, failed = collect_shards(futures, len(shards), "ingest pairs")
    return ingest_summary(layout, counts, results, failed, lines=int(sum(counts.values())),
                          blank_lines=0, tables=[s.manifest for s in shards])
