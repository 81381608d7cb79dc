"""The built-in demo corpus (`s2f demo-corpus`): a tiny corpus (6 identities × 2 clips) is built
twice with seed 0 (with 2 worker processes and in-process, which must give the same bytes), and
a smaller one with seed 1 through the CLI."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
from PIL import Image

from s2f.corpus import voice_constants as C
from s2f.corpus.build import (
    CorpusConfig,
    _real_faces,
    build_demo_corpus,
    corpus_is_complete,
    identity_counts,
    split_persons,
)
from s2f.corpus.espeak import EspeakSession
from s2f.corpus.faces import (
    ASSETS_DIR,
    SAME_PERSON,
    FaceModels,
    piecewise_affine_maps,
    umeyama,
)
from s2f.corpus.voice import (
    PROJECTIONS,
    SETTINGS,
    median_f0,
    voice_parameters,
)
from s2f.media.acoustics import ACOUSTIC_STATISTICS, acoustic_statistics

N_IDS, N_CLIPS = 6, 2
YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
NUM6 = re.compile(r"^\d+\.\d{6}$")
CODECS = {".mp4": ("h264", "aac"), ".webm": ("vp9", "opus")}

pytestmark = pytest.mark.slow


def _seed0_corpus(tmp_path_factory, name: str, workers: int) -> Path:
    out = tmp_path_factory.mktemp("corpus") / name
    build_demo_corpus(CorpusConfig(out=out, identities=N_IDS, clips_per_identity=N_CLIPS,
                                   seed=0, workers=workers))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _seed0_corpus(tmp_path_factory, "a", workers=2)


@pytest.fixture(scope="module")
def corpus_again(tmp_path_factory) -> Path:
    """The same corpus built in-process: must be byte-identical to `corpus`."""
    return _seed0_corpus(tmp_path_factory, "b", workers=1)


@pytest.fixture(scope="module")
def corpus_seed1(tmp_path_factory) -> Path:
    from flows.cli import main

    out = tmp_path_factory.mktemp("corpus") / "c"
    assert main(["demo-corpus", "--out", str(out), "--identities", "4",
                 "--clips-per-identity", "1", "--seed", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(root: Path) -> list[tuple[str, list[str]]]:
    rows = []
    for split in ("train", "dev", "test"):
        with open(root / f"avspeech_{split}.csv", newline="") as fh:
            rows += [(split, r) for r in csv.reader(fh)]
    return rows


def _media(root: Path, youtube_id: str) -> Path:
    (path,) = [p for p in (root / "media").iterdir() if p.stem == youtube_id]
    return path


# -- determinism --------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes(corpus, corpus_again):
    a, b = _files(corpus), _files(corpus_again)
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert differ == [], f"not byte-identical: {differ}"
    assert any(n.endswith(".mp4") for n in a) and any(n.endswith(".webm") for n in a)


def test_different_seed_differs(corpus, corpus_seed1):
    a, c = _manifest(corpus), _manifest(corpus_seed1)
    assert {r[0] for _, r in a}.isdisjoint({r[0] for _, r in c})
    ea = np.stack(pl.read_parquet(corpus / "identities.parquet")["face_embedding"].to_list())
    ec = np.stack(pl.read_parquet(corpus_seed1 / "identities.parquet")["face_embedding"].to_list())
    nearest = np.linalg.norm(ec[:, None] - ea[None], axis=2).min(1)
    assert (nearest > 1e-3).all(), "a seed-1 identity repeats a seed-0 one"


def test_corpus_is_complete(corpus, corpus_again, tmp_path):
    cfg = CorpusConfig(out=corpus, identities=N_IDS, clips_per_identity=N_CLIPS, seed=0)
    assert corpus_is_complete(cfg)
    assert not corpus_is_complete(CorpusConfig(out=corpus, identities=N_IDS,
                                               clips_per_identity=N_CLIPS, seed=1))
    copy = tmp_path / "copy"
    shutil.copytree(corpus_again, copy)
    cfg.out = copy
    assert corpus_is_complete(cfg)
    next((copy / "media").iterdir()).unlink()
    assert not corpus_is_complete(cfg)


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    precious = tmp_path / "media" / "holiday.mp4"
    precious.parent.mkdir()
    precious.write_bytes(b"not ours")
    with pytest.raises(RuntimeError, match="refusing"):
        build_demo_corpus(CorpusConfig(out=tmp_path, identities=1, clips_per_identity=1))
    assert precious.read_bytes() == b"not ours"


# -- manifests and split ------------------------------------------------------------------------

def test_manifests_are_avspeech_format(corpus):
    for split in ("train", "dev", "test"):
        text = (corpus / f"avspeech_{split}.csv").read_text()
        assert text.endswith("\n") and "\r" not in text
        for line in text.splitlines():
            fields = line.split(",")
            assert len(fields) == 5, line
            yid, start, end, x, y = fields
            assert YT_ID.match(yid), line
            assert all(NUM6.match(v) for v in (start, end, x, y)), line
            s, e, fx, fy = map(float, (start, end, x, y))
            assert 0 <= s < e and 4.0 - 1e-9 <= e - s <= 10.0 + 1e-9, line
            assert abs(s * 25 - round(s * 25)) < 1e-6 and abs(e * 25 - round(e * 25)) < 1e-6
            assert 0 <= fx <= 1 and 0 <= fy <= 1
    rows = _manifest(corpus)
    assert len(rows) == N_IDS * N_CLIPS
    # segments of one video do not overlap and lie inside the media
    by_video: dict[str, list[tuple[float, float]]] = {}
    for _, (yid, s, e, _, _) in rows:
        by_video.setdefault(yid, []).append((float(s), float(e)))
    for yid, segs in by_video.items():
        segs.sort()
        assert all(a[1] <= b[0] for a, b in zip(segs, segs[1:], strict=False))
        with av.open(str(_media(corpus, yid))) as c:
            assert segs[-1][1] <= c.duration / 1e6 + 1e-3
    assert len(by_video) < len(rows), "some video should hold several segments"


def test_split_is_by_identity(corpus):
    ids = pl.read_parquet(corpus / "identities.parquet")
    assert ids.height == N_IDS and ids["identity_id"].n_unique() == N_IDS
    owner = {y: (r["identity_id"], r["split"]) for r in ids.iter_rows(named=True)
             for y in r["youtube_ids"]}
    videos = {s: {y for y, (_, t) in owner.items() if t == s} for s in ("train", "dev", "test")}
    assert all(videos.values())
    assert videos["train"].isdisjoint(videos["test"] | videos["dev"])
    assert videos["dev"].isdisjoint(videos["test"])
    for split, (yid, *_rest) in _manifest(corpus):
        assert owner[yid][1] == split
    counts = identity_counts(CorpusConfig(out=corpus, identities=N_IDS))
    assert counts == {"train": 3, "dev": 1, "test": 2}
    assert {s: int((ids["split"] == s).sum()) for s in counts} == counts
    assert (ids["n_clips"] == N_CLIPS).all()


def test_no_photo_person_or_look_alike_of_dev_or_test_is_in_train(corpus):
    """Built corpus: the real faces and persons a dev or test identity was morphed from are
    never used by a train identity, and no test (or dev) morph is within dlib's same-person
    distance of any train identity's source faces (nor of any train person's face)."""
    ids = pl.read_parquet(corpus / "identities.parquet")
    real = _real_faces(str(ASSETS_DIR))
    emb = {f.key: f.embedding.astype(np.float64) for f in real}
    people = split_persons(CorpusConfig(out=corpus, identities=N_IDS), real)
    split_of_face = {f.key: s for f, s in zip(real, people.splits, strict=True)}
    used = {s: ids.filter(pl.col("split") == s) for s in ("train", "dev", "test")}
    faces = {s: {k for ks in d["source_faces"] for k in ks} for s, d in used.items()}
    persons = {s: {p for ps in d["source_persons"] for p in ps} for s, d in used.items()}
    for held in ("dev", "test"):
        assert faces[held] and persons[held]
        assert faces[held].isdisjoint(faces["train"]), f"a {held} photo is in train"
        assert persons[held].isdisjoint(persons["train"]), f"a {held} person is in train"
        assert all(split_of_face[k] == held for k in faces[held])
        morphs = np.stack(used[held]["face_embedding"].to_list()).astype(np.float64)
        train_src = np.stack([emb[k] for k in sorted(faces["train"])])
        train_pool = np.stack([emb[f.key] for f, s in zip(real, people.splits, strict=True)
                               if s == "train"])
        for sources in (train_src, train_pool):
            d = np.linalg.norm(morphs[:, None] - sources[None], axis=2)
            assert d.min() >= SAME_PERSON, f"a {held} identity passes for a train photo"


# -- faces --------------------------------------------------------------------------------------

def test_every_identity_face_is_found_and_embedded(corpus, models):
    ids = pl.read_parquet(corpus / "identities.parquet")
    assert ids.schema["face_embedding"] == pl.Array(pl.Float32, 128)
    real = {f.key: f.embedding for f in _real_faces(str(ASSETS_DIR))}
    for row in ids.iter_rows(named=True):
        e = np.stack([real[k] for k in row["source_faces"]])
        d = np.linalg.norm(e[:, None] - e[None], axis=2)[np.triu_indices(len(e), 1)]
        assert (d >= SAME_PERSON).all(), "mixed two photos of one person"
        img = np.asarray(Image.open(corpus / row["face_png"]).convert("RGB"))
        found = models.analyse(img, upsample=0)
        assert found is not None, row["identity_id"]
        np.testing.assert_allclose(found.embedding, np.asarray(row["face_embedding"]), atol=1e-5)
        assert len(row["source_files"]) in (2, 3)
        assert abs(sum(row["source_weights"]) - 1) < 1e-5 and max(row["source_weights"]) <= 0.7 + 1e-6
        assert len(set(row["source_faces"])) == len(row["source_faces"])


def test_morph_warp_and_alignment_primitives():
    rng = np.random.default_rng(0)
    pts = rng.uniform(40, 200, (68, 2))
    (sx, sy), = piecewise_affine_maps(pts, [pts], size=256)
    ys, xs = np.mgrid[0:256, 0:256]
    np.testing.assert_allclose(sx, xs, atol=1e-6)
    np.testing.assert_allclose(sy, ys, atol=1e-6)
    shifted = pts + (3.0, -2.0)  # a uniform shift of every point: the map is that shift
    (sx, sy), = piecewise_affine_maps(pts, [shifted], size=256)
    inner = (slice(60, 180), slice(60, 180))
    assert np.allclose(sx[inner] - xs[inner], 3.0, atol=0.5)
    th, s = 0.3, 1.7
    m = np.array([[s * np.cos(th), -s * np.sin(th), 5.0], [s * np.sin(th), s * np.cos(th), -2.0]])
    np.testing.assert_allclose(umeyama(pts, pts @ m[:, :2].T + m[:, 2]), m, atol=1e-9)


# -- media --------------------------------------------------------------------------------------

def test_media_decode_with_expected_streams(corpus, models):
    ends: dict[str, float] = {}
    mids: dict[str, list[tuple[float, float, float]]] = {}
    for _, (yid, s, e, x, y) in _manifest(corpus):
        ends[yid] = max(ends.get(yid, 0.0), float(e))
        mids.setdefault(yid, []).append(((float(s) + float(e)) / 2, float(x), float(y)))
    media = sorted((corpus / "media").iterdir())
    assert {p.stem for p in media} == set(ends)
    assert {p.suffix for p in media} == {".mp4", ".webm"}
    n_webm = sum(p.suffix == ".webm" for p in media)
    assert abs(n_webm - len(media) / 2) <= 1
    for path in media:
        with av.open(str(path)) as c:
            assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
            v, a = c.streams.video[0], c.streams.audio[0]
            assert (v.codec_context.name, a.codec_context.name) == CODECS[path.suffix]
            assert v.average_rate == 25
            assert v.width % 2 == 0 and v.height % 2 == 0
            assert 320 <= v.width <= 480 and 240 <= v.height <= 360
            duration = c.duration / 1e6
            assert ends[path.stem] <= duration
            want = sorted(mids[path.stem])
            frames, hits = 0, []
            for frame in c.decode(video=0):
                if want and frame.time >= want[0][0] - 1e-6:
                    _, hx, hy = want.pop(0)
                    img = frame.to_ndarray(format="rgb24")
                    found = models.detect(img, upsample=0)
                    assert found, f"{path.name}: no face at the segment's middle"
                    (x0, y0, x1, y1), _ = found[0]
                    assert x1 - x0 >= 95
                    hits.append((abs((x0 + x1) / 2 / v.width - hx), abs((y0 + y1) / 2 / v.height - hy)))
                frames += 1
            assert abs(frames / 25 - duration) < 0.1
            assert max(max(h) for h in hits) < 0.08, "the x, y hint is not where the face is"
        with av.open(str(path)) as c:
            samples = sum(f.samples for f in c.decode(audio=0))
            rate = c.streams.audio[0].rate
            assert rate == 48000 and abs(samples / rate - frames / 25) < 0.1


# -- voices -------------------------------------------------------------------------------------

def _direction(name: str) -> np.ndarray:
    return np.asarray(C.DIRECTIONS[PROJECTIONS.index(name)], np.float64)


def _embedding_at(z: dict[str, float]) -> np.ndarray:
    """An embedding whose standardised projections are `z` (others 0)."""
    e = np.zeros(128)
    for k, name in enumerate(PROJECTIONS):
        e += (C.OFFSETS[k] + z.get(name, 0.0) * C.SCALES[k]) * _direction(name)
    return e


def test_voice_function_constants():
    d = np.asarray(C.DIRECTIONS)
    assert d.shape == (len(PROJECTIONS), 128)
    np.testing.assert_allclose(d @ d.T, np.eye(len(PROJECTIONS)), atol=1e-6)
    assert np.all(np.diff(C.SPREAD_TABLE) > 0) and np.all(np.diff(C.F0_OVER_BASE) > 0)


def test_voice_parameters_deterministic_and_each_monotone_in_its_own_projection():
    rng = np.random.default_rng(1)
    e = rng.normal(0, 0.1, 128)
    assert voice_parameters(e) == voice_parameters(e.copy())
    ts = np.linspace(-4, 4, 81)
    for setting, name, _, _ in SETTINGS:
        u = _direction(name) * C.SCALES[PROJECTIONS.index(name)]
        voices = [voice_parameters(e + t * u) for t in ts]
        vals = [getattr(v, setting) for v in voices]
        assert np.all(np.diff([getattr(v, f"proj_{name}") for v in voices]) > 0)
        assert np.all(np.diff(vals) >= 0), setting
        assert vals[-1] > vals[0], setting
        for other, other_name, _, _ in SETTINGS:  # the other settings do not move (the
            if other_name != name:                 # directions are orthonormal to ~1e-8)
                others = np.array([getattr(v, other) for v in voices], np.float64)
                assert np.allclose(others, others[0], rtol=1e-6), (setting, other)
    pitch = [voice_parameters(e + t * _direction("pitch") * C.SCALES[0]) for t in ts]
    assert np.all(np.diff([p.pitch_hz for p in pitch]) > 0)  # strictly: the pitch parameter
    assert pitch[0].pitch_hz < 95 and pitch[-1].pitch_hz > 240  # wide spread


SPOKEN = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
          "background. It is easy to tell the depth of a well.")


def _spoken_statistics(vp) -> np.ndarray:
    with EspeakSession() as tts:
        tts.set_voice_file(vp.voice_file_text(), rate=vp.rate_wpm)
        wave = tts.synth(SPOKEN, seed=5).astype(np.float32) / 32768
        return acoustic_statistics(wave, tts.sample_rate)


@pytest.mark.parametrize("setting,projection,statistic",
                         [(s, p, st) for s, p, _, st in SETTINGS], ids=[s for s, *_ in SETTINGS])
def test_each_voice_setting_moves_its_statistic_in_the_audio(setting, projection, statistic):
    """One projection moved at a time from the mean morph: the synthesised speech's own
    statistic (s2f.media.acoustics, no model) follows it monotonically, and by a margin."""
    col = ACOUSTIC_STATISTICS.index(statistic)
    sign = -1.0 if statistic == "periodicity" else 1.0  # breath noise lowers periodicity
    measured = [sign * _spoken_statistics(voice_parameters(_embedding_at({projection: z})))[col]
                for z in (-1.5, -0.5, 0.5, 1.5)]
    assert np.all(np.diff(measured) > 0), (setting, measured)
    spread = {"log_f0": 0.5, "log_f0_range": 0.05, "syllable_rate": 0.5, "f1_centroid_hz": 80,
              "f2_centroid_hz": 200, "f3_centroid_hz": 300, "periodicity": 0.05,
              "log_jitter": 1.0}[statistic]
    assert measured[-1] - measured[0] > spread, (setting, measured)


def test_espeak_is_deterministic_in_fresh_sessions():
    text = "The little boat moved under the bridge before the storm."
    with EspeakSession() as tts:
        tts.set_voice("en+f2", rate=170, pitch=60, pitch_range=50)
        first = tts.synth(text, seed=3)
    with EspeakSession() as tts:  # speak something else first: no state may leak
        tts.set_voice("en+m3", rate=140, pitch=20, pitch_range=80)
        tts.synth("Something entirely different, with numbers 42.", seed=9)
    with EspeakSession() as tts:
        tts.set_voice("en+f2", rate=170, pitch=60, pitch_range=50)
        again = tts.synth(text, seed=3)
        assert tts.sample_rate == 22050
    assert first.dtype == np.int16 and len(first) > 22050
    np.testing.assert_array_equal(first, again)


def test_low_and_high_pitch_voices_differ_in_f0():
    text = "Please ask the baker to carry the heavy suitcase near the river."
    measured = []
    for z in (-1.8, 1.8):
        vp = voice_parameters(_embedding_at({"pitch": z}))
        with EspeakSession() as tts:
            tts.set_voice_file(vp.voice_file_text(), rate=vp.rate_wpm)
            f0 = median_f0(tts.synth(text).astype(np.float32), tts.sample_rate)
        assert abs(f0 / vp.pitch_hz - 1) < 0.15, (vp, f0)
        measured.append(f0)
    assert measured[1] > 1.6 * measured[0]


def _decoded_audio(path: Path, start: float, end: float) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray().mean(0) for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    wave = np.concatenate(chunks)
    return wave[int(start * rate):int(end * rate)], rate


def test_corpus_speech_follows_the_pitch_parameter(corpus):
    ids = pl.read_parquet(corpus / "identities.parquet").sort("pitch_hz")
    for row in ids.iter_rows(named=True):
        assert abs(row["f0_measured_hz"] / row["pitch_hz"] - 1) < 0.2, row["identity_id"]
    low, high = ids.row(0, named=True), ids.row(-1, named=True)
    assert high["pitch_hz"] > 1.3 * low["pitch_hz"]
    segs = {yid: (float(s), float(e)) for _, (yid, s, e, _, _) in _manifest(corpus)}
    f0 = []
    for row in (low, high):  # from the decoded AAC/Opus audio of a manifest segment
        yid = row["youtube_ids"][0]
        wave, rate = _decoded_audio(_media(corpus, yid), *segs[yid])
        f0.append(median_f0(wave, rate))
    assert f0[1] > 1.2 * f0[0]
    assert abs(f0[0] / low["pitch_hz"] - 1) < 0.2 and abs(f0[1] / high["pitch_hz"] - 1) < 0.2


# -- documentation ------------------------------------------------------------------------------

def test_data_card_names_every_source_photo(corpus):
    card = (corpus / "DATA_CARD.md").read_text()
    ids = pl.read_parquet(corpus / "identities.parquet")
    photos = {f for files in ids["source_files"].to_list() for f in files}
    assert photos
    for photo in photos:
        assert f"`{photo}`" in card
    assert "espeak-ng" in card and "synthetic" in card
    assert "pitch_hz" in card and "Seed **0**" in card
    src = Path(__file__).resolve().parents[1] / "s2f" / "assets" / "faces" / "SOURCE.md"
    assert (corpus / "SOURCE.md").read_bytes() == src.read_bytes()
    for name in ("voice_function.json", "corpus.json"):
        assert (corpus / name).is_file()
