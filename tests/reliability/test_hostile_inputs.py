"""Hostile media and manifests through the real `ingest` flow: every line ends with a status and
a reason, the run completes, and the good rows come out exactly as in a run without the bad ones.

    pytest tests/reliability/test_hostile_inputs.py
"""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from ingest_helpers import SAMPLE_RATE, clip_flac, make_garbage, make_good

from s2f.ingest.manifest import MAX_LINE_BYTES, plan_manifests
from s2f.ingest.shard import ingest_shard
from storage.layout import DataLayout, clip_key

from .helpers import (
    PROBE_FIELDS,
    check_clips,
    flip_bits,
    make_audio_variant,
    make_huge_duration_mkv,
    make_rotated_mp4,
    make_vfr_mkv,
    run_shards,
    truncate_at,
)

SEED = 20260
N_TRUNCATED = 12
N_FLIPPED = 18
GOOD_IDS = ["goodmp4____", "goodwebm___", "goodmkv____"]
SEGMENTS = [(0.5, 1.5), (0.2, 1.8)]

# Manifest lines with a fixed expected status (media ones are added by the fixture).
HOSTILE_LINES = [
    ("../../../etc/passwd,0,1,0.5,0.5", "invalid_row"),
    ("..%2F..%2Fetc,0,1,0.5,0.5", "invalid_row"),
    ("a;b$(c),0,1,0.5,0.5", "invalid_row"),
    ("$(touch pwn),0,1,0.5,0.5", "invalid_row"),
    ("`touch pwn`,0,1,0.5,0.5", "invalid_row"),
    ("--exec=rm,0,1,0.5,0.5", "invalid_row"),
    ("http://x.y/,0,1,0.5,0.5", "invalid_row"),
    ("\"goodmp4____,0\",1,2,0.5,0.5", "invalid_row"),   # quoted comma: 4 columns
    ("goodmp4____,1,1,0.5,0.5", "invalid_row"),           # zero-length segment
    ("goodmp4____,1,2,0.5,0.5,extra,columns", "invalid_row"),
    ("goodmp4____,1e9,1000000001,0.5,0.5", "out_of_range"),  # far past a 2 s file
    ("hugedurmkv_,0,1e9,0.5,0.5", "invalid_row"),             # a billion-second segment
    ("hugedurmkv_,100,101,0.5,0.5", "corrupt_media"),         # inside the claimed duration only
    ("hugedurmkv_,0.5,1.5,0.5,0.5", "ok"),
    ("webmasmp4__,0.5,1.5,0.5,0.5", "ok"),                    # a webm named .mp4
    ("mp4aswebm__,0.5,1.5,0.5,0.5", "ok"),                    # an mp4 named .webm
    ("rotated____,0.5,1.5,0.5,0.5", "ok"),
    ("vfrvideo___,0.5,1.5,0.5,0.5", "ok"),
    ("audio8khz__,0.5,1.5,0.5,0.5", "ok"),
    ("audio96khz_,0.5,1.5,0.5,0.5", "ok"),
    ("sixchannel_,0.5,1.5,0.5,0.5", "ok"),
    ("silentaudio,0.5,1.5,0.5,0.5", "ok"),
    ("garbage____,0,1,0.5,0.5", "corrupt_media"),
    ("nosuchvideo,0,1,0.5,0.5", "missing_media"),
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Media root with good, damaged and odd files; a hostile manifest (BOM, CRLF, blank lines)
    and a manifest with only its good lines."""
    root = tmp_path_factory.mktemp("hostile")
    media = root / "media"
    media.mkdir()
    sources = [make_good(media / "goodmp4____.mp4"), make_good(media / "goodwebm___.webm", "vp9"),
               make_good(media / "goodmkv____.mkv", "h264", "flac")]
    rng = np.random.default_rng(SEED)
    damaged: list[str] = []
    for i in range(N_TRUNCATED):
        src = sources[i % 3]
        truncate_at(src, media / f"trunc{i:06d}{src.suffix}", float(rng.uniform(0.02, 0.98)))
        damaged.append(f"trunc{i:06d}")
    for i in range(N_FLIPPED):
        src = sources[i % 3]
        flip_bits(src, media / f"flip{i:07d}{src.suffix}", rng, int(rng.choice([1, 8, 64])))
        damaged.append(f"flip{i:07d}")
    shutil.copy2(sources[1], media / "webmasmp4__.mp4")
    shutil.copy2(sources[0], media / "mp4aswebm__.webm")
    make_rotated_mp4(media / "rotated____.mp4")
    make_huge_duration_mkv(media / "hugedurmkv_.mkv")
    make_vfr_mkv(media / "vfrvideo___.mkv")
    make_audio_variant(media / "audio8khz__.mkv", sample_rate=8000)
    make_audio_variant(media / "audio96khz_.mkv", sample_rate=96000)
    make_audio_variant(media / "sixchannel_.mp4", channels=6, audio_codec="aac")
    make_audio_variant(media / "silentaudio.mp4", silent=True, audio_codec="aac")
    make_garbage(media / "garbage____.mp4")

    good_lines = [f"{vid},{a},{b},0.5,0.5" for vid in GOOD_IDS for a, b in SEGMENTS]
    lines: list[tuple[str, str | None]] = [(line, "ok") for line in good_lines[:2]]
    lines += [("", None), ("   \t", None)]
    lines += HOSTILE_LINES[:10] + [(good_lines[2], "ok"), ("", None)] + HOSTILE_LINES[10:]
    lines += [(f"{vid},{a},{b},0.5,0.5", None) for vid in damaged for a, b in SEGMENTS[:1]]
    lines += [(line, "ok") for line in good_lines[3:]]
    body = "\r\n".join(line for line, _ in lines) + "\r\n"
    manifest = root / "hostile_train.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + body.encode())
    clean = root / "clean_train.csv"
    clean.write_text("\n".join(good_lines) + "\n")
    expected = {i + 1: s for i, (line, s) in enumerate(lines) if line.strip()}
    return {"media": media, "manifest": manifest, "clean": clean, "expected": expected,
            "damaged": damaged, "lines": lines}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root`: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _by_key(frame: pl.DataFrame) -> dict[str, dict]:
    return {r["clip_key"]: r for r in frame.filter(pl.col("status") == "ok").iter_rows(named=True)}


def test_hostile_manifest_and_media_through_the_flow(
        prefect_server: None, hostile: dict, tmp_path: Path) -> None:
    from flows.ingest import IngestParams, ingest_flow

    data_dir = tmp_path / "data"
    media_before = _snapshot(hostile["media"].parent)
    summary = ingest_flow(IngestParams(manifests=[hostile["manifest"]], media_root=hostile["media"],
                                       data_dir=data_dir, shard_size=7))
    assert summary.failed_shards == []
    frame = check_clips(data_dir, {"hostile_train": hostile["manifest"]})
    assert frame.height == len(hostile["expected"]) == summary.clips
    got = dict(zip(frame["line_no"], frame["status"], strict=True))
    for line_no, status in hostile["expected"].items():
        if status is not None:  # damaged media: any recorded status (checked by check_clips)
            assert got[line_no] == status, (line_no, hostile["lines"][line_no - 1], got[line_no])
    # Nothing beside the data directory was touched or added: the media root and manifests
    # are read only. (This replaces a check for a `pwn` file, which could not fail: ids never
    # reach a shell, and a `$(touch pwn)` run by one would land in the shell's working
    # directory, not here. That ids never reach yt-dlp or a path is test_safety's.)
    assert _snapshot(hostile["media"].parent) == media_before

    by_id = {r["youtube_id"]: r for r in frame.filter(pl.col("status") == "ok")
             .iter_rows(named=True)}
    layout = DataLayout(data_dir)
    assert by_id["hugedurmkv_"]["media_duration_s"] == pytest.approx(1e9)
    assert by_id["webmasmp4__"]["video_codec"] == "vp9"
    assert by_id["mp4aswebm__"]["video_codec"] == "h264"
    # The 16 kHz FLAC-in-mkv source cut at the same 0.5-1.5 s: the reference waveform.
    reference, _ = clip_flac(layout,
        _by_key(frame)[clip_key("goodmkv____", 0.5, 1.5)]["audio_path"])
    for vid in ("audio8khz__", "audio96khz_", "sixchannel_", "vfrvideo___", "rotated____"):
        samples, rate = clip_flac(layout, by_id[vid]["audio_path"])
        assert rate == SAMPLE_RATE and len(samples) == SAMPLE_RATE
        corr = np.corrcoef(samples.astype(float), reference.astype(float))[0, 1]
        assert corr > 0.9, (vid, corr)  # same chirp, whatever the rate, channels or container
    silent, _ = clip_flac(layout, by_id["silentaudio"]["audio_path"])
    assert len(silent) == SAMPLE_RATE and np.abs(silent).max() <= 1

    errors = dict(zip(frame["line_no"], frame["error"], strict=True))
    reasons = {hostile["lines"][n - 1][0]: errors[n] for n in hostile["expected"]}
    assert "limit 600 s" in reasons["hugedurmkv_,0,1e9,0.5,0.5"]
    assert "truncated" in reasons["hugedurmkv_,100,101,0.5,0.5"]
    assert "past the end" in reasons["goodmp4____,1e9,1000000001,0.5,0.5"]
    assert "youtube_id must be 11 characters" in reasons["a;b$(c),0,1,0.5,0.5"]

    # Damaged copies: the mix of outcomes is recorded; at least some must be caught as damage.
    damaged = frame.filter(pl.col("youtube_id").is_in(hostile["damaged"]))
    assert damaged.height == len(hostile["damaged"])
    print("damaged media outcomes:", dict(damaged.group_by("status").len().iter_rows()))
    assert damaged.filter(pl.col("status") != "ok").height >= len(hostile["damaged"]) // 4

    # The good rows are identical to a run of a manifest holding only them.
    clean_dir = tmp_path / "clean"
    run_shards(hostile["clean"], hostile["media"], clean_dir, 4)
    clean = _by_key(check_clips(clean_dir, {"clean_train": hostile["clean"]}))
    hostile_ok = _by_key(frame)
    assert len(clean) == 6 and set(clean) <= set(hostile_ok)
    for key, want in clean.items():
        have = hostile_ok[key]
        assert {f: have[f] for f in PROBE_FIELDS} == {f: want[f] for f in PROBE_FIELDS}
        a, _ = clip_flac(layout, have["audio_path"])
        b, _ = clip_flac(DataLayout(clean_dir), want["audio_path"])
        assert np.array_equal(a, b), key


def test_a_100_mb_line_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    media = tmp_path / "media"
    make_good(media / "goodmp4____.mp4")
    manifest = tmp_path / "big_line_train.csv"
    with open(manifest, "wb") as fh:
        fh.write(b"goodmp4____,0.5,1.5,0.5,0.5\n")
        fh.write(b"goodmp4____,0.25,1.25,0.5,0.5,")
        block = b"A" * (1 << 20)
        for _ in range(100):
            fh.write(block)
        fh.write(b"\ngoodmp4____,0,1,0.5,0.5\n")
    layout = DataLayout(tmp_path / "data").ensure()
    tracemalloc.start()
    try:
        plans = plan_manifests([manifest], 2)
        for shard in plans[0].shards:
            ingest_shard(shard, layout, media)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading a 100 MiB line"
    frame = check_clips(layout.root, {"big_line_train": manifest})
    assert frame["status"].to_list() == ["ok", "invalid_row", "ok"]
    error = frame["error"][1]
    assert f"limit {MAX_LINE_BYTES}" in error and len(error) < 400
    assert str(100 * 2**20 + len("goodmp4____,0.25,1.25,0.5,0.5,")) in error
