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
