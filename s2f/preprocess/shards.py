"""One clips shard in, three output shards out: the driver `s2f preprocess` runs per shard.

    from s2f.preprocess.shards import preprocess_shard, shard_is_done
    if not shard_is_done(layout, clips_shard, config):
        preprocess_shard(clips_shard, layout, config)   # -> preprocess, faces, face_features

The clips are spread over one process per core (`s2f.preprocess.pool`), each running the
per-clip work of `s2f.preprocess.clips`. A shard is done when its three outputs record this
input's hash and these parameters (resumability) and every page of them passes its checksum
(`storage.io.shard_damage`: a flipped bit on disk redoes the shard, logged with the reason);
`preprocess` is written last.

Tests: `pytest tests/test_preprocess_flow.py tests/reliability/test_crash_preprocess.py`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from s2f.preprocess.clips import PreprocessConfig
from s2f.preprocess.pool import preprocess_parallel
from storage.io import (
    file_sha256,
    read_extra,
    read_table_verified,
    shard_damage,
    write_table_atomic,
)
from storage.layout import DataLayout

log = logging.getLogger(__name__)

OUTPUT_TABLES = ("preprocess", "faces", "face_features")


def output_paths(layout: DataLayout, clips_shard: Path) -> dict[str, Path]:
    """tables/clips/<manifest>/shard-N.parquet -> the same manifest/name under each output."""
    manifest, name = clips_shard.parent.name, clips_shard.name
    return {t: layout.table_dir(t) / manifest / name for t in OUTPUT_TABLES}


def shard_extra(clips_shard: Path, config: PreprocessConfig) -> dict[str, Any]:
    return {"input": str(clips_shard), "input_sha256": file_sha256(clips_shard),
            "params": config.fingerprint()}


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

    `preprocess` is written last: it marks the shard finished. Returns a small summary record."""
    clips_shard = Path(clips_shard)
    extra = shard_extra(clips_shard, config)
    rows = read_table_verified(clips_shard).to_pylist()
    tables = preprocess_parallel(rows, config, progress=progress,
                                 desc=f"{clips_shard.parent.name}/{clips_shard.stem}")
    paths = output_paths(layout, clips_shard)
    encoder_info = {"encoder": config.encoder,
                    "dim": tables.face_features.schema.field("feature").type.list_size}
    write_table_atomic(tables.faces, paths["faces"], extra=extra)
    write_table_atomic(tables.face_features, paths["face_features"],
                       extra={**extra, **encoder_info, **_encoder_notes(config)})
    write_table_atomic(tables.preprocess, paths["preprocess"], extra=extra)
    return {"shard": str(clips_shard), "skipped": False, "counts": tables.status_counts()}


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
