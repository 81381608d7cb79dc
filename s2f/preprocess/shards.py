"""One clips shard in, three output shards out: the driver `s2f preprocess` runs per shard.

    from s2f.preprocess.shards import preprocess_shard, shard_is_done
    if not shard_is_done(layout, clips_shard, config):
        preprocess_shard(clips_shard, layout, config)   # -> preprocess, faces, face_features

The clips are spread over one process per core (`s2f.preprocess.pool`), each running the
per-clip work of `s2f.preprocess.clips`. A shard is done when its three outputs record this
input's hash and these parameters (resumability) and every page of them passes its checksum
(`storage.io.shard_damage`: a flipped bit on disk redoes the shard, logged with the reason);
`preprocess` is written last.

A shard that is redone copies the clips it can instead of redoing them: every `preprocess` row
records its `clip_fingerprint` (the clip's `clips` row and the parameters), and the shard's
previous outputs and the outputs of another shard size that `supersede_outputs` moved aside
(`storage.superseded`) are read for clips with an unchanged one; their `preprocess`, `faces`
and `face_features` rows are copied. So a new shard size rewrites Parquet files and decodes
no frames.

Tests: `pytest tests/test_preprocess_flow.py tests/reliability/test_crash_preprocess.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from s2f.preprocess.clips import PREPROCESSED_STATUSES, PreprocessConfig, PreprocessTables
from s2f.preprocess.pool import preprocess_parallel
from storage.io import (
    file_sha256,
    read_extra,
    read_shard,
    read_table_verified,
    shard_damage,
    write_table_atomic,
)
from storage.layout import DataLayout
from storage.schemas import CLIPS, PREPROCESS_OUTPUT_TABLES
from storage.superseded import line_range, overlapping, supersede

log = logging.getLogger(__name__)

OUTPUT_TABLES = PREPROCESS_OUTPUT_TABLES


def output_paths(layout: DataLayout, clips_shard: Path) -> dict[str, Path]:
    """tables/clips/<manifest>/shard-N.parquet -> the same manifest/name under each output."""
    manifest, name = clips_shard.parent.name, clips_shard.name
    return {t: layout.table_dir(t) / manifest / name for t in OUTPUT_TABLES}


def shard_extra(clips_shard: Path, config: PreprocessConfig) -> dict[str, Any]:
    extra = {"input": str(clips_shard), "input_sha256": file_sha256(clips_shard),
             "params": config.fingerprint()}
    lines = line_range(clips_shard)
    if lines is not None:  # names the outputs if another shard size supersedes them
        extra |= {"first_line": lines[0], "last_line": lines[1]}
    return extra


def clip_fingerprint(row: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """One clip's inputs and settings: its whole `clips` row and the parameters."""
    clip = {name: row.get(name) for name in CLIPS.names}
    return hashlib.sha256(json.dumps([params, clip], sort_keys=True, default=str).encode()
                          ).hexdigest()


def supersede_outputs(layout: DataLayout) -> list[Path]:
    """Move aside every output shard whose lines differ from its clips shard's (another shard
    size), or whose clips shard is gone, before any shard is written: the shard tasks reuse
    their clips. Outputs that record no lines (written before issue 26) stay for `s2f gc`."""
    moved = []
    for table in OUTPUT_TABLES:
        for path in sorted(layout.table_dir(table).glob("*/shard-*.parquet")):
            lines = line_range(path)
            if lines is None:
                continue
            clips = layout.table_dir("clips") / path.parent.name / path.name
            if not clips.exists() or line_range(clips) != lines:
                moved.append(supersede(layout, table, path.parent.name, path, lines))
    return moved


def shard_is_done(layout: DataLayout, clips_shard: Path, config: PreprocessConfig) -> bool:
    """True when every output exists, records this input's hash and these parameters, and
    reads whole with every page checksum verified. A damaged output is logged (it is redone)."""
    want = shard_extra(clips_shard, config)
    paths = output_paths(layout, clips_shard)
    for path in paths.values():
        extra = read_extra(path)
        if not extra or extra.get("input_sha256") != want["input_sha256"] \
                or json.dumps(extra.get("params"), sort_keys=True) != json.dumps(want["params"],
                                                                              sort_keys=True):
            return False
    # Only once the footers say "done": a shard that is redone anyway is not read twice.
    for path in paths.values():
        damage = shard_damage(path)
        if damage is not None:
            log.warning("redoing %s: its output %s is damaged (%s)", clips_shard, path, damage)
            return False
    return True


def preprocess_shard(clips_shard: Path, layout: DataLayout, config: PreprocessConfig,
                     progress: bool = True) -> dict[str, Any]:
    """Preprocess one clips shard and write its three output shards atomically.

    `preprocess` is written last: it marks the shard finished. Returns a small summary record
    (`clips_run`: clips preprocessed now; `clips_reused`: copied from earlier outputs)."""
    clips_shard = Path(clips_shard)
    extra = shard_extra(clips_shard, config)
    rows = read_table_verified(clips_shard).to_pylist()
    fingerprints = {r["clip_key"]: clip_fingerprint(r, extra["params"])
                    for r in rows if r.get("clip_key")}
    reused = reusable_outputs(layout, clips_shard, rows, fingerprints)
    done = set(reused.preprocess.column("clip_key").to_pylist()) if reused else set()
    todo = [r for r in rows if r.get("clip_key") not in done]
    if reused is not None and not any(r.get("status") in PREPROCESSED_STATUSES for r in todo):
        # Every clip reused: no models loaded, no worker started.
        tables = PreprocessTables(*(getattr(reused, t).slice(0, 0) for t in OUTPUT_TABLES))
    else:
        tables = preprocess_parallel(todo, config, progress=progress,
                                     desc=f"{clips_shard.parent.name}/{clips_shard.stem}")
    run = tables.preprocess.num_rows
    tables.preprocess = _with_fingerprints(tables.preprocess, fingerprints)
    if reused is not None:
        tables = _in_clip_order(_merged(reused, tables), rows)
    paths = output_paths(layout, clips_shard)
    encoder_info = {"encoder": config.encoder,
                    "dim": tables.face_features.schema.field("feature").type.list_size}
    write_table_atomic(tables.faces, paths["faces"], extra=extra)
    write_table_atomic(tables.face_features, paths["face_features"],
                       extra={**extra, **encoder_info, **_encoder_notes(config)})
    write_table_atomic(tables.preprocess, paths["preprocess"], extra=extra)
    return {"shard": str(clips_shard), "skipped": False, "counts": tables.status_counts(),
            "clips_run": run, "clips_reused": len(done)}


def _with_fingerprints(table: pa.Table, fingerprints: Mapping[str, str]) -> pa.Table:
    column = pa.array([fingerprints.get(k) for k in table.column("clip_key").to_pylist()],
                      pa.string())
    at = table.schema.get_field_index("clip_fingerprint")
    return table.set_column(at, table.schema.field(at), column)


def _sources(layout: DataLayout, clips_shard: Path, rows: Sequence[Mapping[str, Any]]
             ) -> list[dict[str, Path]]:
    """Earlier outputs that may hold this shard's clips: the superseded ones overlapping its
    lines, then its own previous outputs (the newest). Each: table -> file."""
    lines = [int(r["line_no"]) for r in rows]
    found: list[dict[str, Path]] = []
    if lines:
        manifest = clips_shard.parent.name
        for path in overlapping(layout, "preprocess", manifest, min(lines), max(lines)):
            found.append({t: path.parents[2] / t / manifest / path.name for t in OUTPUT_TABLES})
    found.append(output_paths(layout, clips_shard))
    return found


def reusable_outputs(layout: DataLayout, clips_shard: Path, rows: Sequence[Mapping[str, Any]],
                     fingerprints: Mapping[str, str]) -> PreprocessTables | None:
    """The output rows of every clip of the shard that an earlier output made from the same
    `clip_fingerprint`; None when there are none. An output whose three files are not one
    run's (their recorded inputs differ) or do not read whole is not used."""
    parts, taken = [], set()
    for source in _sources(layout, clips_shard, rows):
        extras = [read_extra(p) if p.exists() else None for p in source.values()]
        if any(e is None for e in extras) or len({e.get("input_sha256") for e in extras}) != 1:  # type: ignore[union-attr]
            continue
        try:
            tables = {t: read_shard(p, t) for t, p in source.items()}
        except (OSError, ValueError) as exc:
            log.warning("not reusing %s: %s", source["preprocess"], exc)
            continue
        pre = tables["preprocess"].to_pydict()
        keys = {k for k, f in zip(pre["clip_key"], pre["clip_fingerprint"], strict=True)
                if f is not None and fingerprints.get(k) == f and k not in taken}
        if keys:
            taken |= keys
            parts.append(PreprocessTables(*(_rows_of(tables[t], keys) for t in OUTPUT_TABLES)))
    return _merged(*parts) if parts else None


def _rows_of(table: pa.Table, keys: set[str]) -> pa.Table:
    import pyarrow.compute as pc

    return table.filter(pc.is_in(table.column("clip_key"), pa.array(sorted(keys), pa.string())))


def _merged(*parts: PreprocessTables) -> PreprocessTables:
    """One PreprocessTables of several, in the first's schemas (Parquet metadata aside)."""
    first = parts[0]
    return PreprocessTables(*(
        pa.concat_tables([getattr(p, t).cast(getattr(first, t).schema) for p in parts])
        for t in OUTPUT_TABLES))


def _in_clip_order(tables: PreprocessTables, rows: Sequence[Mapping[str, Any]]
                   ) -> PreprocessTables:
    """Rows in the clips shard's order, as a shard preprocessed in one go writes them."""
    position = {r.get("clip_key"): i for i, r in enumerate(rows)}

    def ordered(table: pa.Table) -> pa.Table:
        at = np.array([position[k] for k in table.column("clip_key").to_pylist()], np.int64)
        return table.take(np.argsort(at, kind="stable"))

    return PreprocessTables(*(ordered(getattr(tables, t)) for t in OUTPUT_TABLES))


def _encoder_notes(config: PreprocessConfig) -> dict[str, Any]:
    from s2f.faces.features import VGGFACE_FEATURE, VGGFACE_MEAN_RGB

    notes: dict[str, Any] = {"representative_face": "middle sampled frame, else best det_score",
                             "config": asdict(config)}
    if config.encoder == "vggface":
        notes |= {"feature": VGGFACE_FEATURE, "mean_rgb": list(VGGFACE_MEAN_RGB)}
    return notes


def read_status_counts(paths: Sequence[Path]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in paths:
        for s in read_table_verified(path, ["status"]).column("status").to_pylist():
            counts[s] = counts.get(s, 0) + 1
    return counts
