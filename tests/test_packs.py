"""Packed audio (issue 26): one tar of FLACs per clips shard, written by ingest, read by offset.

The pack's writes are atomic and a killed ingest resumes with one pack per shard; a pack no row
names after a changed input stays until `s2f gc` removes it; a damaged,
truncated or missing pack gives each clip its own error and the others still read; data with a
FLAC per clip (ingested before packs) reads as before and gives the same batches; training
leaves an unreadable clip out of its batch and records it; evaluation reads packs too.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from ingest_helpers import clip_flac, make_good

from s2f.ingest.manifest import plan_manifests
from s2f.ingest.media import encode_flac, read_flac
from s2f.ingest.shard import ingest_shard
from s2f.media.audio import AudioConfig
from s2f.media.packs import AudioReader, AudioReadError, PackWriter, load_clip_audio
from s2f.train.data import PairStream
from s2f.train.synthetic import SyntheticCorpus, build
from storage.io import TEMP_GLOB, scan, shard_paths
from storage.layout import DataLayout, parse_audio_key

RATE = 16000
CORPUS = SyntheticCorpus(identities=10, clips_per_identity=2, test_identities=2, dim=8,
                         seconds=0.6, shard_size=8, faces=False)


def _flacs(n: int) -> list[bytes]:
    t = np.arange(RATE // 2) / RATE
    return [encode_flac((8000 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.int16))
            for i in range(n)]


def _pack(tmp_path: Path, n: int = 5) -> tuple[DataLayout, list[str], list[bytes]]:
    layout = DataLayout(tmp_path / "data").ensure()
    blobs = _flacs(n)
    with PackWriter(layout.pack_path(layout.shard_path("clips", "m_train", 0), "t0"),
                    layout) as pack:
        keys = [pack.add(f"clip{i}", b) for i, b in enumerate(blobs)]
    return layout, keys, blobs


def test_a_pack_is_a_tar_read_by_offset_in_one_or_many_reads(tmp_path: Path) -> None:
    layout, keys, blobs = _pack(tmp_path)
    path = layout.root / "audio/packs/m_train/shard-00000-t0.tar"
    assert [parse_audio_key(k).pack for k in keys] == ["audio/packs/m_train/shard-00000-t0.tar"] * 5
    with tarfile.open(path) as tar:  # a plain tar: `tar tf` lists it
        members = tar.getmembers()
        assert [m.name for m in members] == [f"clip{i}.flac" for i in range(5)]
        assert [m.offset_data for m in members] == [parse_audio_key(k).offset for k in keys]
        assert [tar.extractfile(m).read() for m in members] == blobs
    resolved = [layout.resolve(k) for k in reversed(keys)]  # any order in, same order out
    for gap in (0, 1 << 20):  # one read per member, or one span for them all
        assert AudioReader(max_gap=gap).encoded(resolved) == blobs[::-1]
    samples, rate = read_flac(io.BytesIO(blobs[2]))
    np.testing.assert_allclose(load_clip_audio(layout.resolve(keys[2])), samples / 32768)
    assert rate == RATE


def test_a_pack_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data").ensure()
    shard = layout.shard_path("clips", "m_train", 0)
    with PackWriter(layout.pack_path(shard, "empty"), layout):
        pass
    assert layout.packs_of(shard) == []  # nothing added: no file
    with pytest.raises(RuntimeError, match="killed"), \
            PackWriter(layout.pack_path(shard, "torn"), layout) as pack:
        pack.add("a", _flacs(1)[0])
        raise RuntimeError("killed mid-pack")
    assert layout.packs_of(shard) == [] and list(layout.root.rglob(TEMP_GLOB)) == []


def test_a_bad_member_is_its_own_error_and_the_others_read(tmp_path: Path) -> None:
    layout, keys, blobs = _pack(tmp_path)
    pack = layout.root / parse_audio_key(keys[0]).pack
    data = bytearray(pack.read_bytes())
    data[parse_audio_key(keys[1]).offset + 100] ^= 0xFF  # one flipped byte in clip1's FLAC
    pack.write_bytes(bytes(data))
    old = layout.root / "audio/abcdefghijk/old.flac"  # the per-clip layout: still read
    old.parent.mkdir(parents=True)
    old.write_bytes(blobs[4])
    got = AudioReader().encoded([layout.resolve(k) for k in keys] + [old, old.with_name("x.flac")])
    assert got[0] == blobs[0] and got[2:5] == blobs[2:] and got[5] == blobs[4]
    assert isinstance(got[1], AudioReadError) and "CRC-32" in got[1].reason
    assert keys[1] in str(got[1])
    assert isinstance(got[6], AudioReadError) and "cannot be read" in got[6].reason
    pack.write_bytes(bytes(data[:parse_audio_key(keys[3]).offset + 10]))  # cut in clip3
    got = AudioReader().waves([layout.resolve(k) for k in keys])
    assert [type(w).__name__ for w in got] == ["ndarray", "AudioReadError", "ndarray",
                                               "AudioReadError", "AudioReadError"]
    assert "truncated" in got[3].reason
    pack.unlink()
    with pytest.raises(AudioReadError, match="its pack cannot be opened") as missing:
        load_clip_audio(layout.resolve(keys[0]))
    again = pickle.loads(pickle.dumps(missing.value))  # as a loader worker hands it back
    assert (again.key, again.reason, str(again)) == (missing.value.key, missing.value.reason,
                                                     str(missing.value))


def _manifest(tmp_path: Path, lines: int) -> tuple[Path, Path]:
    media = tmp_path / "media"
    make_good(media / "goodmp4____.mp4")
    manifest = tmp_path / "packs_train.csv"
    manifest.write_text("".join(f"goodmp4____,{i / 10:.1f},{i / 10 + 1:.1f},0.5,0.5\n"
                                for i in range(lines)))
    return manifest, media


def _ingest(manifest: Path, media: Path, layout: DataLayout) -> list[bool]:
    return [ingest_shard(s, layout, media).skipped for p in plan_manifests([manifest], 2)
            for s in p.shards]


def _check_ingested(layout: DataLayout, lines: int, one_pack: bool = True) -> pl.DataFrame:
    clips = scan(layout, "clips").collect().sort("line_no")
    assert clips["line_no"].to_list() == list(range(1, lines + 1))  # no loss, no duplicate
    for shard in shard_paths(layout, "clips"):
        packs = layout.packs_of(shard)
        rows = pl.read_parquet(shard)
        named = {parse_audio_key(k).pack for k in rows["audio_path"]}
        assert named <= {layout.relative(p) for p in packs}
        if one_pack:  # a torn pack was rewritten under its name; no other is left
            assert [layout.relative(p) for p in packs] == sorted(named)
        for key, n in rows.select("audio_path", "audio_samples").iter_rows():
            samples, rate = clip_flac(layout, key)
            assert rate == RATE and len(samples) == n > 0.99 * RATE
    assert list(layout.root.rglob(TEMP_GLOB)) == []
    return clips


def test_ingest_packs_each_shard_and_a_killed_run_resumes(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import s2f.ingest.shard as shard_module

    manifest, media = _manifest(tmp_path, 5)
    layout = DataLayout(tmp_path / "data").ensure()
    real_write = shard_module.write_table_atomic

    def killed_on_shard_1(table, path, extra=None):  # noqa: ANN001, ANN202
        if path.name == "shard-00001.parquet":
            raise KeyboardInterrupt("killed between the pack and the Parquet")
        return real_write(table, path, extra)

    monkeypatch.setattr(shard_module, "write_table_atomic", killed_on_shard_1)
    with pytest.raises(KeyboardInterrupt):
        _ingest(manifest, media, layout)
    assert len(shard_paths(layout, "clips")) == 1  # shard 0 committed, shard 1 not
    assert len(layout.packs_of(layout.shard_path("clips", "packs_train", 1))) == 1  # orphan
    monkeypatch.setattr(shard_module, "write_table_atomic", real_write)
    assert _ingest(manifest, media, layout) == [True, False, False]
    _check_ingested(layout, 5)
    assert _ingest(manifest, media, layout) == [True, True, True]  # a re-run adds nothing
    # A current shard whose pack is gone is redone (it would train on nothing).
    layout.packs_of(layout.shard_path("clips", "packs_train", 2))[0].unlink()
    assert _ingest(manifest, media, layout) == [True, True, False]
    _check_ingested(layout, 5)

    # A changed input (a line appended: shard 2 redone under another fingerprint) cuts into a
    # new pack; ingest deletes no pack, the old one stays until `s2f gc`, which removes
    # exactly it (no row names it) and no pack a row names.
    from storage.gc import find_orphans, remove_orphans

    last = layout.shard_path("clips", "packs_train", 2)
    (stale,) = layout.packs_of(last)
    with manifest.open("a") as fh:
        fh.write("goodmp4____,0.5,1.5,0.5,0.5\n")
    assert _ingest(manifest, media, layout) == [True, True, False]
    _check_ingested(layout, 6, one_pack=False)
    assert stale in layout.packs_of(last) and len(layout.packs_of(last)) == 2
    orphans = find_orphans(layout)
    assert [(o.kind, o.path, o.removable) for o in orphans] == [
        ("unreferenced-pack", stale, True)]
    assert orphans[0].size == stale.stat().st_size > 0
    assert remove_orphans(layout, orphans) == orphans
    assert not stale.exists() and find_orphans(layout) == []
    _check_ingested(layout, 6)


def _corpus(tmp_path: Path, name: str, packed: bool) -> DataLayout:
    layout = DataLayout(tmp_path / name).ensure()
    build(layout, SyntheticCorpus(**{**CORPUS.__dict__, "packed": packed}))
    return layout


def _stream(layout: DataLayout) -> PairStream:
    return PairStream(layout, "dlib-resnet", "train", AudioConfig(seconds=0.5), 4, seed=3,
                      dev_fraction=0.2, random_crop=True)


def test_packed_and_per_clip_data_give_the_same_batches(tmp_path: Path) -> None:
    packed, files = _corpus(tmp_path, "packed", True), _corpus(tmp_path, "files", False)
    assert not list((files.root / "audio").rglob("*.tar"))
    assert not list((packed.root / "audio").rglob("*.flac"))
    a, b = _stream(packed), _stream(files)
    for epoch in (0, 1):
        for (i, x), (j, y) in zip(a.batches(epoch), b.batches(epoch), strict=True):
            assert i == j and x.clip_keys == y.clip_keys
            np.testing.assert_array_equal(x.waves.numpy(), y.waves.numpy())
            np.testing.assert_array_equal(x.features.numpy(), y.features.numpy())


def test_training_leaves_out_an_unreadable_clip_and_records_why(tmp_path: Path) -> None:
    layout = _corpus(tmp_path, "packed", True)
    stream = _stream(layout)
    positions = stream.plan(0)[0]
    whole = stream.load(positions, 0)
    bad = stream._audio[positions[1]]
    ref = parse_audio_key(bad)
    pack = layout.resolve(ref.pack)
    data = bytearray(pack.read_bytes())
    data[ref.offset + ref.size // 2] ^= 0x55
    pack.write_bytes(bytes(data))
    batch = stream.load(positions, 0)
    assert batch.clip_keys == [k for n, k in enumerate(whole.clip_keys) if n != 1]
    np.testing.assert_array_equal(batch.waves.numpy(), whole.waves.numpy()[[0, 2, 3]])
    np.testing.assert_array_equal(batch.features.numpy(), whole.features.numpy()[[0, 2, 3]])
    assert list(stream.audio_errors) == [whole.clip_keys[1]]
    assert "CRC-32" in stream.audio_errors[whole.clip_keys[1]]
    pack.unlink()
    with pytest.raises(AudioReadError, match="no clip of this batch"):
        stream.load(positions, 0)


def test_evaluation_reads_packed_audio(tmp_path: Path) -> None:
    from s2f.evaluation import run as evaluation_run
    from s2f.evaluation.acoustic import acoustic_statistics_of
    from s2f.evaluation.data import EvaluationDataError, load_eval_set

    packed, files = _corpus(tmp_path, "packed", True), _corpus(tmp_path, "files", False)
    a, b = load_eval_set(packed, "dlib-resnet"), load_eval_set(files, "dlib-resnet")
    assert a.clip_keys == b.clip_keys and len(a) == 4
    assert all(parse_audio_key(p) is not None for p in a.audio_paths)
    reader = AudioReader()
    for x, y in zip(evaluation_run._read_block(reader, a, 0),
                    evaluation_run._read_block(reader, b, 0), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(acoustic_statistics_of(a.audio_paths),
                                  acoustic_statistics_of(b.audio_paths))
    for pack in (packed.root / "audio" / "packs").rglob("*.tar"):
        pack.unlink()
    with pytest.raises(EvaluationDataError, match=a.clip_keys[0]):
        evaluation_run._read_block(reader, a, 0)
    assert np.isnan(acoustic_statistics_of(a.audio_paths)).all()  # the ridges: NaN rows
