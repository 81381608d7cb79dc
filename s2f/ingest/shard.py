"""Ingest one shard of manifest lines end to end, without Prefect.

    rows = ingest_shard_rows(plan, layout, media_root)        # records + their pack (benchmarks)
    result = ingest_shard(plan, layout, media_root)           # + skip check + atomic Parquet

A shard is `plan.n_lines` physical lines read from byte `plan.offset` (see
`s2f.ingest.manifest.plan_manifests`). Each non-blank line becomes one `clips` record; rows of
the same video share one open of the media file. The shard's Parquet file carries, in its
`extra` metadata, its line range, the SHA-256 of its lines and a fingerprint of everything its
rows depend on (lines, duplicate references, the media files' name/size/mtime, the download
flag). A re-run skips a shard whose fingerprint is unchanged, so re-ingesting adds no rows;
appending lines redoes only the last shard and the new ones; media appearing later redoes the
shards that name it; a shard whose pages fail their checksums (a bit flipped on disk) is
redone, logged with the reason, as is one whose audio pack is missing or shorter than its rows
say. A shard's cut audio is one pack (`s2f.media.packs`: a tar of FLACs, streamed, fsynced and
renamed) written before its Parquet file, which is the commit point: a killed shard is redone
whole. The pack's name carries a token from the shard's fingerprint (`pack_token`): the same
inputs give the same name and keys (a resumed run's table equals an uninterrupted one's), other
inputs another name, so a pack is never overwritten with other contents while an older
Parquet file points into it; the packs the committed shard does not point to are deleted after
it is written (`prune_packs`).

    python -m s2f.ingest.shard MANIFEST.csv MEDIA_ROOT DATA_DIR [SHARD_SIZE]
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2f.ingest.manifest import ShardPlan, conflict_reason, is_blank, iter_raw_lines, parse_line
from s2f.ingest.media import (
    MediaError,
    MediaSource,
    encode_flac,
    find_media,
    media_state,
)
from s2f.media.packs import PackWriter, missing_audio, new_token, pack_token, prune_packs
from storage.io import (
    read_extra,
    read_table_verified,
    rows_to_table,
    shard_damage,
    write_table_atomic,
)
from storage.layout import DataLayout
from storage.schemas import CLIPS

# Bump when the records a shard produces would change for the same inputs.
INGEST_VERSION = 2  # 2: split_conflict
TABLE = "clips"

Fetch = Callable[[str], Path]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardResult:
    """What a shard run did: small enough to pass between Prefect tasks."""

    manifest: str
    index: int
    path: str
    skipped: bool
    counts: dict[str, int] = field(default_factory=dict)


def read_shard_lines(plan: ShardPlan) -> tuple[list[dict[str, Any]], str]:
    """Parsed records of the shard's non-blank lines and the SHA-256 of its bytes."""
    hasher = hashlib.sha256()
    with open(plan.manifest_path, "rb") as fh:
        fh.seek(plan.offset)
        records = [parse_line(raw, plan.manifest, plan.split)
                   for raw in iter_raw_lines(fh, plan.first_line, plan.n_lines, hasher)
                   if not is_blank(raw)]
    manifest_file = Path(plan.manifest_path).name
    for record in records:
        where = plan.conflicts.get(record.get("youtube_id") or "")
        if where is not None and record["status"] == "ok":
            record["status"] = "split_conflict"
            record["error"] = conflict_reason(record["youtube_id"], manifest_file,
                                              record["line_no"], plan.split, where)
            continue
        first = plan.duplicates.get(record["line_no"])
        if first is not None and record["status"] == "ok":
            first_manifest, first_line = first
            record["status"] = "duplicate"
            record["error"] = (f"duplicate of {first_manifest} line {first_line} "
                               f"(same clip key {record['clip_key']})")
    return records, hasher.hexdigest()


def _video_ids(records: list[dict[str, Any]]) -> list[str]:
    return sorted({r["youtube_id"] for r in records if r["status"] == "ok"})


def shard_fingerprint(plan: ShardPlan, lines_sha256: str, video_ids: list[str],
                      media_root: Path, download: bool) -> str:
    media = [media_state(media_root, vid) for vid in video_ids]
    payload = {
        "version": INGEST_VERSION, "manifest": plan.manifest, "split": plan.split,
        "first_line": plan.first_line, "n_lines": plan.n_lines, "lines_sha256": lines_sha256,
        "duplicates": sorted((k, list(v)) for k, v in plan.duplicates.items()),
        "conflicts": sorted((k, sorted(v.items())) for k, v in plan.conflicts.items()),
        "media_root": str(Path(media_root).resolve()), "media": media,
        # The flag only matters to shards with missing media: turning it on redoes just those.
        "download": download if any(":absent:" in m for m in media) else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fail(rows: list[dict[str, Any]], status: str, reason: str) -> None:
    for row in rows:
        row["status"], row["error"] = status, reason


def _ingest_video(youtube_id: str, rows: list[dict[str, Any]], pack: PackWriter,
                  media_root: Path, fetch: Fetch | None) -> None:
    """Fill in the media fields of every row of one video (one open of the file)."""
    try:
        path = find_media(media_root, youtube_id)
    except MediaError as missing:
        if fetch is None:
            _fail(rows, missing.status, missing.reason)
            return
        try:
            path = fetch(youtube_id)
        except Exception as exc:  # whatever the downloader raised after its retries
            _fail(rows, "download_failed", f"{type(exc).__name__}: {exc}"[:400])
            return
    try:
        source = MediaSource(path)
    except MediaError as exc:
        _fail(rows, exc.status, exc.reason)
        return
    except Exception as exc:  # PyAV raising something unforeseen on a strange file
        _fail(rows, "error", f"probing {path}: {type(exc).__name__}: {exc}"[:400])
        return
    try:
        probe = source.probe.as_record()
        for row in rows:
            row.update(probe)
            try:
                segment = source.decode_segment(row["start_s"], row["end_s"])
            except MediaError as exc:
                row["status"], row["error"] = exc.status, exc.reason
                continue
            except Exception as exc:
                row["status"] = "error"
                row["error"] = f"decoding {path}: {type(exc).__name__}: {exc}"[:400]
                continue
            # Writing is outside the try: a full disk must stop the shard, not mark the clip.
            row["audio_path"] = pack.add(row["clip_key"], encode_flac(segment))
            row["audio_samples"] = int(len(segment))
    finally:
        source.close()


def ingest_shard_rows(plan: ShardPlan, layout: DataLayout, media_root: Path,
                      fetch: Fetch | None = None,
                      records: list[dict[str, Any]] | None = None,
                      token: str | None = None) -> list[dict[str, Any]]:
    """Every non-blank line of the shard as a `clips` record, media probed and audio cut into
    the shard's pack `layout.pack_path(shard, token)` (committed on return; none when no clip
    has audio; `token` None: a new one). `fetch(youtube_id) -> Path` downloads a missing video
    (None: missing stays missing)."""
    if records is None:
        records, _ = read_shard_lines(plan)
    by_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["status"] == "ok":
            by_video[record["youtube_id"]].append(record)
    pack_path = layout.pack_path(layout.shard_path(TABLE, plan.manifest, plan.index),
                                 token or new_token())
    with PackWriter(pack_path, layout) as pack:
        for youtube_id in sorted(by_video):
            _ingest_video(youtube_id, by_video[youtube_id], pack, Path(media_root), fetch)
    return records


def audio_damage(layout: DataLayout, shard: Path) -> str | None:
    """Why the audio a committed clips shard points to is not all there (its pack missing or
    short: `s2f.media.packs.missing_audio`), or None."""
    try:
        keys = read_table_verified(shard, ["audio_path"]).column("audio_path").to_pylist()
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:400]
    return missing_audio(layout, keys)


def ingest_shard(plan: ShardPlan, layout: DataLayout, media_root: Path,
                 fetch: Fetch | None = None, download: bool = False) -> ShardResult:
    """Ingest a shard unless its Parquet file is already current; write it atomically."""
    out = layout.shard_path(TABLE, plan.manifest, plan.index)
    records, lines_sha = read_shard_lines(plan)
    video_ids = _video_ids(records)
    before = shard_fingerprint(plan, lines_sha, video_ids, media_root, download)
    extra = read_extra(out) if out.exists() else None
    if extra and extra.get("fingerprint") == before:
        # the footer is current: are its pages still intact, and its pack there?
        damage = shard_damage(out) or audio_damage(layout, out)
        if damage is None:
            return ShardResult(plan.manifest, plan.index, str(out), True,
                               dict(extra.get("counts", {})))
        log.warning("redoing %s: the shard is damaged (%s)", out, damage)
    token = pack_token(before)
    records = ingest_shard_rows(plan, layout, media_root, fetch, records, token)
    counts = dict(Counter(r["status"] for r in records))
    # After downloads the media state differs; fingerprint what the rows were made from.
    after = shard_fingerprint(plan, lines_sha, video_ids, media_root, download)
    write_table_atomic(rows_to_table(records, CLIPS), out, extra={
        "fingerprint": after, "lines_sha256": lines_sha, "first_line": plan.first_line,
        "last_line": plan.first_line + plan.n_lines - 1, "n_lines": plan.n_lines,
        "byte_offset": plan.offset, "manifest_path": plan.manifest_path, "counts": counts,
        "ingest_version": INGEST_VERSION,
    })
    prune_packs(layout, out, keep=layout.pack_path(out, token))
    return ShardResult(plan.manifest, plan.index, str(out), False, counts)


def remove_stale_shards(layout: DataLayout, manifest: str, n_shards: int,
                        blank_shards: Iterable[int] = ()) -> list[Path]:
    """Delete shards past the end of a manifest that shrank since the last run, and those
    whose lines are all blank now (`ManifestPlan.blank_shards`: no shard is planned there)."""
    blank = set(blank_shards)
    stale = [p for p in sorted((layout.table_dir(TABLE) / manifest).glob("shard-*.parquet"))
             if int(p.stem.split("-")[1]) >= n_shards or int(p.stem.split("-")[1]) in blank]
    for path in stale:
        path.unlink()
        prune_packs(layout, path)
    return stale


if __name__ == "__main__":
    import sys

    from s2f.ingest.manifest import plan_manifests

    manifest_path, media_dir, data_dir = (Path(a) for a in sys.argv[1:4])
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 256
    data_layout = DataLayout(data_dir).ensure()
    for manifest_plan in plan_manifests([manifest_path], size):
        for shard in manifest_plan.shards:
            print(ingest_shard(shard, data_layout, media_dir))
