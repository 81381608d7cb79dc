"""DATA_CARD.md, SOURCE.md and voice_function.json of a demo corpus, written by the build.

Everything here is a function of the corpus's content (no timings, no paths outside it), so the
card is byte-identical for the same seed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from s2f.corpus import voice as V
from s2f.corpus import voice_constants as C
from s2f.corpus.constants import FPS, MAX_CLIP_S, MIN_CLIP_S, SAMPLE_RATE, SPLITS
from s2f.corpus.persons import SAME_PERSON, STRATIFY_CANDIDATES, split_gap

PASCAL = re.compile(r"^\d{4}_\d{6}\.jpg$")


def photo_attribution(name: str) -> str:
    if PASCAL.match(name):
        return ("PASCAL VOC 2011 image (Flickr photograph), as redistributed in dlib's "
                "examples/faces (github.com/davisking/dlib)")
    if name == "bald_guys.jpg":
        return ("dlib example photo (github.com/davisking/dlib, examples/faces): a collage of "
                "several photographs of a few adult men, so its faces are not all different people")
    return "dlib example photo (github.com/davisking/dlib, examples/faces)"


def voice_function_record() -> dict:
    return {
        "formula": {
            "p_k": "e . u_k (e: 128-D dlib ResNet descriptor of the identity's aligned face)",
            "z_k": "(p_k - offset_k) / scale_k",
            "q_k": "Phi(z_k), the standard normal CDF",
            "pitch_hz": f"{V.PITCH_HZ_MIN:g} * ({V.PITCH_HZ_MAX:g} / {V.PITCH_HZ_MIN:g}) ** q_pitch",
            "pitch_spread": f"{V.SPREAD_MIN:g} + {V.SPREAD_SPAN:g} * q_range",
            "pitch_base_hz": "round(pitch_hz / interp(pitch_spread, spread_table, f0_over_base))",
            "pitch_top_hz": "round(pitch_base_hz * pitch_spread)",
            "rate_wpm": f"round({V.RATE_MIN} + {V.RATE_SPAN} * q_rate)",
            **{f"{k}_pct": f"round({V.FORMANT_PCT_MIN} + {V.FORMANT_PCT_SPAN} * q_{k})"
               for k in ("f1", "f2", "f3")},
            "breath": f"round({V.BREATH_MAX} * q_breath)",
            "flutter": f"round({V.FLUTTER_MAX} * q_flutter)",
            "voice_file": "s2f.corpus.voice.voice_file_text: language en, pitch base top, "
                          "formant 1-5 (3-5 share f3_pct), breath x8, flutter",
        },
        "projections": list(V.PROJECTIONS),
        "directions": [list(d) for d in C.DIRECTIONS],
        "offsets": list(C.OFFSETS),
        "scales": list(C.SCALES),
        "spread_table": list(C.SPREAD_TABLE),
        "f0_over_base": list(C.F0_OVER_BASE),
        "calibration": {"seed": C.CALIBRATION_SEED, "morphs": C.CALIBRATION_MORPHS,
                        "script": "python -m s2f.corpus.calibrate"},
    }


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _header(config) -> list[str]:
    return [
        "# Demo corpus: data card",
        "",
        "Written by `s2f demo-corpus --out DIR --identities "
        f"{config.identities} --clips-per-identity {config.clips_per_identity} --seed "
        f"{config.seed}` (s2f.corpus.build); regenerate rather than edit.",
        "",
    ]


def _summary(config, rows: list[dict], used: list[str], photos: list[str],
             videos: dict[str, int], clips: int, media_seconds: float) -> list[str]:
    from s2f.corpus.espeak import espeak_version

    n = len(rows)
    n_test = sum(r["split"] == "test" for r in rows)
    n_dev = sum(r["split"] == "dev" for r in rows)

    return [
        "## Summary",
        "",
        f"- Seed **{config.seed}**; corpus format version {config.record()['version']}. "
        "The same seed gives byte-identical manifests, table, face images and media.",
        f"- **{n} identities** ({n - n_test - n_dev} train, {n_dev} dev, {n_test} test; split by "
        f"identity and by real person: see *Persons and splits*), "
        f"{config.clips_per_identity} clips each: **{clips} clips** in "
        f"{sum(videos.values())} videos ({videos.get('mp4', 0)} H.264/AAC `.mp4`, "
        f"{videos.get('webm', 0)} VP9/Opus `.webm`), {media_seconds / 60:.1f} minutes of media.",
        f"- Every identity is a morph of real photographs ({len(used)} distinct real faces from "
        f"{len(photos)} photos); every voice is **synthetic** (espeak-ng {espeak_version()}). "
        "No recording of a real person speaking is used, and no real person's voice is imitated.",
        "",
    ]


def _files() -> list[str]:
    return [
        "## Files",
        "",
        "- `media/<youtube_id>.mp4|.webm`: one file per video; an identity has one or two videos, "
        "a video holds one or more manifest segments (as an AVSpeech YouTube video does).",
        "- `avspeech_train.csv`, `avspeech_dev.csv`, `avspeech_test.csv`: AVSpeech's format, no header, one segment per "
        "line: `youtube_id,start_seconds,end_seconds,x,y`; `x, y` are the face centre (centre of "
        "dlib's HOG box) at the segment's middle, as fractions of the frame width and height.",
        "- `identities.parquet`: one row per identity: split, videos, the real faces and weights it "
        "was morphed from, its face embedding, every voice parameter and the projections they "
        "come from, and the median F0 measured on its speech (each column documented in the "
        "file's schema metadata).",
        "- `faces/<identity_id>.png`: the identity's aligned face (256×256), as morphed.",
        "- `voice_function.json`: the constants of the face → voice function below.",
        "- `SOURCE.md`: the attribution note that came with the photographs.",
        "- `corpus.json`: build record (settings, counts, file sizes).",
        "",
    ]


def _face_sources(config, faces, used: list[str], photos: list[str]) -> list[str]:
    per_photo_used = Counter(k.split("#")[0] for k in used)
    per_photo_all = Counter(f.file for f in faces)
    all_photos = sorted({p.name for p in Path(config.faces_dir).iterdir()
                         if p.suffix.lower() in (".jpg", ".jpeg", ".png")})

    return [
        "## Where the faces come from",
        "",
        f"The photographs in `s2f/assets/faces`, copied from the examples/faces folder of the dlib "
        f"C++ library's public repository (github.com/davisking/dlib); see `SOURCE.md`. dlib's HOG "
        f"face detector (upsample 1; 2 for a photo where 1 finds nothing) finds "
        f"{len(faces)} faces in {len(per_photo_all)} of the {len(all_photos)} photos; each got "
        f"dlib's 68 landmarks. Faces are detections, not people: bald_guys.jpg shows four men "
        f"six times each (see *Persons and splits*).",
        "",
        "Source photos used by this corpus (every photo at least one identity was morphed from):",
        "",
        *_table(["photo", "faces found", "faces used", "attribution"],
                [[f"`{p}`", per_photo_all[p], per_photo_used[p], photo_attribution(p)]
                 for p in photos]),
        "",
        "The photographs keep their own terms (the PASCAL VOC images are Flickr photographs "
        "under Flickr's terms of use; the licence of dlib's example photos is not stated there). "
        "Use this corpus for testing and demonstrating the pipeline, not as a data set of people.",
        "",
    ]


def _lookalikes(rows: list[dict]) -> list[str]:
    """How many dev and test morphs dlib would take for the same person as a morph of another
    split (descriptor distance below 0.6): morphs of different real persons can still look
    alike, and the retrieval numbers should be read with that count."""
    emb = np.asarray([r["face_embedding"] for r in rows], np.float64)
    split = np.asarray([r["split"] for r in rows])
    counts = []
    for s in ("dev", "test"):
        mine, other = emb[split == s], emb[split != s]
        if len(mine) == 0 or len(other) == 0:
            continue
        near = np.linalg.norm(mine[:, None] - other[None], axis=2).min(axis=1) < SAME_PERSON
        counts.append(f"{int(near.sum())} of {len(mine)} {s} identities")
    if not counts:
        return []
    return [f"No real person or real face is in two splits, but a morph of different persons "
            f"can look like a morph of another split: {' and '.join(counts)} lie within dlib's "
            f"same-person distance ({SAME_PERSON}) of some identity of another split."]


def _persons_and_splits(config, rows: list[dict], faces, people) -> list[str]:
    gap = split_gap(np.asarray([V.projections(f.embedding) for f in faces]), people.splits)
    n_test = sum(r["split"] == "test" for r in rows)
    by_split = people.persons_by_split()
    faces_by_split = Counter(people.splits)
    clusters_by_split = Counter(people.splits[people.clusters.index(c)]
                                for c in sorted(set(people.clusters)))
    photos_by_split = {s: sorted({f.file for f, t in zip(faces, people.splits, strict=True) if t == s})
                       for s in SPLITS}

    return [
        "## Persons and splits",
        "",
        f"A real face is a detection; a *person* is one individual. `s2f/assets/faces/persons.json` "
        f"maps each of the {len(faces)} faces to one of **{len(set(people.persons))} persons** "
        "(`python -m s2f.corpus.persons` re-checks it). How it was made and checked: "
        "bald_guys.jpg is a collage of 24 photographs of four men, and dlib's descriptors "
        "split them into four clean groups of six (all distances within a group below dlib's "
        "same-person threshold 0.6, all between groups above it): four persons. Every other photo "
        "is a single group photograph or portrait, where one person appears once; dlib's "
        "hand-made annotation files (training.xml, testing.xml) box each face of those photos "
        "exactly once, and every detection pairs one to one with an annotated box: one face, one "
        "person. The cross-photo pairs dlib puts below 0.6 are small (36-60 px) faces of "
        "evidently different people (sex, age, hair), checked by eye on a contact sheet of the "
        "aligned crops.",
        "",
        "Persons dlib cannot tell apart must still not straddle splits (a morph of one could "
        "pass for the other), so persons with any two faces closer than 0.6 are joined into "
        f"clusters (union-find): {len(set(people.clusters))} clusters. Whole clusters go to "
        f"train / dev / test (largest first, each to the split furthest below its share of "
        f"persons: {1 - config.test_fraction - config.dev_fraction:g} / {config.dev_fraction:g} / "
        f"{config.test_fraction:g}), and an identity is morphed only from its own split's faces. "
        "A morph that dlib places within 0.6 of any real face of another split is redrawn.",
        "",
        f"The split is **stratified by voice**: of {STRATIFY_CANDIDATES} such greedy splits "
        "(tie orders drawn from the seed), the one whose dev and test real faces lie closest to "
        "train's in every voice projection (mean and SD) is kept, so train, dev and test cover "
        "the same range of each voice setting. Its worst gap over the "
        f"{len(V.PROJECTIONS)} projections: **{gap:.2f} train SDs** (real faces; "
        "`s2f.corpus.persons.split_gap`).",
        "",
        *_lookalikes(rows),
        "",
        *_table(["split", "identities", "persons", "clusters", "real faces", "photos"],
                [[s, sum(r["split"] == s for r in rows), by_split[s], clusters_by_split.get(s, 0),
                  faces_by_split.get(s, 0), ", ".join(f"`{p}`" for p in photos_by_split[s])]
                 for s in ("train", "dev", "test")]),
        "",
        f"Chance on the test split: recall@10 = {min(10 / max(n_test, 1), 1.0):.3f} "
        f"({n_test} test identities). A group photograph can hold persons of several splits "
        "(its people are different individuals).",
        "",
    ]


def _synthesis(rows: list[dict]) -> list[str]:
    attempts = Counter(r["morph_attempts"] for r in rows)
    n_sources = Counter(len(r["source_files"]) for r in rows)

    return [
        "## How identities are synthesised",
        "",
        "1. Each real face is aligned to a template (mean shape of all real faces by generalised "
        "Procrustes) by a similarity transform (Umeyama) into a 256×256 canvas.",
        "2. An identity mixes 2 or 3 real faces of its split that dlib takes for different people (descriptor "
        "distance at least 0.6, so two photos of one man in bald_guys.jpg are never mixed) with "
        "Dirichlet(3) weights, redrawn until no weight exceeds 0.7 "
        f"(here: {n_sources.get(2, 0)} of 2 faces, {n_sources.get(3, 0)} of 3). The first face of "
        "the first mix walks through shuffled passes over its split's real faces, so every "
        "real face of a split leads a morph before any leads two.",
        "3. Each face is warped onto the weighted mean of the faces' landmark shapes by a "
        "piecewise-affine warp: Delaunay triangulation (scipy.spatial.Delaunay) of the mean "
        "shape plus fixed points on the canvas border, barycentric coordinates per pixel, "
        "bilinear sampling. The warped faces are blended with the same weights.",
        "4. dlib's HOG detector must find the morph (upsample 0) with a box at least 100 px wide "
        "near the canvas centre; otherwise a new mix is drawn (first attempts keep the leading "
        "face). Morph attempts needed: "
        + ", ".join(f"{k}: {v} identities" for k, v in sorted(attempts.items())) + ".",
        "5. The identity's face embedding is dlib's ResNet 128-D descriptor "
        "(`face_recognition_model_v1`, 68 landmarks from the shape predictor, one jitter) of "
        "the morph.",
        "",
    ]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx, ry = (np.argsort(np.argsort(v[ok])) for v in (x, y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _voice_checks(rows: list[dict]) -> list[str]:
    """Each setting against the statistic it should move, measured on every identity's speech
    (`s2f.media.acoustics`), and against the other settings' statistics."""
    from s2f.media.acoustics import ACOUSTIC_STATISTICS

    stats = {k: np.array([r[f"acoustic_{k}"] for r in rows], np.float64)
             for k in ACOUSTIC_STATISTICS}
    table = []
    for setting, proj, what, stat in V.SETTINGS:
        x = np.array([r[setting] for r in rows], np.float64)
        others = [abs(_spearman(x, stats[s])) for _, _, _, s in V.SETTINGS if s != stat]
        table.append([f"`{setting}`", proj, what, f"{x.min():.3g}–{x.max():.3g}", f"`{stat}`",
                      f"{_spearman(x, stats[stat]):.2f}", f"{np.nanmax(others):.2f}"])
    return _table(["setting", "projection", "what it is", "range here", "statistic it moves",
                   "Spearman r", "largest |r| with another statistic"], table)


def _voices(rows: list[dict], faces) -> list[str]:
    pitch = np.array([r["pitch_hz"] for r in rows])
    f0 = np.array([r["f0_measured_hz"] for r in rows])
    ok = np.isfinite(f0)
    corr = float(np.corrcoef(np.log(pitch[ok]), np.log(f0[ok]))[0, 1]) if ok.sum() > 2 else float("nan")

    return [
        "## Voices: the face → voice function (ground truth)",
        "",
        "Every voice is espeak-ng speech, synthesised in-process from the `espeakng_loader` wheel "
        f"at {SAMPLE_RATE} Hz, speaking sentences drawn from a small grammar "
        "(`s2f/corpus/sentences.py`), with a voice file of its own. Its settings are a "
        "deterministic function of the identity's face embedding `e` and of nothing else "
        "(`s2f.corpus.voice.voice_parameters`), each monotone in its own projection; no setting "
        "is a category:",
        "",
        "```",
        f"p_k = e · u_k          k ∈ {{{', '.join(V.PROJECTIONS)}}}",
        "z_k = (p_k − m_k) / s_k",
        "q_k = Φ(z_k)           standard normal CDF: monotone increasing in p_k",
        f"pitch_hz      = {V.PITCH_HZ_MIN:g} · ({V.PITCH_HZ_MAX:g} / {V.PITCH_HZ_MIN:g}) ^ q_pitch"
        "   target median F0",
        f"pitch_spread  = {V.SPREAD_MIN:g} + {V.SPREAD_SPAN:g} · q_range"
        "              top / base of the voice's pitch line",
        f"rate_wpm      = round({V.RATE_MIN} + {V.RATE_SPAN} · q_rate)         words per minute",
        *[f"{k}_pct        = round({V.FORMANT_PCT_MIN} + {V.FORMANT_PCT_SPAN} · q_{k})"
          f"           {label}" for k, label in
          (("f1", "formant 1 frequency, % of espeak's"), ("f2", "formant 2"),
           ("f3", "formants 3-5"))],
        f"breath        = round({V.BREATH_MAX} · q_breath)              breath noise at the formants",
        f"flutter       = round({V.FLUTTER_MAX} · q_flutter)             F0 wobble",
        "pitch line    = (base, top) = (pitch_hz / F0_OVER_BASE(pitch_spread), base · pitch_spread)",
        "```",
        "",
        f"- `u_k`: the first {len(V.PROJECTIONS)} principal directions of the descriptors of the "
        f"{len(faces)} real faces (unit vectors; signs such that the faces of bald_guys.jpg, "
        "all adult men, project below the mean). The pitch uses the first, the direction of "
        f"widest spread. All {len(V.PROJECTIONS)}×128 components are in `voice_function.json`.",
        f"- `m_k`, `s_k`: mean and standard deviation of `p_k` over {C.CALIBRATION_MORPHS} "
        f"morphs drawn as above from seed {C.CALIBRATION_SEED}: "
        + ", ".join(f"{k}: m={m:.5f}, s={s:.5f}" for k, m, s in
                    zip(V.PROJECTIONS, C.OFFSETS, C.SCALES, strict=True)) + ".",
        "- `F0_OVER_BASE`: the median F0 espeak-ng speaks with, over the voice file's base pitch, "
        f"at top / base spreads {', '.join(f'{x:g}' for x in C.SPREAD_TABLE)}, measured once "
        "(`python -m s2f.corpus.calibrate`); it is in `voice_function.json`.",
        "",
        "**Checked in the audio.** Every identity's speech is measured (`s2f.media.acoustics`: "
        "no model) and each setting is compared, across this corpus's identities, with the "
        "statistic it should move (Spearman r) and with the others' (the largest |r|: the "
        "settings are independent projections, so that one should be small; F0 statistics "
        "also move a little with the formants and the rate). `tests/test_corpus.py` checks "
        "the same on controlled voices, one setting moved at a time.",
        "",
        *_voice_checks(rows),
        "",
        f"The median F0 measured on each identity's speech (`f0_measured_hz`) correlates with "
        f"pitch_hz at r = {corr:.3f} (log scale).",
        "",
    ]


def _clips(config) -> list[str]:
    from s2f.corpus.render import FRAME_SIZES, MIN_FACE_PX

    return [
        "## Clips",
        "",
        f"- {FPS} fps; frame sizes {', '.join(f'{w}×{h}' for w, h in FRAME_SIZES)} (one per "
        f"video); the face's jaw is at least {MIN_FACE_PX} px wide (36–46% of the frame height).",
        f"- Segments last {MIN_CLIP_S:g}–{MAX_CLIP_S:g} s (whole frames) and hold speech from "
        "start to end with short pads; videos have 0.4–2 s of near-silence before, between and "
        "after segments.",
        "- The head (cut out along the jaw and a forehead arc, over a drawn neck and shoulders) "
        "moves slightly and smoothly (sums of two slow sinusoids, 0.08–0.45 Hz: translation up "
        "to ±2.4% of the frame, rotation up to ±3.2°, scale up to ±3%) over a "
        "gradient-and-noise background; in about half the videos it is off-centre.",
        "- Audio: speech at −20 dBFS RMS ± 2 dB per video with a white noise floor at "
        "−62…−50 dBFS; AAC (mp4) or Opus (webm) at 48 kHz mono. Video: libx264 "
        f"(CRF {config.crf}, preset veryfast, mb-tree off) or libvpx-vp9 (CRF {config.crf + 6}, "
        "realtime), "
        "single-threaded and bit-exact muxing so that the bytes are reproducible.",
        "",
    ]


def _intended_use() -> list[str]:
    return [
        "## Intended use and limits",
        "",
        "A small, shareable, offline stand-in for AVSpeech to exercise the Speech2Face pipeline "
        "end to end. The link between face and voice is the artificial function above, so a model "
        "trained here learns that function, not anything about real people; espeak-ng voices are "
        "far from natural speech. Do not use it to draw conclusions about real faces or voices.",
        "",
    ]


def write_data_card(out: Path, config, rows: list[dict], faces, people, used: list[str],
                    photos: list[str], videos: dict[str, int], clips: int,
                    media_seconds: float) -> Path:
    """DATA_CARD.md, SOURCE.md and voice_function.json into `out`. `people`: the real faces'
    persons and splits (`s2f.corpus.build.split_persons`)."""
    shutil.copyfile(Path(config.faces_dir) / "SOURCE.md", out / "SOURCE.md")
    (out / "voice_function.json").write_text(json.dumps(voice_function_record(), indent=1) + "\n")
    lines = [
        *_header(config),
        *_summary(config, rows, used, photos, videos, clips, media_seconds),
        *_files(),
        *_face_sources(config, faces, used, photos),
        *_persons_and_splits(config, rows, faces, people),
        *_synthesis(rows),
        *_voices(rows, faces),
        *_clips(config),
        *_intended_use(),
    ]
    path = out / "DATA_CARD.md"
    path.write_text("\n".join(lines))
    return path
