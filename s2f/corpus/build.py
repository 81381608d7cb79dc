"""Build the built-in demo corpus: `s2f demo-corpus --out DIR`.

    from s2f.corpus.build import CorpusConfig, build_demo_corpus
    summary = build_demo_corpus(CorpusConfig(out=Path("corpus"), identities=400,
                                             clips_per_identity=1, seed=0))
    print(summary.describe())

Layout of DIR:

    media/<youtube_id>.mp4|.webm   one file per "video" (H.264/AAC or VP9/Opus), 1-2 per identity
    avspeech_train.csv             AVSpeech format, no header: youtube_id,start,end,x,y
    avspeech_dev.csv               the same for the dev identities (~10%, disjoint)
    avspeech_test.csv              the same for the test identities (~30%, disjoint)
    identities.parquet             one row per identity: sources, embedding, voice parameters
    faces/<identity_id>.png        the identity's aligned face
    DATA_CARD.md, SOURCE.md        provenance, method, the face → voice function; attribution
    voice_function.json            the constants of that function
    corpus.json                    build record (config, counts, file sizes); written last

The parent plans everything that does not depend on a morph (ids, split, videos, codecs, the
real faces an identity may be morphed from, which one leads): the real persons
(`s2f.corpus.persons`) are split train / dev / test as whole same-person clusters, and an
identity is morphed only from its own split's persons, so no photo, person or look-alike of a
dev or test identity is in any train identity. Each identity is then built by one worker process
(`build_identity`: morph, check, embed, voice, speech, frames, mux) from its own random
stream, so the corpus is the same whatever the number of workers or their order.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from s2f.corpus import (
    DEMO_CLIPS_PER_IDENTITY,
    DEMO_DEV_FRACTION,
    DEMO_IDENTITIES,
    DEMO_TEST_FRACTION,
)
from s2f.corpus.constants import (
    CORPUS_VERSION,
    FPS,
    MAX_CLIP_S,
    MIN_CLIP_S,
    SAMPLE_RATE,
    SPLITS,
)
from s2f.corpus.faces import ASSETS_DIR, CANVAS
from storage.io import atomic_path

YT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
YT_LAST = "AEIMQUYcgkosw048"  # a real id encodes 64 bits: its 11th character is one of these
CONTAINERS = {"mp4": ("h264", "aac"), "webm": ("vp9", "opus")}
MAX_MORPH_ATTEMPTS = 40
OUTPUTS = ("media", "faces", "avspeech_train.csv", "avspeech_dev.csv", "avspeech_test.csv",
           "identities.parquet",
           "DATA_CARD.md", "SOURCE.md", "voice_function.json", "corpus.json")


@dataclass
class CorpusConfig:
    out: Path
    identities: int = DEMO_IDENTITIES
    clips_per_identity: int = DEMO_CLIPS_PER_IDENTITY
    seed: int = 0
    workers: int = 2               # processes; 0 or 1 builds in this process
    test_fraction: float = DEMO_TEST_FRACTION   # of identities and of real persons
    dev_fraction: float = DEMO_DEV_FRACTION     # of identities and of real persons
    crf: int = 28                  # H.264 CRF (VP9 gets crf + 6, see s2f.media.mux)
    faces_dir: Path = ASSETS_DIR

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.faces_dir = Path(self.faces_dir)
        if self.identities < 1:
            raise ValueError("identities must be at least 1")
        if self.clips_per_identity < 1:
            raise ValueError("clips_per_identity must be at least 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("test_fraction must be in [0, 1)")
        if not 0.0 <= self.dev_fraction < 1.0 or self.test_fraction + self.dev_fraction >= 1.0:
            raise ValueError("dev_fraction must be in [0, 1) and leave room for train")

    def record(self) -> dict:
        """What defines the corpus's content (not where it is, nor how many workers)."""
        return {"identities": self.identities, "clips_per_identity": self.clips_per_identity,
                "seed": self.seed, "test_fraction": self.test_fraction,
                "dev_fraction": self.dev_fraction, "crf": self.crf,
                "fps": FPS, "version": CORPUS_VERSION}


@dataclass
class CorpusSummary:
    out: Path
    identities: int
    train_identities: int
    test_identities: int
    clips: int
    train_clips: int
    test_clips: int
    videos: dict[str, int]           # container → count
    real_faces_used: int
    real_faces_available: int
    source_photos: list[str]
    media_seconds: float
    bytes_written: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)  # CPU s, summed over processes
    workers: int = 1
    dev_identities: int = 0
    dev_clips: int = 0
    persons: dict[str, int] = field(default_factory=dict)  # split → real persons it morphs from

    def describe(self) -> str:
        o = self.out
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items())
        return "\n".join([
            f"demo corpus: {self.identities} identities ({self.train_identities} train, "
            f"{self.dev_identities} dev, {self.test_identities} test; chance@10 on test "
            f"{min(10 / max(self.test_identities, 1), 1.0):.3f}), {self.clips} clips in {sum(self.videos.values())} "
            f"videos ({self.videos.get('mp4', 0)} H.264/AAC .mp4, {self.videos.get('webm', 0)} "
            f"VP9/Opus .webm), {self.media_seconds / 60:.1f} min of media, "
            f"{self.bytes_written / 1e6:.1f} MB",
            f"  morphed from {self.real_faces_used} of {self.real_faces_available} real faces "
            f"in {len(self.source_photos)} photos; real persons by split: "
            + ", ".join(f"{k} {v}" for k, v in self.persons.items()),
            f"  media        {o / 'media'}",
            f"  manifests    {o / 'avspeech_train.csv'} ({self.train_clips} rows), "
            f"{o / 'avspeech_dev.csv'} ({self.dev_clips} rows), "
            f"{o / 'avspeech_test.csv'} ({self.test_clips} rows)",
            f"  identities   {o / 'identities.parquet'}",
            f"  faces        {o / 'faces'} (one aligned PNG per identity)",
            f"  data card    {o / 'DATA_CARD.md'}",
            f"  built in {self.seconds:.1f} s with {self.workers} worker(s); "
            f"CPU seconds by stage, summed over processes: {stages}",
        ])


# -- planning (parent) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoPlan:
    youtube_id: str
    container: str           # "mp4" | "webm"
    segments: int


@dataclass(frozen=True)
class IdentityPlan:
    index: int
    identity_id: str
    split: str
    primary: int             # index of the real face that leads this identity's first mix
    videos: tuple[VideoPlan, ...]
    seed: int
    pool: tuple[int, ...] = ()  # the real faces of its split's persons: it is morphed from these


def youtube_ids(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct 11-character ids of [A-Za-z0-9_-], shaped like YouTube's."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        head = "".join(YT_ALPHABET[i] for i in rng.integers(0, 64, 10))
        yid = head + YT_LAST[int(rng.integers(0, 16))]
        if yid not in seen:
            seen.add(yid)
            out.append(yid)
    return out


@dataclass(frozen=True)
class PersonSplit:
    """The real faces' persons, same-person clusters and split (one entry per real face)."""

    persons: tuple[str, ...]
    clusters: tuple[int, ...]
    splits: tuple[str, ...]

    def pool(self, split: str) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.splits) if s == split)

    def persons_by_split(self) -> dict[str, int]:
        return {s: len({p for p, t in zip(self.persons, self.splits, strict=True) if t == s})
                for s in SPLITS}


def split_persons(config: CorpusConfig, faces) -> PersonSplit:
    """Whole same-person clusters of real persons to train / dev / test (`s2f.corpus.persons`)."""
    from s2f.corpus.persons import persons_of, same_person_clusters, stratified_splits
    from s2f.corpus.voice import projections

    persons = persons_of(faces, config.faces_dir)
    clusters = same_person_clusters(faces, persons)
    fractions = {"train": 1.0 - config.test_fraction - config.dev_fraction,
                 "dev": config.dev_fraction, "test": config.test_fraction}
    values = np.asarray([projections(f.embedding) for f in faces])
    of_cluster = stratified_splits(clusters, persons, fractions, config.seed, values)
    return PersonSplit(persons=tuple(persons), clusters=tuple(int(c) for c in clusters),
                       splits=tuple(of_cluster[int(c)] for c in clusters))


def identity_counts(config: CorpusConfig) -> dict[str, int]:
    """Identities per split: the fractions of `config.identities`, rounded, at least one for a
    positive fraction while train keeps one."""
    n = config.identities
    counts = {}
    for split, frac in (("test", config.test_fraction), ("dev", config.dev_fraction)):
        k = round(n * frac)
        if frac > 0 and n - sum(counts.values()) >= 2:
            k = max(k, 1)
        counts[split] = min(k, n - 1 - sum(counts.values())) if n > 1 else 0
    counts["train"] = n - counts["test"] - counts["dev"]
    return counts


def _check_pools(pools: dict[str, tuple[int, ...]], faces, used: set[str]) -> None:
    """Every face of a split that has identities must be mixable with another face of it: a
    morph mixes two people, and the pool is all a split may mix."""
    from s2f.corpus.faces import mixable

    allowed = mixable(faces)
    for split in sorted(used):
        pool = list(pools[split])
        if not pool or not allowed[np.ix_(pool, pool)].any(axis=1).all():
            raise ValueError(f"the {split} split's real persons ({len(pool)} faces) cannot be "
                             "mixed into morphs: change the seed or the split fractions")


def plan_corpus(config: CorpusConfig, faces) -> list[IdentityPlan]:
    """Every identity's plan. `faces`: the real faces (`detect_real_faces`); each identity gets
    its split's pool of them, and its leading face walks through shuffled passes over that
    pool, so every face of a split leads a morph before any leads two."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0,)))
    n, k = config.identities, config.clips_per_identity
    # videos per identity: one, or (with two or more clips) sometimes two
    per_video = []
    for _ in range(n):
        n_vid = 1 if k == 1 else int(rng.integers(1, 3))
        cut = sorted(rng.choice(np.arange(1, k), size=n_vid - 1, replace=False)) if n_vid > 1 else []
        bounds = [0, *[int(c) for c in cut], k]
        per_video.append([bounds[i + 1] - bounds[i] for i in range(n_vid)])
    total = sum(len(v) for v in per_video)
    ids = youtube_ids(rng, total)
    containers = (["mp4", "webm"] * (total // 2 + 1))[:total]
    containers = [containers[i] for i in rng.permutation(total)]
    # split by identity
    counts = identity_counts(config)
    order = rng.permutation(n)
    split_of_identity = {int(i): "test" for i in order[:counts["test"]]}
    split_of_identity |= {int(i): "dev" for i in order[counts["test"]:counts["test"] + counts["dev"]]}
    people = split_persons(config, faces)
    pools = {s: people.pool(s) for s in SPLITS}
    _check_pools(pools, faces, {s for s in split_of_identity.values()} | {"train"})
    primaries: dict[str, list[int]] = {s: [] for s in SPLITS}
    plans, v = [], 0
    for i in range(n):
        split = split_of_identity.get(i, "train")
        pool = pools[split]
        if not primaries[split]:
            primaries[split] = [pool[j] for j in rng.permutation(len(pool))]
        videos = []
        for segs in per_video[i]:
            videos.append(VideoPlan(youtube_id=ids[v], container=containers[v], segments=segs))
            v += 1
        plans.append(IdentityPlan(index=i, identity_id=f"id{i:05d}", split=split,
                                  primary=primaries[split].pop(0), videos=tuple(videos),
                                  seed=config.seed, pool=pool))
    return plans


# -- workers -------------------------------------------------------------------------------------

_STATE: dict = {}


def _init_worker(faces, out: str, crf: int) -> None:
    # An exception here would make multiprocessing.Pool respawn the worker forever: keep it
    # and raise it from the first task instead.
    try:
        from s2f.corpus.faces import FaceModels, mixable

        _STATE.update(models=FaceModels(), faces=faces, allowed=mixable(faces), out=Path(out),
                      crf=crf, error=None)
    except Exception as exc:  # noqa: BLE001 - re-raised by build_identity
        _STATE["error"] = exc


def _frames(seconds: float) -> int:
    return int(round(seconds * FPS))


def _morph_identity(plan: IdentityPlan, rng: np.random.Generator):
    """Morph from the plan's pool until dlib's HOG finds the face (upsample 0) where it should
    be and dlib does not take it for a real face of another split (descriptor distance below
    SAME_PERSON): such a morph would carry that person across the split."""
    from s2f.corpus.faces import FACE_CENTRE, SAME_PERSON, morph, sample_mix

    models, faces, allowed = _STATE["models"], _STATE["faces"], _STATE["allowed"]
    pool = plan.pool or tuple(range(len(faces)))
    others = np.asarray([f.embedding for j, f in enumerate(faces) if j not in set(pool)],
                        np.float64).reshape(-1, 128)
    for attempt in range(1, MAX_MORPH_ATTEMPTS + 1):
        primary = plan.primary if attempt <= MAX_MORPH_ATTEMPTS // 2 else None
        picks, weights = sample_mix(rng, allowed, primary, pool)
        img, shape = morph([faces[j] for j in picks], np.asarray(weights))
        found = models.analyse(img, upsample=0)
        if found is None:
            continue
        x0, y0, x1, y1 = found.box
        centre_ok = abs((x0 + x1) / 2 - FACE_CENTRE[0] * CANVAS) < 0.1 * CANVAS
        near = np.linalg.norm(others - found.embedding.astype(np.float64), axis=1)
        if centre_ok and (x1 - x0) >= 100 and not (near < SAME_PERSON).any():
            return img, shape, found, picks, weights, attempt
    raise RuntimeError(f"{plan.identity_id}: no morph of its {plan.split} persons passed dlib's "
                       f"HOG detector and stayed {SAME_PERSON} from the other splits' faces in "
                       f"{MAX_MORPH_ATTEMPTS} attempts")


def _speak_segment(voice, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Speech for one segment: sentences until a drawn target length, in a fresh espeak-ng
    instance. Returns (int16 speech, lead pad, tail pad); pads + speech lie within
    [MIN_CLIP_S, MAX_CLIP_S]."""
    from s2f.corpus.espeak import EspeakSession
    from s2f.corpus.sentences import sentence

    target = rng.uniform(MIN_CLIP_S - 0.4, MAX_CLIP_S - 1.2)
    lead, tail = rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3)
    room = MAX_CLIP_S - lead - tail - 0.05
    parts: list[np.ndarray] = []
    total = 0
    with EspeakSession() as tts:
        tts.set_voice_file(voice.voice_file_text(), rate=voice.rate_wpm)
        sr = tts.sample_rate
        for _ in range(12):
            text = sentence(rng)
            wav = _trim(tts.synth(text, seed=int(rng.integers(0, 2**31 - 1))))
            pause = np.zeros(int(rng.uniform(0.15, 0.45) * sr) if parts else 0, np.int16)
            if parts and total + len(pause) + len(wav) > room * sr:
                break
            parts += [pause, wav]
            total += len(pause) + len(wav)
            if total >= target * sr:
                break
    speech = np.concatenate(parts)
    if len(speech) > room * sr:  # one very long sentence: cut it, with a short fade
        speech = speech[:int(room * sr)].copy()
        fade = np.linspace(1, 0, int(0.03 * sr))
        speech[-len(fade):] = (speech[-len(fade):] * fade).astype(np.int16)
    dur = len(speech) / sr
    if lead + dur + tail < MIN_CLIP_S:  # too short: more silence around the speech
        extra = MIN_CLIP_S - (lead + dur + tail)
        lead, tail = lead + extra / 2, tail + extra / 2
    return speech, lead, tail


def _trim(wav: np.ndarray, threshold: int = 300, keep: float = 0.02) -> np.ndarray:
    loud = np.nonzero(np.abs(wav.astype(np.int32)) > threshold)[0]
    if len(loud) == 0:
        return wav[:0]
    pad = int(keep * SAMPLE_RATE)
    return wav[max(loud[0] - pad, 0):loud[-1] + pad]


def _voice_track(video: VideoPlan, voice, rng: np.random.Generator,
                 all_speech: list[np.ndarray]) -> tuple[list[tuple], int, np.ndarray]:
    """A video's timeline (lead-in, then segments separated by gaps, then a tail) and its audio
    track: each segment's speech levelled, over a white noise floor. Returns (placed segments as
    (start frame, frames, speech, lead pad), frames, audio); appends each speech to
    `all_speech`."""
    gain_db = rng.uniform(-2.0, 2.0)
    noise_db = rng.uniform(-62.0, -50.0)
    cursor = _frames(rng.uniform(0.4, 1.6))
    placed = []
    for s in range(video.segments):
        if s:
            cursor += _frames(rng.uniform(0.6, 2.0))
        speech, lead, tail = _speak_segment(voice, rng)
        n_seg = min(max(_frames(lead + len(speech) / SAMPLE_RATE + tail),
                        _frames(MIN_CLIP_S)), _frames(MAX_CLIP_S))
        placed.append((cursor, n_seg, speech, lead))
        all_speech.append(speech)
        cursor += n_seg
    n_frames = cursor + _frames(rng.uniform(0.4, 1.2))
    per_frame = SAMPLE_RATE // FPS
    audio = np.zeros(n_frames * per_frame, np.float32)
    for start, n_seg, speech, lead in placed:
        wav = speech.astype(np.float32) / 32768.0
        voiced = np.abs(wav) > 0.01
        rms = float(np.sqrt(np.mean(wav[voiced] ** 2))) if voiced.any() else 1.0
        wav *= 10 ** ((-20.0 + gain_db) / 20) / max(rms, 1e-6)
        at = start * per_frame + int(lead * SAMPLE_RATE)
        end = min(at + len(wav), (start + n_seg) * per_frame)
        audio[at:end] += wav[:end - at]
    audio += rng.normal(0, 10 ** (noise_db / 20), audio.shape).astype(np.float32)
    audio = np.clip(audio, -0.98, 0.98)
    return placed, n_frames, audio


def _render_video(video: VideoPlan, voice, face, rng: np.random.Generator,
                  timings: dict[str, float], all_speech: list[np.ndarray]):
    """Speak, render and mux one video of the identity (`face`: its morph, landmark shape and
    dlib detection). Returns (placed segments, frames, layout)."""
    from s2f.corpus.render import VideoLayout, make_sprite
    from s2f.media.mux import write_media

    img, shape, found = face
    t0 = time.process_time()
    placed, n_frames, audio = _voice_track(video, voice, rng, all_speech)
    timings["voices"] += time.process_time() - t0

    t0 = time.process_time()
    sprite = make_sprite(img, shape, found.box, rng)
    layout = VideoLayout.draw(sprite, rng)
    render_s = [0.0]

    def frames(layout=layout, n_frames=n_frames, render_s=render_s):
        for i in range(n_frames):
            t = time.process_time()
            frame = layout.draw_frame(i / FPS)
            render_s[0] += time.process_time() - t
            yield frame

    path = _STATE["out"] / "media" / f"{video.youtube_id}.{video.container}"
    vcodec, acodec = CONTAINERS[video.container]
    write_media(path, frames(), fps=FPS, audio=audio, sample_rate=SAMPLE_RATE,
                video_codec=vcodec, audio_codec=acodec, crf=_STATE["crf"], threads=1)
    total = time.process_time() - t0
    timings["render"] += render_s[0]
    timings["encode"] += total - render_s[0]
    return placed, n_frames, layout


def _segment_rows(plan: IdentityPlan, video: VideoPlan, placed: list[tuple], layout) -> list[dict]:
    """The manifest rows of a video's segments: times, and the face centre at each's middle."""
    rows = []
    for start, n_seg, _, _ in placed:
        mid = (start + n_seg / 2) / FPS
        cx, cy = layout.face_centre(mid)
        rows.append({
            "youtube_id": video.youtube_id, "start": start / FPS, "end": (start + n_seg) / FPS,
            "x": min(max(cx / layout.width, 0.0), 1.0), "y": min(max(cy / layout.height, 0.0), 1.0),
            "split": plan.split, "identity_id": plan.identity_id,
        })
    return rows


def build_identity(plan: IdentityPlan) -> dict:
    """Everything of one identity: face PNG, media files, its identities row and manifest
    rows. Runs in a worker (models and real faces in `_STATE`)."""
    from PIL import Image

    from s2f.corpus.voice import median_f0, voice_parameters
    from s2f.media.acoustics import ACOUSTIC_STATISTICS, acoustic_statistics

    if _STATE.get("error") is not None:
        raise RuntimeError(f"demo-corpus worker failed to start: {_STATE['error']!r}")
    out: Path = _STATE["out"]
    faces = _STATE["faces"]
    rng = np.random.default_rng(np.random.SeedSequence(plan.seed, spawn_key=(1, plan.index)))
    timings = {"morph": 0.0, "voices": 0.0, "render": 0.0, "encode": 0.0}

    t0 = time.process_time()
    img, shape, found, picks, weights, attempts = _morph_identity(plan, rng)
    face_png = Path("faces") / f"{plan.identity_id}.png"
    Image.fromarray(img).save(out / face_png)
    voice = voice_parameters(found.embedding)
    timings["morph"] += time.process_time() - t0

    segments, all_speech, youtube, media_seconds = [], [], [], 0.0
    for video in plan.videos:
        placed, n_frames, layout = _render_video(video, voice, (img, shape, found), rng, timings,
                                                 all_speech)
        media_seconds += n_frames / FPS
        youtube.append(video.youtube_id)
        segments += _segment_rows(plan, video, placed, layout)

    t0 = time.process_time()
    speech = np.concatenate(all_speech).astype(np.float32)
    f0 = median_f0(speech, SAMPLE_RATE)
    measured = acoustic_statistics(speech / 32768.0, SAMPLE_RATE)
    timings["voices"] += time.process_time() - t0
    real = [faces[j] for j in picks]
    row = {
        "identity_id": plan.identity_id, "index": plan.index, "split": plan.split,
        "youtube_ids": youtube, "n_clips": len(segments), "face_png": str(face_png),
        "source_files": [f.file for f in real], "source_face_indices": [f.index for f in real],
        "source_faces": [f.key for f in real], "source_weights": [float(w) for w in weights],
        "morph_attempts": attempts, "face_det_score": found.score,
        "face_embedding": found.embedding.astype(np.float32).tolist(),
        **voice.as_dict(),
        "f0_measured_hz": f0,
        **{f"acoustic_{k}": float(v) for k, v in zip(ACOUSTIC_STATISTICS, measured, strict=True)},
        "speech_seconds": float(sum(len(s) for s in all_speech) / SAMPLE_RATE),
    }
    return {"row": row, "segments": segments, "timings": timings, "media_seconds": media_seconds}


# -- the build -----------------------------------------------------------------------------------

@cache
def _real_faces(faces_dir: str):
    from s2f.corpus.faces import FaceModels, detect_real_faces

    return detect_real_faces(FaceModels(), Path(faces_dir))


MARKER = ".s2f-demo-corpus"  # left by every build: this directory's outputs are ours to replace


def _clear(out: Path) -> None:
    present = [name for name in OUTPUTS if (out / name).exists()]
    if present and not (out / MARKER).exists():
        raise RuntimeError(f"{out} holds {', '.join(present)} but no demo corpus was built there; "
                           "refusing to overwrite (choose an empty or new --out)")
    (out / MARKER).touch()
    (out / "corpus.json").unlink(missing_ok=True)  # first: a half-built corpus is incomplete
    for name in OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def manifest_line(seg: dict) -> str:
    """One AVSpeech line: youtube_id,start,end,x,y (six decimals, as AVSpeech writes them)."""
    return (f"{seg['youtube_id']},{seg['start']:.6f},{seg['end']:.6f},"
            f"{seg['x']:.6f},{seg['y']:.6f}")


def build_demo_corpus(config: CorpusConfig) -> CorpusSummary:
    """Build the corpus described by `config` into `config.out` (its previous corpus files are
    replaced; other files there are left alone)."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):
        return _build(config)


@contextmanager
def _build_lock(out: Path):
    """One build per directory at a time: a second one would delete the first one's files."""
    import fcntl

    path = out / ".build.lock"
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another demo-corpus build is writing to {out}") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def _with_progress(results: Iterator[dict[str, Any]], total: int) -> list[dict[str, Any]]:
    """Collect the identities' results, reporting identities rendered, voices and media encoded."""
    from s2f.progress import Progress

    out: list[dict[str, Any]] = []
    with Progress(total, "demo corpus", "identity") as bar:
        for r in results:
            out.append(r)
            bar.update(1, voices=sum(len(x["segments"]) for x in out),
                       media_min=round(sum(x["media_seconds"] for x in out) / 60, 1))
    return out


def _build(config: CorpusConfig) -> CorpusSummary:
    from s2f.corpus.datacard import write_data_card
    from s2f.corpus.table import write_identities

    t_start = time.perf_counter()
    out = config.out
    _clear(out)
    (out / "media").mkdir()
    (out / "faces").mkdir()

    t0 = time.process_time()
    faces = _real_faces(str(config.faces_dir))
    real_s = time.process_time() - t0
    plans = plan_corpus(config, faces)
    workers = max(1, min(config.workers, len(plans)))
    if workers == 1:
        _init_worker(faces, str(out), config.crf)
        results = _with_progress(map(build_identity, plans), len(plans))
    else:
        ctx = mp.get_context("spawn")  # workers load dlib's models themselves
        with ctx.Pool(workers, initializer=_init_worker, initargs=(faces, str(out), config.crf)) as pool:
            results = _with_progress(pool.imap(build_identity, plans, chunksize=1), len(plans))

    rows = [r["row"] for r in results]
    people = split_persons(config, faces)
    person_of = {f.key: p for f, p in zip(faces, people.persons, strict=True)}
    for r in rows:
        r["source_persons"] = [person_of[k] for k in r["source_faces"]]
    segments = [s for r in results for s in r["segments"]]
    for split in SPLITS:
        lines = [manifest_line(s) for s in segments if s["split"] == split]
        _write_text_atomic(out / f"avspeech_{split}.csv", "".join(line + "\n" for line in lines))
    write_identities(rows, out / "identities.parquet", config)
    used = sorted({k for r in rows for k in r["source_faces"]})
    photos = sorted({k.split("#")[0] for k in used})
    counts = {"mp4": 0, "webm": 0}
    for p in plans:
        for v in p.videos:
            counts[v.container] += 1
    media_seconds = sum(r["media_seconds"] for r in results)
    write_data_card(out, config, rows, faces, people, used, photos, counts, len(segments),
                    media_seconds)

    stage = {"real faces": real_s}
    for r in results:
        for k, v in r["timings"].items():
            stage[k] = stage.get(k, 0.0) + v
    files = sorted(f for name in OUTPUTS if name != "corpus.json" for p in [out / name]
                   for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
    record = {
        "config": config.record(),
        "identities": len(rows), "clips": len(segments),
        "train_clips": sum(s["split"] == "train" for s in segments),
        "dev_clips": sum(s["split"] == "dev" for s in segments),
        "test_clips": sum(s["split"] == "test" for s in segments),
        "videos": counts, "media_seconds": round(media_seconds, 3),
        "files": {str(p.relative_to(out)): p.stat().st_size for p in files},
    }
    _write_text_atomic(out / "corpus.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    bytes_written = sum(record["files"].values())
    return CorpusSummary(
        out=out, identities=len(rows),
        train_identities=sum(r["split"] == "train" for r in rows),
        test_identities=sum(r["split"] == "test" for r in rows),
        clips=len(segments), train_clips=record["train_clips"], test_clips=record["test_clips"],
        videos=counts, real_faces_used=len(used), real_faces_available=len(faces),
        source_photos=photos, media_seconds=media_seconds, bytes_written=bytes_written,
        seconds=time.perf_counter() - t_start,
        stage_seconds={k: round(v, 2) for k, v in stage.items()}, workers=workers,
        dev_identities=sum(r["split"] == "dev" for r in rows), dev_clips=record["dev_clips"],
        persons=people.persons_by_split())


def corpus_is_complete(config: CorpusConfig) -> bool:
    """True if `config.out` holds a finished corpus built with the same content settings
    (identities, clips, seed, …) and every file it recorded is there with its size."""
    try:
        record = json.loads((config.out / "corpus.json").read_text())
    except (OSError, ValueError):
        return False
    if record.get("config") != config.record():
        return False
    for rel, size in record.get("files", {}).items():
        p = config.out / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True
