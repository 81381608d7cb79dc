"""Parquet storage: atomic writes keep schema metadata, leave no temporary files, and a failed
write leaves the previous file intact; lazy scans read every shard.

    pytest tests/test_storage.py
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import storage.io as storage_io
from storage.io import read_extra, rows_to_table, scan, shard_paths, write_table_atomic
from storage.layout import DataLayout, clip_key
from storage.schemas import CLIPS


def _rows(n: int, manifest: str = "m_train") -> list[dict]:
    return [{"manifest": manifest, "split": "train", "line_no": i + 1, "status": "ok",
             "clip_key": clip_key("AAAAAAAAAAA", i, i + 1), "youtube_id": "AAAAAAAAAAA",
             "start_s": float(i), "end_s": float(i + 1)} for i in range(n)]


def test_round_trip_keeps_schema_and_metadata(data_dir: Path) -> None:
    layout = DataLayout(data_dir)
    for index in range(3):
        write_table_atomic(rows_to_table(_rows(4), CLIPS), layout.shard_path("clips", "m_train", index),
                           extra={"first_line": index * 4 + 1})
    paths = shard_paths(layout, "clips")
    assert [p.name for p in paths] == [f"shard-0000{i}.parquet" for i in range(3)]
    frame = scan(layout, "clips").collect()
    assert frame.height == 12 and frame.columns == CLIPS.names
    schema = pq.read_schema(paths[1])
    assert schema.metadata[b"s2f.table"] == b"clips"
    assert schema.metadata[b"s2f.schema_version"] == CLIPS.metadata[b"s2f.schema_version"]
    assert schema.field("status").metadata[b"doc"] == CLIPS.field("status").metadata[b"doc"]
    assert not schema.field("status").nullable
    assert read_extra(paths[1]) == {"first_line": 5}
    assert read_extra(paths[0].parent / "absent.parquet") is None
    # No temporary file left next to the shards.
    assert sorted(p.name for p in paths[0].parent.iterdir()) == [p.name for p in paths]


def test_scan_of_missing_table_is_empty_with_schema(data_dir: Path) -> None:
    frame = scan(DataLayout(data_dir), "clips").collect()
    assert frame.height == 0 and frame.columns == CLIPS.names


def test_failed_write_leaves_old_file_intact(data_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = DataLayout(data_dir).shard_path("clips", "m_train", 0)
    write_table_atomic(rows_to_table(_rows(2), CLIPS), path, extra={"v": 1})
    before = path.read_bytes()

    def write_half_then_fail(table, where, **kwargs):  # a full disk, mid-write
        where.write(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage_io.pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_table_atomic(rows_to_table(_rows(5), CLIPS), path, extra={"v": 2})
    assert path.read_bytes() == before
    assert read_extra(path) == {"v": 1}
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_rows_breaking_the_schema_are_refused_at_write(data_dir: Path) -> None:
    bad = _rows(1)
    bad[0]["status"] = None  # declared not nullable
    path = DataLayout(data_dir).shard_path("clips", "m_train", 0)
    with pytest.raises(Exception, match="non-nullable"):
        write_table_atomic(rows_to_table(bad, CLIPS), path)
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_evaluations_written_before_the_split_snapshot_rename_still_read_and_append(
        data_dir: Path) -> None:
    """A data directory whose evaluations shards have the old `test_snapshot_id` column reads
    with `split_snapshot_id` (one shard, the lazy scan, `read_evaluations`), and a new shard
    written beside it reads together with it."""
    from datetime import UTC, datetime

    import pyarrow as pa

    from s2f.evaluation.record import read_evaluations
    from storage.io import read_shard
    from storage.schemas import EVALUATIONS

    layout = DataLayout(data_dir)
    old_schema = pa.schema([f.with_name("test_snapshot_id") if f.name == "split_snapshot_id" else f
                            for f in EVALUATIONS], metadata=EVALUATIONS.metadata)

    def row(evaluation_id: str, snapshot_column: str, snapshot: str, minute: int) -> dict:
        return {"evaluation_id": evaluation_id, "model_uri": "models:/m/1", "model_name": "m",
                "model_version": "1", "role": "dev", "kind": "model", snapshot_column: snapshot,
                "created_at": datetime(2026, 1, 1, 0, minute, tzinfo=UTC),
                "metrics": {"recall_at_10_6s": 0.5}}

    old = write_table_atomic(rows_to_table([row("e1", "test_snapshot_id", "aaaa", 0)], old_schema),
                             layout.shard_path("evaluations", "m", 0))
    assert "test_snapshot_id" in pq.read_schema(old).names  # really the old layout on disk
    assert read_shard(old, "evaluations").column("split_snapshot_id").to_pylist() == ["aaaa"]
    assert read_evaluations(layout)[0]["split_snapshot_id"] == "aaaa"

    write_table_atomic(rows_to_table([row("e2", "split_snapshot_id", "bbbb", 1)], EVALUATIONS),
                       layout.shard_path("evaluations", "m", 1))
    scanned = scan(layout, "evaluations").select("evaluation_id", "split_snapshot_id").collect()
    assert sorted(scanned.iter_rows()) == [("e1", "aaaa"), ("e2", "bbbb")]
    rows = read_evaluations(layout)
    assert [(r["evaluation_id"], r["split_snapshot_id"]) for r in rows] == [("e1", "aaaa"),
                                                                            ("e2", "bbbb")]
    assert all("test_snapshot_id" not in r for r in rows)
