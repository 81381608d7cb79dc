"""Whole manifests at random (valid and invalid lines, odd bytes, blank lines, CRLF, a BOM,
overlong lines, duplicates) through planning and `ingest_shard` on real media: one row per
non-blank line, keys unique among ok rows, every duplicate pointing at an earlier copy.

    pytest tests/reliability/test_manifest_fuzz.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_helpers import make_garbage, make_good

from s2f.ingest.manifest import MAX_LINE_BYTES, plan_manifests
from s2f.ingest.shard import ingest_shard
from storage.layout import DataLayout

from .helpers import check_clips


@pytest.fixture(scope="module")
def fuzz_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-media")
    make_good(root / "goodmp4____.mp4")
    make_garbage(root / "garbage____.mp4")
    return root


# Few ids and segments, so duplicates (same key, maybe spelled differently) are common.
_valid = st.builds(
    lambda vid, seg, x, pad: f"{pad}{vid}{pad},{seg[0]},{seg[1]},{x},0.5",
    st.sampled_from(["goodmp4____", "garbage____", "missingvid_"]),
    st.sampled_from([("0.5", "1.5"), ("0.50", "1.500"), ("0", "1"), ("1.2", "2.5"),
                     ("3", "4")]),
    st.sampled_from(["0.5", "0", "1"]),
    st.sampled_from(["", " "]),
)
_invalid = st.sampled_from([
    "goodmp4____,1,1,0.5,0.5", "goodmp4____,0,1,0.5", "goodmp4____,0,1,2,0.5", "a,b,c,d,e",
    "../goodmp4_,0,1,0.5,0.5", "goodmp4____,nan,1,0.5,0.5", "\"goodmp4____\",0,1,0.5,0.5,",
    "goodmp4____,0,1e9,0.5,0.5", "goodmp4____;rm,0,1,0.5,0.5",
])
_odd_bytes = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))
_blank = st.sampled_from([b"", b" ", b"\t", b"\r", b"  \t "])
_overlong = st.integers(MAX_LINE_BYTES - 2, MAX_LINE_BYTES + 10).map(lambda n: b"x" * n)
_line = st.one_of(_valid.map(str.encode), _invalid.map(str.encode), _odd_bytes, _blank,
                  _overlong)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\r\n"])), max_size=14),
       bom=st.booleans(), final_newline=st.booleans(), shard_size=st.integers(1, 5))
def test_any_manifest_gives_one_row_per_non_blank_line(
        fuzz_media: Path, lines: list[tuple[bytes, bytes]], bom: bool, final_newline: bool,
        shard_size: int) -> None:
    data = b"".join(line + end for line, end in lines)
    if lines and not final_newline:
        data = data[: -len(lines[-1][1])]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "fuzz_train.csv"
        manifest.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
        layout = DataLayout(Path(tmp) / "data").ensure()
        plans = plan_manifests([manifest], shard_size)
        for shard in plans[0].shards:
            ingest_shard(shard, layout, fuzz_media)
        if not any(line.strip() for line, _ in lines):
            return  # nothing but blank lines: no rows (shards may still be written, empty)
        frame = check_clips(layout.root, {"fuzz_train": manifest})
        keyed = frame.filter(pl.col("clip_key").is_not_null())
        first_line = {}
        for row in keyed.sort("line_no").iter_rows(named=True):
            first_line.setdefault(row["clip_key"], row["line_no"])
        for row in frame.filter(pl.col("status") == "duplicate").iter_rows(named=True):
            first = first_line[row["clip_key"]]
            assert first < row["line_no"] and f"line {first} " in row["error"]
        # The first copy of every key decides its status; later copies are all duplicates.
        for row in keyed.iter_rows(named=True):
            is_first = first_line[row["clip_key"]] == row["line_no"]
            assert (row["status"] == "duplicate") == (not is_first), row
