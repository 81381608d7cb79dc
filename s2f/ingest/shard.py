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
Parquet file points into it (nor while rows the shard reuses name it: `new_pack_path` then
derives another token). Ingest deletes no pack: a redone shard's earlier pack, a killed
run's, a stale shard's stay until `s2f gc` (`storage.gc`) finds no `clips` row naming them
(rows copied by re-sharding may name a pack of another shard index).

Each row that went through the media work records its `clip_fingerprint` (the line's bytes and
number, its video's media state, the download flag where the media is absent). A shard that is
redone first reads the rows it may reuse: its own previous file, and the files of another shard
size that `supersede_shards` moved aside (`storage.superseded`); a video whose every row there
has an unchanged fingerprint, and whose audio is still there (`pack_holds`: the pack exists and
is long enough; or the per-clip FLAC exists), is copied, not opened again: its `audio_path`
keeps naming the pack it was cut into, so a shard's rows may point into several packs. So a
new `--shard-size` rewrites the Parquet files and cuts no audio, and media appearing for one
video redoes that video only.

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

from s2f.ingest.manifest import (
    ManifestPlan,
    ShardPlan,
    conflict_reason,
    is_blank,
    iter_raw_lines,
    parse_line,
    video_key,
)
from s2f.ingest.media import (
    MediaError,
    MediaSource,
    encode_flac,
    find_media,
    media_state,
)
from s2f.media.packs import PackWriter, missing_audio, new_token, pack_holds, pack_token
from storage.io import (
    read_extra,
    read_shard,
    read_table_verified,
    rows_to_table,
    shard_damage,
    write_table_atomic,
)
from storage.layout import DataLayout, parse_audio_key
from storage.schemas import CLIPS
from storage.superseded import line_range, overlapping, supersede

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
    media_rows: int = 0   # rows whose media were probed and cut in this run
    reused_rows: int = 0  # rows copied from an earlier file (same clip_fingerprint)


def read_shard_lines(plan: ShardPlan) -> tuple[list[dict[str, Any]], str]:
    """Parsed records of the shard's non-blank lines and the SHA-256 of its bytes."""
    hasher = hashlib.sha256()
    with open(plan.manifest_path, "rb") as fh:
        fh.seek(plan.offset)
        records = [parse_line(raw, plan.manifest, plan.split) | {"_line": _line_digest(raw)}
                   for raw in iter_raw_lines(fh, plan.first_line, plan.n_lines, hasher)
                   if not is_blank(raw)]
    manifest_file = Path(plan.manifest_path).name
    for record in records:
        where = plan.conflicts.get(video_key(record.get("youtube_id") or ""))
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


def _line_digest(raw: Any) -> str:
    return f"{hashlib.sha256(raw.data).hexdigest()[:32]}:{raw.length}"


def clip_fingerprint(record: dict[str, Any], media: str, media_root: Path,
                     download: bool) -> str:
    """One clip's inputs and settings: what its media fields were made from. `media` is its
    video's `media_state`; the download flag counts only while the media is absent."""
    payload = [INGEST_VERSION, record["manifest"], record["split"], record["line_no"],
               record["_line"], str(Path(media_root).resolve()), media,
               download if ":absent:" in media else None]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


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
                      token: str | None = None,
                      reuse: dict[int, dict[str, Any]] | None = None,
                      download: bool = False) -> list[dict[str, Any]]:
    """Every non-blank line of the shard as a `clips` record, media probed and audio cut into
    the shard's pack (`new_pack_path`: `token`'s; committed on return; none when no clip is
    cut; `token` None: a new one). `fetch(youtube_id) -> Path` downloads a missing video
    (None: missing stays missing). `reuse`: earlier rows by line number (`reusable_rows`); a
    video whose every ok row is there with the same `clip_fingerprint` and whose audio is
    still there is copied (marked `_reused`, its `audio_path` still naming the pack or FLAC it
    was cut into), not opened."""
    if records is None:
        records, _ = read_shard_lines(plan)
    by_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["status"] == "ok":
            by_video[record["youtube_id"]].append(record)
    root = Path(media_root)
    sizes: dict[str, int] = {}  # pack sizes, one stat per pack
    to_cut, named = [], set()
    for youtube_id in sorted(by_video):
        rows = by_video[youtube_id]
        state = media_state(root, youtube_id)
        fingerprints = [clip_fingerprint(r, state, root, download) for r in rows]
        earlier = [(reuse or {}).get(r["line_no"]) for r in rows]
        if not all(e is not None and e.get("clip_fingerprint") == f and _audio_kept(layout, e, sizes)
                   for e, f in zip(earlier, fingerprints, strict=True)):
            to_cut.append(youtube_id)
            continue
        for row, old in zip(rows, earlier, strict=True):
            row.update({k: v for k, v in old.items() if k in CLIPS.names}, _reused=True)  # type: ignore[union-attr]
            ref = parse_audio_key(row["audio_path"]) if row.get("audio_path") else None
            if ref is not None:
                named.add(layout.resolve(ref.pack))
    pack_path = new_pack_path(layout, plan, token or new_token(), named)
    with PackWriter(pack_path, layout) as pack:
        for youtube_id in to_cut:
            rows = by_video[youtube_id]
            _ingest_video(youtube_id, rows, pack, root, fetch)
            state = media_state(root, youtube_id)  # after a download: what rows were made from
            for row in rows:
                row["clip_fingerprint"] = clip_fingerprint(row, state, root, download)
    return records


def new_pack_path(layout: DataLayout, plan: ShardPlan, token: str, named: set[Path]) -> Path:
    """The pack the shard's cut audio goes to: `token`'s, unless rows the shard reuses name
    that very file (the shard redone under the fingerprint an earlier pack of it was written
    with: a damaged shard, a re-shard back to an earlier size), then the first token derived
    from it that no such row names: a pack that rows name is never rewritten. Deterministic,
    so a resumed run writes the same name."""
    shard = layout.shard_path(TABLE, plan.manifest, plan.index)
    path = layout.pack_path(shard, token)
    while path in named:
        token = pack_token(hashlib.sha256(token.encode()).hexdigest())
        path = layout.pack_path(shard, token)
    return path


def _audio_kept(layout: DataLayout, row: dict[str, Any], sizes: dict[str, int]) -> bool:
    """Whether a row's audio can be reused as it is: no audio, a per-clip FLAC that exists, or
    a member inside a pack that exists and is long enough (`pack_holds`)."""
    key = row.get("audio_path")
    return not key or pack_holds(layout, key, sizes)


def audio_damage(layout: DataLayout, shard: Path) -> str | None:
    """Why the audio a committed clips shard points to is not all there (its pack missing or
    short: `s2f.media.packs.missing_audio`), or None."""
    try:
        keys = read_table_verified(shard, ["audio_path"]).column("audio_path").to_pylist()
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:400]
    return missing_audio(layout, keys)


def reusable_rows(plan: ShardPlan, layout: DataLayout, out: Path) -> dict[int, dict[str, Any]]:
    """Rows with a `clip_fingerprint` that earlier files hold for this shard's lines: the
    shard's own previous file and the superseded files overlapping it, by line number."""
    last = plan.first_line + plan.n_lines - 1
    found: dict[int, dict[str, Any]] = {}
    for path in [*overlapping(layout, TABLE, plan.manifest, plan.first_line, last),
                 *([out] if out.exists() else [])]:  # the own file last: the newest rows
        try:
            rows = read_shard(path, TABLE).to_pylist()
        except (OSError, ValueError) as exc:  # damaged: its clips are simply redone
            log.warning("not reusing %s: %s", path, exc)
            continue
        for row in rows:
            if row.get("clip_fingerprint") and plan.first_line <= row["line_no"] <= last:
                found[row["line_no"]] = row
    return found


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
    reuse = reusable_rows(plan, layout, out)
    records = ingest_shard_rows(plan, layout, media_root, fetch, records, pack_token(before),
                                reuse, download)
    counts = dict(Counter(r["status"] for r in records))
    reused = sum(bool(r.get("_reused")) for r in records)
    worked = sum(bool(r.get("clip_fingerprint")) for r in records) - reused
    # After downloads the media state differs; fingerprint what the rows were made from.
    after = shard_fingerprint(plan, lines_sha, video_ids, media_root, download)
    write_table_atomic(rows_to_table(records, CLIPS), out, extra={
        "fingerprint": after, "lines_sha256": lines_sha, "first_line": plan.first_line,
        "last_line": plan.first_line + plan.n_lines - 1, "n_lines": plan.n_lines,
        "byte_offset": plan.offset, "manifest_path": plan.manifest_path, "counts": counts,
        "ingest_version": INGEST_VERSION,
    })
    return ShardResult(plan.manifest, plan.index, str(out), False, counts, worked, reused)


def supersede_shards(layout: DataLayout, plan: ManifestPlan) -> list[Path]:
    """Move aside (`storage.superseded`) every live shard of the manifest whose lines differ
    from the lines now planned under its name (another shard size; lines appended to the
    last one), before any shard is written: the shard tasks reuse their rows. Shards wholly
    past the manifest's end, or the same lines all blank now, are left to
    `remove_stale_shards`."""
    size = plan.shard_size
    moved = []
    for path in sorted((layout.table_dir(TABLE) / plan.manifest).glob("shard-*.parquet")):
        lines = line_range(path)
        index = int(path.stem.split("-")[1])
        planned = (index * size + 1, min((index + 1) * size, plan.lines))
        if lines is None or lines == planned or lines[0] > plan.lines:
            continue
        moved.append(supersede(layout, TABLE, plan.manifest, path, lines))
    return moved


def current_shard_size(layout: DataLayout, manifests: Iterable[str]) -> int | None:
    """The shard size the data directory's clips of these manifests were ingested with: the
    first shard's length in a manifest of several shards (None: no such manifest yet)."""
    for manifest in manifests:
        directory = layout.table_dir(TABLE) / manifest
        first, second = directory / "shard-00000.parquet", directory / "shard-00001.parquet"
        lines = line_range(first) if second.exists() else None
        if lines is not None:
            return lines[1] - lines[0] + 1
    return None


def remove_stale_shards(layout: DataLayout, manifest: str, n_shards: int,
                        blank_shards: Iterable[int] = ()) -> list[Path]:
    """Delete shards past the end of a manifest that shrank since the last run, and those
    whose lines are all blank now (`ManifestPlan.blank_shards`: no shard is planned there)."""
    blank = set(blank_shards)
    stale = [p for p in sorted((layout.table_dir(TABLE) / manifest).glob("shard-*.parquet"))
             if int(p.stem.split("-")[1]) >= n_shards or int(p.stem.split("-")[1]) in blank]
    for path in stale:
        path.unlink()  # its packs stay: reused rows of other shards may name them (`s2f gc`)
    return stale


if __name__ == "__main__":
    import sys

    from s2f.ingest.manifest import DEFAULT_SHARD_SIZE, plan_manifests

    manifest_path, media_dir, data_dir = (Path(a) for a in sys.argv[1:4])
    size = int(sys.argv[4]) if len(sys.argv) > 4 else DEFAULT_SHARD_SIZE
    data_layout = DataLayout(data_dir).ensure()
    for manifest_plan in plan_manifests([manifest_path], size):
        for shard in manifest_plan.shards:
            print(ingest_shard(shard, data_layout, media_dir))
