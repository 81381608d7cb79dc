"""Issue 24's corruption cases: a flipped bit in a Parquet page, media replaced after ingest, a
video too large to hold, a data directory that cannot be written. Real files throughout.

    pytest tests/reliability/test_corruption.py
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_helpers import SAMPLE_RATE, make_good, tone

from s2f.ingest.manifest import plan_manifests
from s2f.ingest.media import MAX_VIDEO_SIDE
from s2f.ingest.shard import ingest_shard
from s2f.media.mux import write_media
from s2f.media.synthetic_clips import write_face_clip
from s2f.media.video import MAX_FRAME_SIDE, ClipRequest, decode_clips
from s2f.preprocess.clips import PreprocessConfig, preprocess_clips
from s2f.preprocess.shards import output_paths, preprocess_shard, shard_is_done
from storage.io import (
    read_shard,
    read_table_verified,
    rows_to_table,
    shard_damage,
    write_table_atomic,
)
from storage.layout import DataDirNotWritable, DataLayout
from storage.schemas import CLIPS
from storage.status import clip_status


def flip_byte_in_data_page(path: Path, column: str) -> int:
    """XOR one byte of the values of `column`'s data page (its largest leaf; one data page per
    column chunk in these small shards), as a bad disk sector would change them. The page's
    payload is the end of the chunk: its header comes first and holds min/max statistics
    (a string column's are ~200 bytes), which the CRC does not cover and reads do not use.
    For a large page the byte is halfway through the payload. Returns the offset."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunks = [meta.column(i) for i in range(meta.num_columns)
              if meta.column(i).path_in_schema.split(".")[0] == column]
    chunk = max(chunks, key=lambda c: c.total_compressed_size)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    end = start + chunk.total_compressed_size
    page = end - chunk.data_page_offset
    offset = end - 2 if page < 1024 else end - page // 2  # headers are < 1 KiB
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    return offset


def _features_table(n: int, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    values = np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)
    return pa.table({
        "clip_key": [f"k{i:04d}" for i in range(n)],
        "feature": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 128),
    }), values


def test_a_flipped_bit_fails_its_page_checksum_and_old_shards_still_read(tmp_path: Path) -> None:
    """Before: the flip read silently as other values (as pyarrow without verification still
    does here) and nothing noticed. Now every page carries a CRC and verified reads refuse it."""
    table, values = _features_table(300)
    path = write_table_atomic(table, tmp_path / "shard-00000.parquet")
    assert shard_damage(path) is None
    flip_byte_in_data_page(path, "feature")
    unverified = np.asarray(pq.read_table(path)["feature"].to_pylist(), np.float32)
    assert (unverified != values).any()  # the silent wrong read the checksum exists for
    with pytest.raises(OSError, match="CRC checksum verification failed"):
        read_table_verified(path)
    assert "CRC checksum verification failed" in (shard_damage(path) or "")

    # A shard written before checksums (no CRC in its page headers) still reads, verified.
    old = tmp_path / "old.parquet"
    pq.write_table(rows_to_table([{"manifest": "m", "split": "train", "line_no": 1,
                                   "status": "ok"}], CLIPS), old, compression="zstd")
    assert shard_damage(old) is None
    assert read_shard(old, "clips").num_rows == 1


def _row(path: Path, line: int, **extra: Any) -> dict[str, Any]:
    return {"clip_key": f"{path.stem[:11]}_{line}", "manifest": "unit", "split": "train",
            "line_no": line, "youtube_id": path.stem[:11], "start_s": 0.2, "end_s": 1.4,
            "hint_x": 0.5, "hint_y": 0.45, "status": "ok", "media_path": str(path),
            "video_path": str(path), "video_codec": "vp9", "width": 640, "height": 360,
            "fps": 25.0, **extra}


def test_preprocess_redoes_a_shard_whose_features_page_flipped_a_bit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`shard_is_done` read only the footers: the damaged shard counted as done forever."""
    clip = write_face_clip(tmp_path / "media" / "facevp9aaaa.webm", "vp9")
    layout = DataLayout(tmp_path / "data").ensure()
    clips = write_table_atomic(rows_to_table([_row(clip, 1), _row(clip, 2)], CLIPS),
                               layout.shard_path("clips", "unit", 0))
    config = PreprocessConfig(workers=1)
    preprocess_shard(clips, layout, config, progress=False)
    features = output_paths(layout, clips)["face_features"]
    first = read_table_verified(features)
    assert first.num_rows == 2 and shard_is_done(layout, clips, config)

    flip_byte_in_data_page(features, "feature")
    with caplog.at_level(logging.WARNING, logger="s2f.preprocess.shards"):
        assert not shard_is_done(layout, clips, config)
    assert f"its output {features} is damaged" in caplog.text and "CRC" in caplog.text
    preprocess_shard(clips, layout, config, progress=False)
    assert shard_is_done(layout, clips, config)
    assert read_table_verified(features).equals(first)


def _ingest(manifest: Path, media_root: Path, layout: DataLayout) -> list[Any]:
    return [ingest_shard(shard, layout, media_root)
            for plan in plan_manifests([manifest], 256) for shard in plan.shards]


def test_ingest_redoes_a_damaged_shard(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    media = tmp_path / "media"
    make_good(media / "goodmp4____.mp4")
    manifest = tmp_path / "m_train.csv"
    manifest.write_text("".join(f"goodmp4____,{s},{s + 0.5},0.5,0.5\n" for s in (0.0, 0.5, 1.0)))
    layout = DataLayout(tmp_path / "data").ensure()
    (first,) = _ingest(manifest, media, layout)
    (again,) = _ingest(manifest, media, layout)
    assert not first.skipped and again.skipped
    shard = Path(first.path)
    before = read_shard(shard, "clips")
    flip_byte_in_data_page(shard, "media_path")
    with caplog.at_level(logging.WARNING, logger="s2f.ingest.shard"):
        (redone,) = _ingest(manifest, media, layout)
    assert not redone.skipped  # before: skipped, its footer being current
    assert f"redoing {shard}: the shard is damaged" in caplog.text
    assert read_shard(shard, "clips").equals(before)


def test_media_replaced_after_ingest_is_media_changed_and_never_trained_on(
        tmp_path: Path) -> None:
    """Before: another person's video under the same name went through preprocess `ok` (faces
    of B with the audio of A). Now ingest records size and mtime and preprocess compares."""
    media = tmp_path / "media"
    write_face_clip(media / "facesameaaa.webm", "vp9")
    swapped = write_face_clip(media / "faceswapbbb.webm", "vp9")
    manifest = tmp_path / "m_train.csv"
    manifest.write_text("facesameaaa,0.2,1.4,0.5,0.45\nfaceswapbbb,0.2,1.4,0.5,0.45\n")
    layout = DataLayout(tmp_path / "data").ensure()
    (result,) = _ingest(manifest, media, layout)
    rows = read_shard(Path(result.path), "clips").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[1]["media_size_bytes"] == swapped.stat().st_size
    assert rows[1]["media_mtime_ns"] == swapped.stat().st_mtime_ns

    time.sleep(0.01)  # another file under the same name: a new mtime (and size)
    write_face_clip(swapped, "vp9", centres=((0.3, 0.4),), face_px=90)
    old_style = {**rows[0], "clip_key": "old", "media_size_bytes": None, "media_mtime_ns": None}
    tables = preprocess_clips([*rows, old_style], PreprocessConfig(), progress=False)
    status = {r["clip_key"]: r for r in tables.preprocess.to_pylist()}
    assert status[rows[0]["clip_key"]]["status"] == "ok"
    assert status["old"]["status"] == "ok"  # ingested before the columns: nothing to compare
    changed = status[rows[1]["clip_key"]]
    assert changed["status"] == "media_changed"
    assert f"{swapped} changed after ingest" in changed["error"] and "re-run s2f ingest" in \
        changed["error"]
    # No face_features row: training pairs are clips joined with face_features.
    assert rows[1]["clip_key"] not in tables.face_features.column("clip_key").to_pylist()

    clips = Path(result.path)
    paths = output_paths(layout, clips)
    for name in ("preprocess", "faces", "face_features"):
        write_table_atomic(getattr(tables, name), paths[name])
    shown = {r["youtube_id"]: r for r in clip_status(layout).to_dicts()}
    assert (shown["faceswapbbb"]["stage"], shown["faceswapbbb"]["status"]) == \
        ("preprocess", "media_changed")
    assert shown["faceswapbbb"]["error"] == changed["error"]

    swapped.unlink()
    gone = preprocess_clips(rows[1:], PreprocessConfig(), progress=False).preprocess.to_pylist()
    assert gone[0]["status"] == "media_changed" and "is gone since ingest" in gone[0]["error"]


def test_a_huge_resolution_video_is_video_too_large_and_decoding_downscales(
        tmp_path: Path) -> None:
    """Before: an 8192x8192 H.264 clip of 34 KB passed ingest and took 2.2 GB in preprocess."""
    side = 5000
    assert side > MAX_VIDEO_SIDE
    media = tmp_path / "media"
    frames = [np.full((side, side, 3), 30 * i, np.uint8) for i in range(8)]
    big = write_media(media / "hugeframes_.mp4", frames, 25, tone(0.32), SAMPLE_RATE, "h264")
    del frames
    make_good(media / "goodmp4____.mp4")  # a 1080p-or-smaller video still passes
    manifest = tmp_path / "m_train.csv"
    manifest.write_text("hugeframes_,0.0,0.3,0.5,0.5\ngoodmp4____,0.0,1.0,0.5,0.5\n")
    layout = DataLayout(tmp_path / "data").ensure()
    (result,) = _ingest(manifest, media, layout)
    rows = read_shard(Path(result.path), "clips").to_pylist()
    assert [r["status"] for r in rows] == ["video_too_large", "ok"]
    assert "5000x5000 (25,000,000 pixels) exceed the limit" in rows[0]["error"]

    # Decoding (whatever reached it: data ingested before the limit) holds the working size.
    (decoded,) = decode_clips([ClipRequest("k", str(big), 0.0, 0.3, 25.0, "h264")], 2,
                              gpu=False, force_decoder="pyav")
    assert decoded.frames.shape == (2, MAX_FRAME_SIDE, MAX_FRAME_SIDE, 3)


def test_an_unwritable_data_dir_is_refused_up_front(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a read-only data dir printed ~900 lines of "readonly database" from Prefect."""
    from flows.cli import main

    data = tmp_path / "data"
    DataLayout(data).ensure()
    if os.geteuid() != 0:  # a real read-only directory (root writes through modes)
        (data / "tables").chmod(0o555)
    else:  # as root: the read-only file system's error, where the write check makes it
        real_open = os.open

        def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if ".s2f-write-check-" in str(path) and "tables" in str(path):
                raise OSError(30, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
    try:
        with pytest.raises(DataDirNotWritable, match=f"data directory {data} is not writable"):
            DataLayout(data).ensure()
        assert main(["preprocess", "--data-dir", str(data)]) == 2
    finally:
        (data / "tables").chmod(0o755)  # so the temporary directory can be removed
    err = capsys.readouterr().err
    assert err.startswith(f"s2f preprocess: the data directory {data} is not writable")
    assert "Read-only file system" in err or "Permission denied" in err
    assert len(err.splitlines()) == 1
