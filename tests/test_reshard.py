"""A layout that can change (issue 26): a finished data directory ingested and preprocessed
again with another shard size redoes no clip's work (counts of work done), a killed re-shard
resumes without redoing either, and `s2f gc` removes exactly the orphans, never a live shard.
Packed audio across re-shards: reused rows keep naming the packs their audio was cut into,
ingest deletes no pack, and gc removes exactly the packs no row names.

    pytest tests/test_reshard.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pipeline_helpers import table_digest

from s2f.ingest.manifest import plan_manifests
from s2f.ingest.shard import (
    ingest_shard,
    remove_stale_shards,
    supersede_shards,
)
from s2f.media.packs import AudioReader
from s2f.preprocess.clips import PreprocessConfig
from storage.io import rows_to_table, scan, shard_paths, write_table_atomic
from storage.layout import DataLayout, parse_audio_key
from storage.schemas import PREPROCESS

VIDEOS = ("faceaaaaaaa", "facebbbbbbb")
SEGMENTS = ((0.1, 1.5), (0.2, 1.4), (0.3, 1.3))
CONFIG = PreprocessConfig(workers=1)
COLUMNS = {"clips": ["clip_key", "line_no", "status", "error", "audio_path", "audio_samples"],
           "preprocess": ["clip_key", "status", "faces_found", "clip_fingerprint"],
           "faces": ["clip_key", "frame_time_s", "det_score", "bbox"],
           "face_features": ["clip_key", "feature"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 lines: 6 segments of 2 face videos, a missing video, a bad row."""
    from s2f.media.synthetic_clips import write_face_clip

    root = tmp_path_factory.mktemp("reshard")
    media = root / "media"
    media.mkdir()
    for name in VIDEOS:
        write_face_clip(media / f"{name}.webm", "vp9")
    lines = [f"{v},{a},{b},0.5,0.45" for a, b in SEGMENTS for v in VIDEOS]
    manifest = root / "avspeech_train.csv"
    manifest.write_text("\n".join([*lines, "missing0000,0,1,0.5,0.5", "not,a,row"]) + "\n")
    return manifest, media


def ingest(layout: DataLayout, manifest: Path, media: Path, size: int,
           stop_after: int | None = None) -> dict[str, int]:
    """What `s2f ingest` does per manifest, without Prefect; `stop_after`: shards, then a
    'kill'. Returns the work done."""
    (plan,) = plan_manifests([manifest], size)
    supersede_shards(layout, plan)
    remove_stale_shards(layout, plan.manifest, plan.n_shards, plan.blank_shards)
    done = {"media_rows": 0, "reused_rows": 0, "run": 0}
    for shard in plan.shards[:stop_after]:
        result = ingest_shard(shard, layout, media)
        done["media_rows"] += result.media_rows
        done["reused_rows"] += result.reused_rows
        done["run"] += int(not result.skipped)
    return done


def preprocess(layout: DataLayout) -> dict[str, int]:
    """What `s2f preprocess` does, without Prefect. Returns the work done."""
    from s2f.preprocess.shards import preprocess_shard, shard_is_done, supersede_outputs

    supersede_outputs(layout)
    done = {"clips_run": 0, "clips_reused": 0, "run": 0}
    for shard in shard_paths(layout, "clips"):
        if not shard_is_done(layout, shard, CONFIG):
            result = preprocess_shard(shard, layout, CONFIG, progress=False)
            done["clips_run"] += result["clips_run"]
            done["clips_reused"] += result["clips_reused"]
            done["run"] += 1
    return done


def digests(data_dir: Path) -> dict[str, Any]:
    return {t: table_digest(data_dir, t, cols) for t, cols in COLUMNS.items()}


def audio_bytes(layout: DataLayout) -> dict[str, bytes]:
    """Every ok clip's FLAC bytes, read through its `audio_path` key (`AudioReader`)."""
    ok = scan(layout, "clips").filter(pl.col("status") == "ok").collect()
    blobs = AudioReader().encoded([layout.resolve(p) for p in ok["audio_path"]])
    assert all(isinstance(b, bytes) for b in blobs), blobs
    return dict(zip(ok["clip_key"], blobs, strict=True))


def packs(layout: DataLayout) -> list[Path]:
    return sorted((layout.root / "audio" / "packs").rglob("*.tar"))


def _no_clip_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any media probe or frame decode from here on fails the test."""
    import s2f.ingest.shard as ingest_module
    import s2f.preprocess.shards as shards_module

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("clip work was redone")

    real = shards_module.preprocess_parallel

    def no_clips(rows: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        if any(r["status"] == "ok" for r in rows):  # a shard of no ok clip is called as before
            refuse()
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "_ingest_video", refuse)
    monkeypatch.setattr(shards_module, "preprocess_parallel", no_clips)


def test_another_shard_size_recomputes_nothing_and_gc_removes_only_orphans(
        corpus: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, media = corpus
    layout = DataLayout(tmp_path / "data").ensure()
    first = ingest(layout, manifest, media, 2)
    assert first == {"media_rows": 7, "reused_rows": 0, "run": 4}  # 6 ok + missing media
    assert preprocess(layout)["clips_run"] == 6
    before = digests(layout.root)
    assert before["faces"][0] > 0 and before["face_features"][0] == 6

    _no_clip_work(monkeypatch)
    again = ingest(layout, manifest, media, 3)  # 3 shards of 3 lines instead of 4 of 2
    assert again == {"media_rows": 0, "reused_rows": 7, "run": 3}
    work = preprocess(layout)
    assert work == {"clips_run": 0, "clips_reused": 6, "run": 3}
    assert digests(layout.root) == before  # the same rows, in other files
    assert len(shard_paths(layout, "clips")) == len(shard_paths(layout, "faces")) == 3
    assert ingest(layout, manifest, media, 3)["run"] == 0  # and current now: all skipped
    assert preprocess(layout)["run"] == 0

    # An output of a clips shard that no longer exists, written before outputs recorded lines,
    # and a cut nobody names: orphans. The superseded 2-line shards are covered: orphans too.
    old = layout.shard_path("preprocess", "avspeech_train", 7)
    write_table_atomic(rows_to_table([], PREPROCESS), old)
    stray = layout.root / "audio" / "gone_video_" / "gone.flac"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"fLaC")
    superseded = sorted((layout.root / "superseded").rglob("*.parquet"))
    assert len(superseded) == 4 * 4  # 4 clips shards + 4 of each output table
    live = {p: p.read_bytes() for p in [*(layout.root / "tables").rglob("*.parquet"),
                                        *(layout.root / "audio").rglob("*.tar"),
                                        *(layout.root / "audio").rglob("*.flac")]
            if p not in (old, stray)}
    assert len(packs(layout)) == 3  # the 2-line shards' packs: the reused rows name them all

    from flows.cli import main

    capsys_out: list[str] = []
    from storage.gc import find_orphans, print_gc

    assert print_gc(layout, yes=False, out=capsys_out.append) == 0
    assert "dry run: 18 files" in capsys_out[-1]
    assert all(p.exists() for p in [*superseded, old, stray])  # a dry run removes nothing
    assert {o.path for o in find_orphans(layout) if o.removable} == {*superseded, old, stray}
    assert main(["gc", "--data-dir", str(layout.root), "--yes"]) == 0
    assert not any(p.exists() for p in [*superseded, old, stray])
    assert {p: p.read_bytes() for p in live} == live  # every live file there, unchanged
    assert find_orphans(layout) == []
    assert digests(layout.root) == before


def test_a_killed_reshard_resumes_without_redoing_and_gc_keeps_what_it_needs(
        corpus: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, media = corpus
    layout = DataLayout(tmp_path / "data").ensure()
    ingest(layout, manifest, media, 3)
    preprocess(layout)
    before = digests(layout.root)
    _no_clip_work(monkeypatch)

    # Killed after the first of two new 4-line shards: lines 5-8 are only in superseded files.
    assert ingest(layout, manifest, media, 4, stop_after=1)["reused_rows"] == 4
    from storage.gc import find_orphans, remove_orphans

    kept = [o for o in find_orphans(layout) if o.kind == "superseded" and not o.removable]
    assert kept and all("lines-000000004" in o.path.name or "lines-000000007" in o.path.name
                        for o in kept)
    remove_orphans(layout, find_orphans(layout))  # gc between the kill and the re-run
    assert all(o.path.exists() for o in kept)
    resumed = ingest(layout, manifest, media, 4)
    assert resumed == {"media_rows": 0, "reused_rows": 3, "run": 1}  # line 8 is a bad row
    assert preprocess(layout) == {"clips_run": 0, "clips_reused": 6, "run": 2}
    assert digests(layout.root) == before


def test_the_ingest_flow_keeps_the_data_directorys_size_and_reports_reuse(
        prefect_server: None, corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """`s2f ingest` without --shard-size keeps the size the directory was ingested with (no
    surprise re-shard); with another size its summary counts the clips reused."""
    from flows.ingest import IngestParams, ingest_flow

    manifest, media = corpus
    params = IngestParams(manifests=[manifest], media_root=media, data_dir=tmp_path / "d")
    first = ingest_flow(params.model_copy(update={"shard_size": 2}))
    assert (first.shards, first.clips_run, first.clips_reused) == (4, 7, 0)
    kept = ingest_flow(params)  # no size given: the directory's 2, not the default 1024
    assert (kept.shards_skipped, kept.shards_run, kept.clips_run) == (4, 0, 0)
    resharded = ingest_flow(params.model_copy(update={"shard_size": 1024}))
    assert (resharded.shards, resharded.clips_run, resharded.clips_reused) == (1, 0, 7)
    assert resharded.counts == first.counts


def _touch(media: Path, video: str) -> None:
    """A new mtime for one video (same bytes): its clips' fingerprints change."""
    import os

    path = media / f"{video}.webm"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))


def _unreferenced_packs(layout: DataLayout) -> list[Path]:
    from storage.gc import find_orphans

    return sorted(o.path for o in find_orphans(layout)
                  if o.kind == "unreferenced-pack" and o.removable)


def test_resharding_packed_audio_redoes_no_clip_and_gc_removes_only_unreferenced_packs(
        corpus: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, media = corpus
    work = tmp_path / "media"  # a copy: the mtimes are changed below
    work.mkdir()
    for video in VIDEOS:
        (work / f"{video}.webm").write_bytes((media / f"{video}.webm").read_bytes())
    layout = DataLayout(tmp_path / "data").ensure()
    assert ingest(layout, manifest, work, 2)["media_rows"] == 7
    before, written = audio_bytes(layout), packs(layout)
    assert len(before) == 6 and len(written) == 3  # shards of 2 lines; the 4th has no audio
    with monkeypatch.context() as patched:
        _no_clip_work(patched)
        for size in (3, 2, 3):  # grow, shrink back (the old fingerprints' pack names), grow
            done = ingest(layout, manifest, work, size)
            assert (done["media_rows"], done["reused_rows"]) == (0, 7)
            assert audio_bytes(layout) == before  # every key reads the same bytes
            assert packs(layout) == written  # nothing cut: no pack written, none deleted
            assert _unreferenced_packs(layout) == []
    # Lines 1-3 (faceaaaaaaa twice, facebbbbbbb) now read from the packs of two old shards.
    rows = pl.read_parquet(layout.shard_path("clips", "avspeech_train", 0))
    assert len({parse_audio_key(p).pack for p in rows["audio_path"] if p}) == 2

    # One video's clips redone: the old packs still hold the other's, so they stay live.
    _touch(work, VIDEOS[1])
    assert ingest(layout, manifest, work, 3)["media_rows"] == 3
    assert audio_bytes(layout) == before and _unreferenced_packs(layout) == []
    # The other's too: now no row names the three first packs, and gc removes exactly them.
    _touch(work, VIDEOS[0])
    assert ingest(layout, manifest, work, 3)["media_rows"] == 3
    live = [p for p in packs(layout) if p not in written]
    assert len(live) == 4 and set(written) <= set(packs(layout))  # 2 shards x 2 runs; none deleted
    assert _unreferenced_packs(layout) == written

    from flows.cli import main

    assert main(["gc", "--data-dir", str(layout.root), "--yes"]) == 0
    assert packs(layout) == sorted(live)
    assert audio_bytes(layout) == before  # the same cuts, all still read
    from storage.gc import find_orphans

    assert find_orphans(layout) == []


def test_a_pack_that_reused_rows_name_is_never_rewritten(
        corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """A shard redone under its own fingerprint (its pack cut short after its first video's
    clip) reuses that clip from the short pack and writes the other to a pack of a derived
    name, leaving the short one as it is."""
    manifest, media = corpus
    layout = DataLayout(tmp_path / "data").ensure()
    ingest(layout, manifest, media, 2)
    before = audio_bytes(layout)
    shard = layout.shard_path("clips", "avspeech_train", 0)
    keys = dict(pl.read_parquet(shard).select("clip_key", "audio_path").iter_rows())
    first, second = sorted(keys.items(), key=lambda kv: parse_audio_key(kv[1]).offset)
    ref = parse_audio_key(first[1])
    (pack,) = layout.packs_of(shard)
    with open(pack, "r+b") as fh:
        fh.truncate(ref.offset + ref.size)  # the second clip's member is cut off
    short = pack.read_bytes()
    done = ingest(layout, manifest, media, 2)
    assert (done["run"], done["media_rows"], done["reused_rows"]) == (1, 1, 1)
    again = dict(pl.read_parquet(shard).select("clip_key", "audio_path").iter_rows())
    assert again[first[0]] == first[1]  # reused: the same key, into the short pack
    assert parse_audio_key(again[second[0]]).pack != ref.pack
    assert pack.read_bytes() == short and len(layout.packs_of(shard)) == 2
    assert audio_bytes(layout) == before and _unreferenced_packs(layout) == []
