"""Manifest parsing: every line validated, one record per non-blank line, duplicates by clip key.

    pytest tests/test_ingest_manifest.py
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2f.ingest.manifest import (
    ERROR_QUOTE_CHARS,
    MAX_LINE_BYTES,
    ManifestNameError,
    RawLine,
    is_blank,
    iter_raw_lines,
    iter_records,
    parse_line,
    plan_manifests,
    split_of,
)

GOOD = "AbC-_123xyz,12.5,17.25,0.25,0.75"


def parse(text: str) -> dict:
    data = text.encode()
    return parse_line(RawLine(1, 0, data, len(data)), "m", "unknown")


def test_good_line_parses_to_ok_record_with_clip_key() -> None:
    record = parse(GOOD)
    assert record["status"] == "ok" and record["error"] is None
    assert record["youtube_id"] == "AbC-_123xyz"
    assert (record["start_s"], record["end_s"]) == (12.5, 17.25)
    assert (record["hint_x"], record["hint_y"]) == (0.25, 0.75)
    assert record["clip_key"] == "AbC-_123xyz_000012500_000017250"


@pytest.mark.parametrize(("line", "reason"), [
    ("short,1,2,0.5,0.5", "youtube_id must be 11 characters"),
    ("AbC-_123xy!,1,2,0.5,0.5", "youtube_id must be 11 characters"),
    ("AbC-_123xyzz,1,2,0.5,0.5", "youtube_id must be 11 characters"),
    ("AbC-_123xyz,nan,2,0.5,0.5", "start_seconds is not a number"),
    ("AbC-_123xyz,1,inf,0.5,0.5", "end_seconds is not a number"),
    ("AbC-_123xyz,1,1e999,0.5,0.5", "end_seconds is not finite"),
    ("AbC-_123xyz,1_0,20,0.5,0.5", "start_seconds is not a number"),
    ("AbC-_123xyz,-1,2,0.5,0.5", "start_seconds is negative"),
    ("AbC-_123xyz,3,3,0.5,0.5", "must be before end_seconds"),
    ("AbC-_123xyz,1,1.0004,0.5,0.5", "segment is 0.0004 s long (at least 0.2 s)"),
    # Other scripts' digits: `\d` and float() take them (float("١٢") == 12.0).
    ("AbC-_123xyz,\u0661,\u0662\u0663,0.5,0.5", "start_seconds is not a number"),
    ("AbC-_123xyz,1,2,0.5,\u06f0.\u06f5", "y is not a number"),
    ("AbC-_123xyz,1,\uff12,0.5,0.5", "end_seconds is not a number"),
    ("AbC-_123xyz,4,3,0.5,0.5", "must be before end_seconds"),
    ("AbC-_123xyz,1,2,1.5,0.5", "x must lie in [0, 1]"),
    ("AbC-_123xyz,1,2,0.5,-0.1", "y must lie in [0, 1]"),
    ("AbC-_123xyz,1,2,0.5", "expected 5 columns"),
    ("AbC-_123xyz,1,2,0.5,0.5,extra", "expected 5 columns"),
    ("youtube_id,start,end,x,y", "start_seconds is not a number"),
    ("AbC-_123xyz,1,2,0.5,0.5\x00", "y is not a number"),
    ("\"AbC-_123xyz\"x,1,2,0.5,0.5", "not a CSV line"),
])
def test_bad_lines_are_invalid_rows_with_a_reason(line: str, reason: str) -> None:
    record = parse(line)
    assert record["status"] == "invalid_row"
    assert reason in record["error"]
    assert record.get("clip_key") is None


def test_not_utf8_is_recorded() -> None:
    data = b"AbC-_123xyz,1,2,0.5,\xff\xfe"
    record = parse_line(RawLine(3, 0, data, len(data)), "m", "train")
    assert record["status"] == "invalid_row" and "not UTF-8" in record["error"]
    assert record["line_no"] == 3 and record["split"] == "train"


def test_error_quotes_at_most_a_prefix_of_the_line() -> None:
    record = parse("x" * 3000 + ",1,2,0.5,0.5")
    assert record["status"] == "invalid_row"
    assert len(record["error"]) < 2 * ERROR_QUOTE_CHARS + 200


def test_bom_crlf_blank_and_overlong_lines(tmp_path: Path) -> None:
    overlong = "y" * (MAX_LINE_BYTES * 50)
    path = tmp_path / "avspeech_train.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{GOOD}\r\n\r\n   \n{overlong}\n{GOOD[:-1]}1".encode())
    records = list(iter_records(path))
    assert [r["line_no"] for r in records] == [1, 4, 5]  # blank lines 2, 3 keep their numbers
    assert records[0]["status"] == "ok" and records[0]["youtube_id"] == "AbC-_123xyz"
    assert records[1]["status"] == "invalid_row"
    assert f"{len(overlong)} bytes long" in records[1]["error"]
    assert len(records[1]["error"]) < 400
    assert records[2]["status"] == "ok" and records[2]["hint_y"] == 0.71  # no final newline
    assert {r["split"] for r in records} == {"train"}


def test_overlong_line_is_skipped_without_reading_it_whole() -> None:
    stream = io.BytesIO(b"a" * (MAX_LINE_BYTES * 100) + b"\r\nnext\n")
    lines = list(iter_raw_lines(stream))
    assert [(raw.line_no, raw.length, raw.too_long) for raw in lines] == [
        (1, MAX_LINE_BYTES * 100, True), (2, 4, False)]
    assert len(lines[0].data) <= MAX_LINE_BYTES + 2
    assert lines[1].data == b"next" and lines[1].offset == MAX_LINE_BYTES * 100 + 2


@pytest.mark.parametrize("length", [MAX_LINE_BYTES - 1, MAX_LINE_BYTES, MAX_LINE_BYTES + 1,
                                    MAX_LINE_BYTES + 2, 3 * MAX_LINE_BYTES])
@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_line_length_boundaries(length: int, ending: bytes) -> None:
    body = b"z" * length
    lines = list(iter_raw_lines(io.BytesIO(body + ending + b"tail")))
    assert [(raw.length, raw.too_long) for raw in lines] == [
        (length, length > MAX_LINE_BYTES), (4, False)]
    assert lines[1].offset == length + len(ending) and lines[1].data == b"tail"
    if length <= MAX_LINE_BYTES:
        assert lines[0].data == body


@pytest.mark.parametrize(("name", "split"), [
    ("avspeech_train", "train"), ("avspeech_test.csv", "test"), ("AVSpeech-Test", "test"),
    ("avspeech_latest_train.csv", "train"), ("contest_train.csv", "train"),
    ("latest.dev.csv", "dev"), ("my clips dev.csv", "dev"), ("train", "train"),
    ("TEST.csv", "test"), ("dev", "dev")])
def test_split_is_the_last_word_of_the_name(name: str, split: str) -> None:
    # "latest" and "contest" hold "test" as a substring, not as a word: they decide nothing.
    assert split_of(name) == split


@pytest.mark.parametrize(("name", "why"), [
    ("clips.csv", "does not end in a split word"),
    ("avspeech_train_2019.csv", "does not end in a split word"),
    ("avspeech_latest.csv", "does not end in a split word"),
    ("trainer.csv", "does not end in a split word"),
    ("test_vs_train.csv", "names several splits"),
    ("train-dev.csv", "names several splits")])
def test_a_name_without_one_split_is_refused_with_the_fix(name: str, why: str) -> None:
    with pytest.raises(ManifestNameError, match=why) as info:
        split_of(name)
    message = str(info.value)
    assert name in message and "--split" in message and "_train" in message


def test_an_explicit_split_overrides_the_name(tmp_path: Path) -> None:
    path = tmp_path / "latest.csv"
    path.write_text(GOOD + "\n")
    with pytest.raises(ManifestNameError, match="latest.csv"):
        plan_manifests([path], 10)
    (plan,) = plan_manifests([path], 10, split="dev")
    assert plan.shards[0].split == "dev"
    assert [r["split"] for r in iter_records(path, split="dev")] == ["dev"]
    with pytest.raises(ValueError, match="split must be one of"):
        plan_manifests([path], 10, split="validation")


def test_a_video_in_two_splits_is_a_split_conflict_naming_both_lines(tmp_path: Path) -> None:
    from s2f.ingest.shard import read_shard_lines

    train, test = tmp_path / "avspeech_train.csv", tmp_path / "avspeech_test.csv"
    train.write_text("AAAAAAAAAAA,1,2,0.5,0.5\nSHAREDvideo,1,2,0.5,0.5\n"
                     "SHAREDvideo,5,6,0.5,0.5\nBBBBBBBBBBB,1,2,0.5,0.5\n")
    test.write_text("CCCCCCCCCCC,1,2,0.5,0.5\nSHAREDvideo,8,9,0.5,0.5\nbad line\n")
    plans = plan_manifests([train, test], shard_size=2)
    records = {(p.manifest, r["line_no"]): r for p in plans for shard in p.shards
               for r in read_shard_lines(shard)[0]}
    conflicted = {k for k, r in records.items() if r["status"] == "split_conflict"}
    # every line of the shared video, in both manifests and across shards; nothing else
    assert conflicted == {("avspeech_train", 2), ("avspeech_train", 3), ("avspeech_test", 2)}
    assert records[("avspeech_test", 3)]["status"] == "invalid_row"
    reason = records[("avspeech_train", 3)]["error"]
    assert "SHAREDvideo" in reason
    assert "avspeech_train.csv:3 (train)" in reason and "avspeech_test.csv:2 (test)" in reason
    assert "avspeech_train.csv:2 (train)" in records[("avspeech_test", 2)]["error"]
    # the same video twice in one split is no conflict
    (plan,) = plan_manifests([train], shard_size=10)
    assert all(r["status"] == "ok" for r in read_shard_lines(plan.shards[0])[0])


def test_split_conflicts_are_recorded_in_the_clips_table(tmp_path: Path) -> None:
    import polars as pl

    from s2f.ingest.shard import ingest_shard
    from storage.layout import DataLayout
    from storage.status import clip_status

    train, dev = tmp_path / "a_train.csv", tmp_path / "a_dev.csv"
    train.write_text("SHAREDvideo,1,2,0.5,0.5\nAAAAAAAAAAA,1,2,0.5,0.5\n")
    dev.write_text("SHAREDvideo,3,4,0.5,0.5\n")
    layout = DataLayout(tmp_path / "data").ensure()
    (tmp_path / "media").mkdir()
    for plan in plan_manifests([train, dev], shard_size=1):
        for shard in plan.shards:
            ingest_shard(shard, layout, tmp_path / "media")
    status = clip_status(layout).sort("manifest", "line_no")
    assert status.select("manifest", "line_no", "status").rows() == [
        ("a_dev", 1, "split_conflict"), ("a_train", 1, "split_conflict"),
        ("a_train", 2, "missing_media")]
    errors = status.filter(pl.col("status") == "split_conflict")["error"].to_list()
    assert all("a_train.csv:1 (train)" in e and "a_dev.csv:1 (dev)" in e for e in errors)


def test_plan_shards_and_duplicates_across_shards_and_manifests(tmp_path: Path) -> None:
    a = tmp_path / "a_train.csv"
    b = tmp_path / "b_test.csv"
    a.write_text("AAAAAAAAAAA,1,2,0.5,0.5\n\nBBBBBBBBBBB,1,2,0.5,0.5\n"
                 "AAAAAAAAAAA,1.0,2.0,0.1,0.1\nbad\nAAAAAAAAAAA,1,2.001,0.5,0.5\n")
    b.write_text("BBBBBBBBBBB,1,2,0.5,0.5\nCCCCCCCCCCC,1,2,0.5,0.5\n")
    plans = plan_manifests([a, b], shard_size=2)
    assert [(p.manifest, p.lines, p.blank_lines, len(p.shards)) for p in plans] == [
        ("a_train", 6, 1, 3), ("b_test", 2, 0, 1)]
    assert [(s.first_line, s.n_lines) for s in plans[0].shards] == [(1, 2), (3, 2), (5, 2)]
    # Same key (1.0 == 1 s) later in another shard, and the same key in another manifest.
    assert plans[0].shards[1].duplicates == {4: ("a_train", 1)}
    assert plans[1].shards[0].duplicates == {1: ("a_train", 3)}
    assert plans[0].shards[0].duplicates == plans[0].shards[2].duplicates == {}
    # The byte offsets point at the shard's first line.
    data = a.read_bytes()
    for shard in plans[0].shards:
        expected = data.split(b"\n")[shard.first_line - 1]
        assert data[shard.offset:].split(b"\n")[0] == expected


def test_blank_lines_make_no_shards(tmp_path: Path) -> None:
    """Before: 200 KB of blank lines made 782 empty shards (a Parquet file and a Prefect task
    each). Now a shard of only blank lines is not planned, and its old file is removed."""
    from s2f.ingest.shard import ingest_shard, remove_stale_shards
    from storage.io import shard_paths
    from storage.layout import DataLayout

    manifest = tmp_path / "blank_train.csv"
    blank = b"\n" * 100_000 + b" \t\r\n" * 25_000
    manifest.write_bytes(blank + (GOOD + "\n").encode() + b"\n" * 600)
    (plan,) = plan_manifests([manifest], shard_size=256)
    assert plan.lines == 125_601 and plan.blank_lines == 125_600
    assert plan.n_shards == 491 and len(plan.blank_shards) == 490
    (shard,) = plan.shards
    assert shard.index == 125_000 // 256 and shard.first_line <= 125_001 < shard.first_line + 256
    layout = DataLayout(tmp_path / "data").ensure()
    ingest_shard(shard, layout, tmp_path / "media")
    stale = layout.shard_path("clips", "blank_train", 3)  # a shard whose lines were blanked
    stale.write_bytes(layout.shard_path("clips", "blank_train", shard.index).read_bytes())
    assert remove_stale_shards(layout, plan.manifest, plan.n_shards, plan.blank_shards) == [stale]
    assert [p.name for p in shard_paths(layout, "clips")] == [f"shard-{shard.index:05d}.parquet"]


def test_plan_refuses_two_manifests_with_one_name(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "m.csv").write_text(GOOD + "\n")
    (tmp_path / "x" / "m.csv").write_text(GOOD + "\n")
    with pytest.raises(ValueError, match="share a name"):
        plan_manifests([tmp_path / "m.csv", tmp_path / "x" / "m.csv"], 10)


_line_chars = st.characters(codec="utf-8", exclude_characters="\n")
_near_valid = st.builds(
    lambda vid, a, b, x, y, extra: ",".join([vid, a, b, x, y] + extra),
    st.text(alphabet="AbC-_1z!", min_size=10, max_size=12),
    st.sampled_from(["0", "1.5", "-1", "nan", "1e400", " 2 ", "", "x"]),
    st.sampled_from(["2", "0.5", "inf", "3e1", "abc"]),
    st.sampled_from(["0", "1", "0.5", "1.01", "-0"]),
    st.sampled_from(["0.25", "2", "", "\"0.5\""]),
    st.lists(st.sampled_from(["", "q", "\""]), max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(_line_chars, max_size=60), _near_valid,
                          st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))),
                max_size=12),
       st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_fuzz_one_record_per_non_blank_line(lines: list, newline: bytes, bom: bool) -> None:
    raw_lines = [line.encode() if isinstance(line, str) else line for line in lines]
    data = (b"\xef\xbb\xbf" if bom else b"") + newline.join(raw_lines)
    records = [parse_line(raw, "m", "unknown") for raw in iter_raw_lines(io.BytesIO(data))
               if not is_blank(raw)]
    # What counts as a line: split on \n only (a lone \r stays inside its line).
    expected_lines = data.split(b"\n") if data else []
    if expected_lines and expected_lines[-1] == b"":
        expected_lines.pop()
    stripped = [line.removesuffix(b"\r") for line in expected_lines]
    # A file starting with the BOM's bytes starts with a BOM, whether the fuzzer or `bom` put
    # them there; the reader drops one.
    if data.startswith(b"\xef\xbb\xbf") and stripped:
        stripped[0] = stripped[0].removeprefix(b"\xef\xbb\xbf")
    non_blank = [i + 1 for i, line in enumerate(stripped) if line.strip()]
    assert [r["line_no"] for r in records] == non_blank
    for record in records:
        assert record["status"] in ("ok", "invalid_row")
        assert (record["status"] == "ok") == (record["error"] is None)
        if record["status"] == "ok":
            assert 0 <= record["start_s"] < record["end_s"]
            assert 0 <= record["hint_x"] <= 1 and 0 <= record["hint_y"] <= 1


def _ingest_run(manifests: list[Path], layout, media: Path) -> None:
    """One ingest run as the flow plans it: against what the data directory already holds."""
    from flows.ingest import plan_ingest
    from s2f.ingest.shard import ingest_shard

    for plan in plan_ingest.fn(manifests, 2, None, layout.root):
        for shard in plan.shards:
            ingest_shard(shard, layout, media)


def test_later_runs_see_the_whole_data_directory(tmp_path: Path) -> None:
    """Issue 24: a test manifest holding a train video, ingested in a later run, put the video
    in both roles; the same rows under a renamed manifest were ok again. Each is decided
    against every existing clips table now, and re-running the first manifest changes nothing."""
    import polars as pl

    from storage.io import scan
    from storage.layout import DataLayout
    from storage.status import clip_status

    layout = DataLayout(tmp_path / "data").ensure()
    media = tmp_path / "media"
    media.mkdir()
    train = tmp_path / "run1_train.csv"
    train.write_text("SHAREDvideo,1,2,0.5,0.5\nAAAAAAAAAAA,1,2,0.5,0.5\nAAAAAAAAAAA,3,4,0.5,0.5\n")
    _ingest_run([train], layout, media)
    later_test = tmp_path / "run2_test.csv"
    later_test.write_text("SHAREDvideo,7,8,0.5,0.5\nCCCCCCCCCCC,1,2,0.5,0.5\n")
    _ingest_run([later_test], layout, media)
    renamed = tmp_path / "run3_train.csv"
    renamed.write_bytes(train.read_bytes())
    _ingest_run([renamed], layout, media)
    _ingest_run([train], layout, media)  # a re-run of the first: its own rows are no prior
    rows = {(m, n): (s, e) for m, n, s, e in clip_status(layout).select(
        "manifest", "line_no", "status", "error").rows()}
    assert rows[("run2_test", 1)][0] == "split_conflict"
    assert "run1_train (ingested earlier):1 (train)" in rows[("run2_test", 1)][1]
    assert rows[("run2_test", 2)][0] == "missing_media"  # the other video is fine
    # SHAREDvideo is claimed by train and test now: a conflict wherever it comes, as in one run
    assert [rows[("run3_train", n)][0] for n in (1, 2, 3)] == [
        "split_conflict", "duplicate", "duplicate"]
    assert "duplicate of run1_train (ingested earlier) line 3" in rows[("run3_train", 3)][1]
    # the re-run of the first manifest ends as one run of all three would have
    assert [rows[("run1_train", n)][0] for n in (1, 2, 3)] == [
        "split_conflict", "missing_media", "missing_media"]
    firsts = scan(layout, "clips").collect().filter(~pl.col("status").is_in(
        ["duplicate", "split_conflict", "invalid_row"]))
    assert firsts["clip_key"].n_unique() == firsts.height == 3
