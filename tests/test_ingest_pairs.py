"""The real voice-face pairs source (s2f.ingest.pairs) on a page directory made here, and on the
shared copy of the Speech2Face project page when it is present.

    pytest -q -x tests/test_ingest_pairs.py

The fixture is a tmp directory in the page's layout: `.wav` (16 kHz mono, 44.1 kHz stereo,
float with NaN) and `.flac` audio written with PyAV, faces copied from the bundled photographs
(s2f/assets/faces), an index.html in the page's markup, and one broken pair of each kind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from ingest_helpers import clip_flac

from s2f.ingest import pairs
from s2f.ingest.media import write_flac_atomic
from s2f.ingest.pairs import (
    PAIRS_FOLDERS,
    PairsLayoutError,
    assign_splits,
    ingest_pair_shard,
    ingest_pairs,
    parse_index_html,
    plan_pair_shards,
    remove_stale_pair_shards,
    scan_pairs,
)
from storage.io import TEMP_GLOB, rows_to_table, scan, shard_paths, write_table_atomic
from storage.layout import DataLayout, clip_key, parse_audio_key
from storage.schemas import ADDED_COLUMNS, CLIP_STATUSES, CLIPS

ROOT = Path(__file__).resolve().parents[1]
FACES = sorted((ROOT / "s2f" / "assets" / "faces").glob("*.jpg"))
SHARED_PAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech2face-page"
RATE = 16000

# AVSpeech-style stems of the fixture: stem -> (audio kind or None, has a face)
AVSPEECH = {
    "aaaaaaaaaaa_001.000000-003.000000": ("wav", True),
    "aaaaaaaaaaa_010.000000-012.000000": ("flac", True),
    "aaaaaaaaaaa_010.00000000-012.00000000": ("wav", True),  # same clip key: duplicate
    "bbbbbbbbbbb_000.500000-002.500000": ("wav44k_stereo", True),
    "ccccccccccc_001.000000-002.000000": ("garbage", True),
    "ddddddddddd_001.000000-002.000000": ("empty", True),
    "eeeeeeeeeee_001.000000-002.000000": ("nan", True),
    "fffffffffff_001.000000-002.000000": ("silent", True),
    "ggggggggggg_001.000000-002.000000": ("flac", False),  # no face
    "hhhhhhhhhhh_001.000000-002.000000": (None, True),  # no audio
    "not_a_stem": ("wav", True),
}
DISTRACTORS = ["aaaaaaaaaaa_050.000000-053.000000", "rrrrrrrrrrr_001.000000-004.000000"]
# VoxCeleb persons: name -> gender; each one clip (Al_Pha two, Ed_Echo's copied as a duplicate)
VOX_PERSONS = {"Al_Pha": "Male", "Bo_Bravo": "Male", "Cy_Charlie": "Male", "Dan_Delta": "Male",
               "Ed_Echo": "Male", "Fay_Fox": "Female", "Gia_Golf": "Female",
               "Hal_Hotel": "Female", "Ivy_India": "Female", "Jo_Juliet": "Female"}
BAD_LABELS = "<br>Male <br> Native <br> Age 20-39 <br> Ethnicity: else"


def yid(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()[:11]


def vox_stem(name: str, group: str = "0100", utt: int = 1) -> str:
    return f"{group}{name}_{yid(name)}_{utt:07d}"


def chirp(seconds: float, rate: int, f0: float = 180.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (f0 + 60 * t) * t)).astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, rate: int, codec: str = "pcm_s16le",
              channels: int = 1) -> Path:
    """A WAV file with PyAV: s16 (or float for pcm_f32le), mono or stereo (same signal)."""
    fmt = "flt" if codec == "pcm_f32le" else "s16"
    layout = "stereo" if channels == 2 else "mono"
    data = wave if fmt == "flt" else np.round(wave * 32767).astype(np.int16)
    data = np.repeat(data, channels)  # interleaved, packed
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout, stream.format = layout, fmt
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format=fmt, layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def write_audio(wav_dir: Path, stem: str, kind: str, seed: int) -> Path:
    wave = chirp(1.0, RATE, 150 + 10 * seed)
    if kind == "flac":
        return write_flac_atomic(np.round(wave * 32767).astype(np.int16), wav_dir / f"{stem}.flac")
    path = wav_dir / f"{stem}.{'flac' if kind in ('empty', 'silent') else 'wav'}"
    if kind == "wav":
        return write_wav(path, wave, RATE)
    if kind == "wav44k_stereo":
        return write_wav(path, chirp(2.0, 44100), 44100, channels=2)
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 3000, np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "nan":
        wave[100:300] = np.nan
        write_wav(path, wave, RATE, codec="pcm_f32le")
    elif kind == "silent":
        write_flac_atomic(np.zeros(RATE, np.int16), path)
    return path


def add_pair(folder: Path, stem: str, kind: str | None, face: bool, seed: int) -> None:
    for sub in ("Wav", "Face_ori", "Face_f2f", "Face_exg0"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if kind is not None:
        write_audio(folder / "Wav", stem, kind, seed)
    if face:
        for sub in ("Face_ori", "Face_f2f", "Face_exg0"):
            shutil.copyfile(FACES[seed % len(FACES)], folder / sub / f"{stem}.jpg")


def index_rows(stem: str, labels: str) -> str:
    imgs = "".join(f'<td><img src="./{sub}/{stem}.jpg" width="224" height="224""></td>'
                   for sub in ("Face_ori", "Face_f2f", "Face_exg0"))
    return (f"<tr>\n<td>{stem}</td><td></td><td></td><td></td><td></td>\n</tr>\n"
            f"<tr>\n<td>{labels}</td>{imgs}<td><audio controls=\"controls\"> <source "
            f"src=\"./Wav/{stem}.wav\" type=\"audio/wav\"> Does not support </audio></td>\n</tr>\n")


def label_text(gender: str, i: int) -> str:
    native = "Native" if i % 2 else "Non-native"
    age = ["20-39", "40-59", ">=60", "<20"][i % 4]
    return f"<br>{gender} <br> {native} <br> Age: {age} <br> Ethnicity: Non-Hispanic white"


def make_page(root: Path) -> Path:
    """The fixture directory (see the module docstring); returns root."""
    for i, (stem, (kind, face)) in enumerate(AVSPEECH.items()):
        add_pair(root / "avspeech_res", stem, kind, face, i)
    for stem in DISTRACTORS:
        (root / "retrieve" / "Face_ori").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FACES[0], root / "retrieve" / "Face_ori" / f"{stem}.jpg")
    vox = root / "voxceleb"
    html = ["<!DOCTYPE html><html><body><table>\n<tr><th>Content</th><th>Original face</th></tr>"]
    for i, (name, gender) in enumerate(VOX_PERSONS.items()):
        stems = [vox_stem(name)] + ([vox_stem(name, "0300", 2)] if name == "Al_Pha" else [])
        for j, stem in enumerate(stems):
            add_pair(vox, stem, "flac" if j == 0 else "wav", True, i)
            html.append(index_rows(stem, label_text(gender, i)))
    duplicate = vox_stem("Ed_Echo", group="0200")  # another figure group, same clip
    add_pair(vox, duplicate, "flac", True, 3)
    html.append(index_rows(duplicate, label_text("Male", 4)))
    bad = vox_stem("Kim_Kilo")
    add_pair(vox, bad, "flac", True, 5)
    html.append(index_rows(bad, BAD_LABELS))
    html.append("<tr><td>this row is not a clip</td><td></td></tr>\n")
    siri = vox_stem("Zz_Siri", group="1300")
    add_pair(vox, siri, "flac", True, 6)
    html.append(index_rows(siri, "<br>Female <br> Native <br> Age: 20-39 <br> Ethnicity: else"))
    (vox / "index.html").write_text("".join(html) + "</table></body></html>")
    return root


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_page(tmp_path_factory.mktemp("page"))


def by_stem(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["_stem"]: r for r in records if r.get("_stem")}


def test_scan_gives_every_stem_its_status_and_reason(page: Path) -> None:
    records = scan_pairs(page)
    rec = by_stem(records)
    assert set(r["status"] for r in records) <= set(CLIP_STATUSES)
    a1 = rec["aaaaaaaaaaa_001.000000-003.000000"]
    assert a1["status"] == "ok" and a1["manifest"] == "pairs_avspeech_res"
    assert a1["clip_key"] == clip_key("aaaaaaaaaaa", 1.0, 3.0) and a1["person_id"] == "aaaaaaaaaaa"
    assert (a1["start_s"], a1["end_s"], a1["hint_x"], a1["video_path"]) == (1.0, 3.0, 0.5, None)
    assert a1["media_path"].endswith("Wav/aaaaaaaaaaa_001.000000-003.000000.wav")
    assert Path(a1["face_image_path"]).is_file() and "/Face_ori/" in a1["face_image_path"]
    assert "/Face_exg0/" in a1["paper_s2f_path"] and "/Face_f2f/" in a1["paper_f2f_path"]
    dup = rec["aaaaaaaaaaa_010.00000000-012.00000000"]
    assert dup["status"] == "duplicate"
    assert "avspeech_res/aaaaaaaaaaa_010.000000-012.000000" in dup["error"]
    assert rec["ggggggggggg_001.000000-002.000000"]["status"] == "missing_face"
    assert "no avspeech_res/Face_ori/ggggggggggg" in rec["ggggggggggg_001.000000-002.000000"][
        "error"]
    assert rec["hhhhhhhhhhh_001.000000-002.000000"]["status"] == "missing_audio"
    assert "no avspeech_res/Wav/hhhhhhhhhhh" in rec["hhhhhhhhhhh_001.000000-002.000000"]["error"]
    bad_stem = rec["not_a_stem"]
    assert bad_stem["status"] == "invalid_row" and "AVSpeech style" in bad_stem["error"]
    assert bad_stem["clip_key"] is None
    for stem in DISTRACTORS:
        assert rec[stem]["status"] == "face_only" and rec[stem]["manifest"] == "pairs_retrieve"
    # line_no: 1-based position in the folder's sorted listing
    listing = sorted(AVSPEECH)
    assert [r["line_no"] for r in records if r["manifest"] == "pairs_avspeech_res"] == list(
        range(1, len(listing) + 1))
    assert rec[listing[4]]["line_no"] == 5
    assert not any("Zz_Siri" in (r.get("_stem") or "") for r in records)  # assistants skipped


def test_voxceleb_keys_labels_and_bad_index_rows(page: Path) -> None:
    records = scan_pairs(page)
    rec = by_stem(records)
    al = rec[vox_stem("Al_Pha")]
    assert al["clip_key"] == f"vox_Al_Pha_{yid('Al_Pha')}_0000001"
    assert (al["youtube_id"], al["person_id"], al["start_s"]) == (yid("Al_Pha"), "Al_Pha", 0.0)
    assert (al["gender"], al["native_speaker"], al["age_band"], al["ethnicity"]) == (
        "male", False, "20-39", "Non-Hispanic white")
    assert rec[vox_stem("Bo_Bravo")]["native_speaker"] is True
    assert rec[vox_stem("Dan_Delta")]["age_band"] == "<20"  # `Age: <20` is text to html.parser
    assert rec[vox_stem("Fay_Fox")]["gender"] == "female"
    assert rec[vox_stem("Al_Pha", "0300", 2)]["media_path"].endswith(".wav")
    dup = rec[vox_stem("Ed_Echo", group="0200")]
    assert dup["status"] == "duplicate" and vox_stem("Ed_Echo") in dup["error"]
    bad = rec[vox_stem("Kim_Kilo")]
    assert bad["status"] == "invalid_row" and "Age 20-39" in bad["error"]
    assert "index.html line" in bad["error"] and bad.get("gender") is None
    orphan = [r for r in records if r["manifest"] == "pairs_voxceleb" and r.get("_stem") is None]
    assert len(orphan) == 1 and orphan[0]["status"] == "invalid_row"
    assert "this row is not a clip" in orphan[0]["error"]
    n_listed = sum(1 for r in records if r["manifest"] == "pairs_voxceleb" and r.get("_stem"))
    assert orphan[0]["line_no"] == n_listed + 1  # after the listing, unique

    labels, bad_rows = parse_index_html(page / "voxceleb" / "index.html")
    assert labels[vox_stem("Gia_Golf")].gender == "female"
    assert len(bad_rows) == 2 and all(isinstance(n, int) and n > 1 for n, _ in bad_rows)
    assert any("Age 20-39" in text for _, text in bad_rows)
    long_row = "<tr><td>x</td></tr><tr><td><br>Male <br>" + "y" * 500 + "</td></tr>"
    (page / "long.html").write_text(long_row)
    _, clipped = parse_index_html(page / "long.html")
    assert len(clipped) == 1 and len(clipped[0][1]) < 400  # quoted, clipped


def test_ingest_decodes_wav_and_flac_and_refuses_bad_audio(page: Path, tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data").ensure()
    results = ingest_pairs(page, layout, shard_size=4)
    assert results and not any(r.skipped for r in results)
    frame = scan(layout, "clips").collect()
    rows = {r["media_path"] and Path(r["media_path"]).stem or r["face_image_path"]: r
            for r in frame.iter_rows(named=True) if r["media_path"] or r["face_image_path"]}
    wav16 = rows["aaaaaaaaaaa_001.000000-003.000000"]
    assert wav16["status"] == "ok" and wav16["audio_codec"] == "pcm_s16le"
    samples, rate = clip_flac(layout, wav16["audio_path"])
    source = np.round(chirp(1.0, RATE, 150) * 32767).astype(np.int16)
    assert rate == RATE and np.array_equal(samples, source)  # 16-bit input kept bit for bit
    pack = parse_audio_key(wav16["audio_path"])  # a member of its shard's pack
    assert pack is not None and pack.pack.startswith("audio/packs/pairs_avspeech_res/shard-")
    flac = rows["aaaaaaaaaaa_010.000000-012.000000"]
    assert flac["status"] == "ok" and flac["audio_codec"] == "flac"
    stereo = rows["bbbbbbbbbbb_000.500000-002.500000"]
    assert stereo["status"] == "ok" and abs(stereo["audio_samples"] - 2 * RATE) <= 32
    assert abs(stereo["media_duration_s"] - 2.0) < 0.01
    expected = {"ccccccccccc": "not a readable audio file", "ddddddddddd": "empty (0 bytes)",
                "eeeeeeeeeee": "NaN or inf", "fffffffffff": "silent"}
    for vid, reason in expected.items():
        row = rows[f"{vid}_001.000000-002.000000"]
        assert row["status"] == "corrupt_media" and reason in row["error"], row
        assert row["audio_path"] is None
    vox = rows[vox_stem("Al_Pha")]
    assert vox["status"] == "ok" and vox["end_s"] == pytest.approx(1.0)
    assert vox["split"] in ("train", "dev", "test") and vox["gender"] == "male"
    n_stems = len(AVSPEECH) + len(DISTRACTORS) + len(VOX_PERSONS) + 4  # Al 2, dup, bad, orphan
    assert frame.height == n_stems
    keys = frame.filter(frame["status"] != "duplicate")["clip_key"].drop_nulls()
    assert keys.is_duplicated().sum() == 0  # a duplicate keeps the key it shares, no other row
    assert set(frame["manifest"]) == {f"pairs_{f}" for f in PAIRS_FOLDERS}


def test_rerun_skips_changed_file_redoes_its_shard_and_stale_shards_go(page: Path,
                                                                        tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data").ensure()
    first = ingest_pairs(page, layout, shard_size=3)
    height = scan(layout, "clips").collect().height
    again = ingest_pairs(page, layout, shard_size=3)
    assert all(r.skipped for r in again) and [r.counts for r in again] == [r.counts for r in first]
    assert scan(layout, "clips").collect().height == height  # re-running adds no rows
    touched = page / "avspeech_res" / "Wav" / "bbbbbbbbbbb_000.500000-002.500000.wav"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = ingest_pairs(page, layout, shard_size=3)
    redone = [(r.manifest, r.index) for r in third if not r.skipped]
    assert redone == [("pairs_avspeech_res", 1)]  # its stem is 4th of the listing
    again_seed = ingest_pairs(page, layout, seed=5, shard_size=3)  # other splits: all redone
    assert not any(r.skipped for r in again_seed)
    ingest_pairs(page, layout, shard_size=100)  # one shard per folder: the rest are stale
    assert len(shard_paths(layout, "clips")) == 3
    assert scan(layout, "clips").collect().height == height


def test_split_is_by_person_and_distractors_follow_their_person(page: Path) -> None:
    records = scan_pairs(page)
    for seed in range(40):
        assign_splits(records, seed=seed)
        splits_of: dict[str, set[str]] = defaultdict(set)
        for record in records:
            assert record["split"] in ("train", "dev", "test")
            if record.get("person_id"):
                splits_of[record["person_id"]].add(record["split"])
        assert all(len(s) == 1 for s in splits_of.values())  # each person in exactly one split
        person_split = {p: next(iter(s)) for p, s in splits_of.items()}
        for record in records:
            if record["status"] == "face_only":
                assert record["split"] == person_split[record["person_id"]]
        assert by_stem(records)[DISTRACTORS[1]]["split"] == "test"  # no pairs: test
        if person_split["aaaaaaaaaaa"] == "train":
            assert by_stem(records)[DISTRACTORS[0]]["split"] == "train"  # never test
            break
    else:
        raise AssertionError("no seed in 0..39 put person aaaaaaaaaaa in train")
    assign_splits(records, seed=0)
    before = [(r.get("_stem"), r["split"]) for r in records]
    shuffled = list(reversed(records))
    assign_splits(shuffled, seed=0)  # order of records does not matter
    assert sorted(before, key=str) == sorted(((r.get("_stem"), r["split"]) for r in shuffled),
                                             key=str)


def _synthetic(n_male: int, n_female: int, n_unlabelled: int) -> list[dict[str, Any]]:
    records = []
    for gender, n in (("male", n_male), ("female", n_female), (None, n_unlabelled)):
        for i in range(n):
            records.append({"manifest": "pairs_voxceleb", "person_id": f"{gender}_{i}",
                            "gender": gender, "status": "ok", "_folder": "voxceleb"})
    return records


def test_gender_strata_are_cut_by_the_fractions() -> None:
    records = _synthetic(30, 10, 7)
    assign_splits(records, seed=3)
    counts = Counter((r["gender"], r["split"]) for r in records)
    assert [counts[("male", s)] for s in ("train", "dev", "test")] == [21, 3, 6]
    assert [counts[("female", s)] for s in ("train", "dev", "test")] == [7, 1, 2]
    assert [counts[(None, s)] for s in ("train", "dev", "test")] == [5, 1, 1]
    other = _synthetic(30, 10, 7)
    assign_splits(other, seed=4)
    assert [r["split"] for r in other] != [r["split"] for r in records]  # the seed matters
    with pytest.raises(ValueError, match="summing to 1"):
        assign_splits(records, fractions=(0.5, 0.1, 0.1))


def test_a_directory_without_the_folders_names_them(tmp_path: Path) -> None:
    (tmp_path / "Wav").mkdir()
    with pytest.raises(PairsLayoutError) as error:
        scan_pairs(tmp_path)
    for folder in PAIRS_FOLDERS:
        assert f"{folder}/" in str(error.value)
    assert "distractors" in str(error.value) and "index.html" in str(error.value)
    assert pairs.main([str(tmp_path), str(tmp_path / "data")]) == 2


def test_a_clone_of_the_page_repository_works_as_it_is(page: Path, tmp_path: Path) -> None:
    clone = tmp_path / "speech2face.github.io"
    for folder, parent in (("avspeech_res", "figures"), ("voxceleb", "figures"),
                           ("retrieve", "supplemental")):
        shutil.copytree(page / folder, clone / parent / folder)
    records, flat = scan_pairs(clone), scan_pairs(page)
    assert [(r["manifest"], r["status"], r["clip_key"]) for r in records] == [
        (r["manifest"], r["status"], r["clip_key"]) for r in flat]
    assert "/figures/voxceleb/Wav/" in by_stem(records)[vox_stem("Al_Pha")]["media_path"]


def test_command_prints_counts(page: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert pairs.main([str(page), str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "pairs_avspeech_res" in out and "corrupt_media" in out and "face_only" in out
    assert "persons" in out


def test_full_disk_stops_the_shard_and_leaves_no_parquet(page: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    layout = DataLayout(tmp_path / "data").ensure()
    records = scan_pairs(page)
    assign_splits(records)
    shard = plan_pair_shards(records, 100)[0]
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:  # a full disk reports at fsync (delayed allocation)
        if ".tar.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):  # the shard's audio pack
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ingest_pair_shard(shard, layout)
    assert shard_paths(layout, "clips") == [] and list(layout.root.rglob(TEMP_GLOB)) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not ingest_pair_shard(shard, layout).skipped
    remove_stale_pair_shards(layout, [shard])
    assert [p.parent.name for p in shard_paths(layout, "clips")] == ["pairs_avspeech_res"]


def test_clips_shards_from_before_the_pairs_columns_still_read(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data").ensure()
    old_schema = CLIPS
    for name in ADDED_COLUMNS["clips"]:
        old_schema = old_schema.remove(old_schema.get_field_index(name))
    old_row = {"manifest": "avspeech_train", "split": "train", "line_no": 1, "status": "ok",
               "clip_key": "k"}
    write_table_atomic(rows_to_table([old_row], old_schema),
                       layout.shard_path("clips", "avspeech_train", 0))
    new_row = {**old_row, "manifest": "pairs_voxceleb", "person_id": "Al_Pha",
               "native_speaker": True}
    write_table_atomic(rows_to_table([new_row], CLIPS),
                       layout.shard_path("clips", "pairs_voxceleb", 0))
    frame = scan(layout, "clips").collect()
    assert frame.columns == CLIPS.names
    assert frame["person_id"].to_list() == [None, "Al_Pha"]
    assert frame["native_speaker"].to_list() == [None, True]
    from storage.io import read_shard

    old = read_shard(layout.shard_path("clips", "avspeech_train", 0), "clips", ["person_id"])
    assert old.column("person_id").to_pylist() == [None]
    assert pq.read_schema(layout.shard_path("clips", "avspeech_train", 0)).names == \
        old_schema.names  # the file itself is left as it was


@pytest.mark.skipif(not SHARED_PAGE.is_dir(),
                    reason=f"the shared Speech2Face page data is not at {SHARED_PAGE} "
                           "(outside CI, ../shared is absent)")
def test_the_shared_page_directory() -> None:
    records = scan_pairs(SHARED_PAGE)
    assign_splits(records, seed=0)
    counts = Counter((r["manifest"], r["status"]) for r in records)
    assert counts == {("pairs_avspeech_res", "ok"): 778, ("pairs_voxceleb", "ok"): 252,
                      ("pairs_retrieve", "face_only"): 398}
    vox = [r for r in records if r["manifest"] == "pairs_voxceleb"]
    assert len({r["person_id"] for r in vox}) == 106
    assert all(r["gender"] in ("male", "female") and r["age_band"] for r in vox)
    assert all(r["paper_s2f_path"] and r["paper_f2f_path"] for r in records
               if r["status"] == "ok")
    persons: dict[str, set[str]] = defaultdict(set)
    for r in records:
        persons[r["person_id"]].add(r["split"])
    assert all(len(s) == 1 for s in persons.values())  # person-disjoint
    pairs_split = {r["person_id"]: r["split"] for r in records if r["status"] == "ok"}
    for r in records:
        if r["status"] == "face_only" and r["person_id"] in pairs_split:
            assert r["split"] == pairs_split[r["person_id"]]
    by_split = Counter(r["split"] for r in records if r["status"] == "ok")
    assert min(by_split.values()) > 50
