"""`s2f status`: one row per manifest line, furthest stage, status and reason; table and CSV.

    pytest tests/test_status.py
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from flows.cli import main as cli_main
from storage.io import rows_to_table, write_table_atomic
from storage.layout import DataLayout, clip_key
from storage.schemas import CLIPS, PREPROCESS
from storage.status import clip_status, clip_status_lazy, print_status

K1, K2, K3 = clip_key("AAAAAAAAAAA", 1, 2), clip_key("BBBBBBBBBBB", 1, 2), clip_key("CCCCCCCCCCC", 0, 3)


def _clip(manifest: str, line_no: int, status: str, key: str | None = None,
          error: str | None = None) -> dict:
    vid = key.split("_")[0] if key else None
    return {"manifest": manifest, "split": "train", "line_no": line_no, "clip_key": key,
            "youtube_id": vid, "start_s": 1.0 if key else None, "end_s": 2.0 if key else None,
            "status": status, "error": error}


@pytest.fixture()
def layout(data_dir: Path) -> DataLayout:
    layout = DataLayout(data_dir).ensure()
    write_table_atomic(rows_to_table([
        _clip("a_train", 1, "ok", K1), _clip("a_train", 2, "ok", K2),
        _clip("a_train", 4, "invalid_row", error="expected 5 columns, got 1: 'x'"),
    ], CLIPS), layout.shard_path("clips", "a_train", 0))
    write_table_atomic(rows_to_table([
        _clip("a_train", 5, "duplicate", K1, "duplicate of a_train line 1"),
        _clip("a_train", 6, "ok", K3),
    ], CLIPS), layout.shard_path("clips", "a_train", 1))
    write_table_atomic(rows_to_table([
        _clip("b_test", 1, "missing_media", clip_key("DDDDDDDDDDD", 0, 1), "no media/DDD.(mp4)"),
    ], CLIPS), layout.shard_path("clips", "b_test", 0))
    return layout


def _write_preprocess(layout: DataLayout) -> None:
    write_table_atomic(rows_to_table([
        {"clip_key": K1, "status": "ok", "error": None},
        {"clip_key": K2, "status": "no_face", "error": "no face in 3 frames"},
    ], PREPROCESS), layout.shard_path("preprocess", "a_train", 0))


def test_clips_only(layout: DataLayout) -> None:
    status = clip_status(layout)
    assert status.columns == ["manifest", "line_no", "youtube_id", "start_s", "end_s", "stage",
                              "status", "error"]
    assert list(zip(status["manifest"], status["line_no"], strict=True)) == [
        ("a_train", 1), ("a_train", 2), ("a_train", 4), ("a_train", 5), ("a_train", 6),
        ("b_test", 1)]
    assert set(status["stage"]) == {"clips"}
    assert status["status"].to_list() == ["ok", "ok", "invalid_row", "duplicate", "ok",
                                          "missing_media"]


def test_furthest_stage_from_preprocess(layout: DataLayout) -> None:
    _write_preprocess(layout)
    status = clip_status(layout)
    rows = {(m, n): (stage, s, e) for m, n, stage, s, e in status.select(
        "manifest", "line_no", "stage", "status", "error").iter_rows()}
    assert rows[("a_train", 1)] == ("preprocess", "ok", None)
    assert rows[("a_train", 2)] == ("preprocess", "no_face", "no face in 3 frames")
    assert rows[("a_train", 6)] == ("clips", "ok", None)  # not preprocessed yet
    # A duplicate shares its key with line 1 but never advances: it stopped at clips.
    assert rows[("a_train", 5)] == ("clips", "duplicate", "duplicate of a_train line 1")
    assert rows[("b_test", 1)][:2] == ("clips", "missing_media")
    assert status.height == 6


def test_stages_are_generic(layout: DataLayout) -> None:
    _write_preprocess(layout)
    later = pa.schema([("clip_key", pa.string()), ("status", pa.string()), ("error", pa.string())])
    write_table_atomic(pa.Table.from_pylist(
        [{"clip_key": K1, "status": "nan_loss", "error": "loss diverged"}], schema=later),
        layout.shard_path("evaluate", "a_train", 0))
    stages = [("preprocess", PREPROCESS), ("evaluate", later), ("not_written_yet", later)]
    status = clip_status_lazy(layout, stages).collect()
    first = status.row(0, named=True)
    assert (first["stage"], first["status"], first["error"]) == (
        "evaluate", "nan_loss", "loss diverged")
    assert status.row(1, named=True)["stage"] == "preprocess"  # no_face: stops there


def test_print_table_and_csv(layout: DataLayout) -> None:
    _write_preprocess(layout)
    table = io.StringIO()
    assert print_status(layout, "table", table) == 0
    text = table.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["manifest", "line_no", "youtube_id", "start_s", "end_s",
                                "stage", "status", "error"]
    assert any("preprocess" in ln and "no_face" in ln and "no face in 3 frames" in ln
               for ln in lines[1:7])
    assert "6 manifest lines by furthest stage and status" in text
    assert "  clips       invalid_row      1" in text
    assert "  preprocess  ok               1" in text

    csv = io.StringIO()
    assert print_status(layout, "csv", csv) == 0
    parsed = pl.read_csv(io.StringIO(csv.getvalue()))
    expected = clip_status(layout)
    assert parsed.height == expected.height
    assert parsed["status"].to_list() == expected["status"].to_list()
    assert parsed["error"].to_list() == expected["error"].to_list()


def test_no_clips_yet(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert print_status(DataLayout(data_dir), "table", out) == 1
    assert "no clips yet" in out.getvalue() and "s2f ingest" in out.getvalue()
    assert cli_main(["status", "--data-dir", str(data_dir)]) == 1
    assert "no clips yet" in capsys.readouterr().out


def test_cli_status_csv(layout: DataLayout, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["status", "--data-dir", str(layout.root), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "manifest,line_no,youtube_id,start_s,end_s,stage,status,error"
    assert len(out.splitlines()) == 7


def test_a_torn_shard_is_named_and_the_rest_is_shown(layout: DataLayout,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `s2f status` ended in a polars traceback on a torn shard."""
    _write_preprocess(layout)
    torn = layout.shard_path("clips", "a_train", 1)
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])  # cut in half, no footer
    assert cli_main(["status", "--data-dir", str(layout.root)]) == 0
    captured = capsys.readouterr()
    assert f"s2f status: skipping unreadable shard {torn}:" in captured.err
    assert len(captured.err.splitlines()) == 1
    assert "4 manifest lines by furthest stage and status" in captured.out
    assert "(1 unreadable shards left out, named above on stderr)" in captured.out
    assert "no_face" in captured.out and "missing_media" in captured.out
    csv = io.StringIO()
    assert print_status(layout, fmt="csv", out=csv) == 0
    assert len(csv.getvalue().splitlines()) == 1 + 4  # header + the readable shards' lines
