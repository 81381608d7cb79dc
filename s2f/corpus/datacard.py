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
            "group": "female if q_pitch >= 0.5 else male",
            "variant": "group_variants[min(floor(q_variant * len), len - 1)]",
            "espeak_pitch": "clip(round(interp(log pitch_hz, log f0_table[variant], "
                            "f0_table_settings)), 0, 100)",
            "pitch_range": f"round({V.RANGE_MIN} + {V.RANGE_SPAN} * q_range)",
            "rate_wpm": f"round({V.RATE_MIN} + {V.RATE_SPAN} * q_rate)",
            "voice": f"'{V.LANGUAGE}+' + variant",
        },
        "projections": list(V.PROJECTIONS),
        "directions": [list(d) for d in C.DIRECTIONS],
        "offsets": list(C.OFFSETS),
        "scales": list(C.SCALES),
        "male_variants": list(V.MALE_VARIANTS),
        "female_variants": list(V.FEMALE_VARIANTS),
        "f0_table_settings": list(C.F0_TABLE_SETTINGS),
        "f0_table": {k: list(v) for k, v in C.F0_TABLE.items()},
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


def _persons_and_splits(config, rows: list[dict], faces, people) -> list[str]:
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
        *_table(["split", "identities", "persons", "clusters", "real faces", "photos"],
                [[s, sum(r["split"] == s for r in rows), by_split[s], clusters_by_split.get(s, 0),
                  faces_by_split.get(s, 0), ", ".join(f"`{p}`" for p in photos_by_split[s])]
                 for s in ("train", "dev", "test")]),
        "",
        f"Chance on the test split: recall@10 = {min(10 / max(n_test, 1), 1.0):.3f} "
        f"({n_test} test identities). A group photograph can hold persons of several splits "
        "(its people are different individuals); no person, and no face, is in two splits.",
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


def _voices(rows: list[dict], faces) -> list[str]:
    groups = Counter(r["group"] for r in rows)
    pitch = np.array([r["pitch_hz"] for r in rows])
    f0 = np.array([r["f0_measured_hz"] for r in rows])
    ok = np.isfinite(f0)
    corr = float(np.corrcoef(np.log(pitch[ok]), np.log(f0[ok]))[0, 1]) if ok.sum() > 2 else float("nan")
    rate = np.array([r["rate_wpm"] for r in rows])
    rng_ = np.array([r["pitch_range"] for r in rows])
    variants = Counter(r["variant"] for r in rows)

    return [
        "## Voices: the face → voice function (ground truth)",
        "",
        "Every voice is espeak-ng speech, synthesised in-process from the `espeakng_loader` wheel "
        f"at {SAMPLE_RATE} Hz, speaking sentences drawn from a small grammar "
        "(`s2f/corpus/sentences.py`). Its parameters are a deterministic function of the "
        "identity's face embedding `e` and of nothing else "
        "(`s2f.corpus.voice.voice_parameters`):",
        "",
        "```",
        "p_k = e · u_k                      k ∈ {pitch, range, rate, variant}",
        "z_k = (p_k − m_k) / s_k",
        "q_k = Φ(z_k)                       standard normal CDF: monotone increasing in p_k",
        f"pitch_hz     = {V.PITCH_HZ_MIN:g} · ({V.PITCH_HZ_MAX:g} / {V.PITCH_HZ_MIN:g}) ^ q_pitch"
        "      target median F0 (the pitch parameter)",
        "group        = female if q_pitch ≥ 0.5 else male",
        "variant      = group[min(⌊q_variant · len(group)⌋, len(group) − 1)]",
        f"               male   = {', '.join(V.MALE_VARIANTS)}",
        f"               female = {', '.join(V.FEMALE_VARIANTS)}",
        "espeak_pitch = clip(round(interp(log pitch_hz, log F0_TABLE[variant], settings)), 0, 100)",
        f"pitch_range  = round({V.RANGE_MIN} + {V.RANGE_SPAN} · q_range)                "
        "espeak intonation range",
        f"rate_wpm     = round({V.RATE_MIN} + {V.RATE_SPAN} · q_rate)                 "
        "words per minute",
        f"voice        = \"{V.LANGUAGE}+\" + variant",
        "```",
        "",
        "- `u_k`: the first four principal directions of the descriptors of the "
        f"{len(faces)} real faces (unit vectors; signs such that the faces of bald_guys.jpg, "
        "all adult men, project below the mean). The pitch uses the first, the direction of "
        "widest spread. All 4×128 components are in `voice_function.json`.",
        f"- `m_k`, `s_k`: mean and standard deviation of `p_k` over {C.CALIBRATION_MORPHS} "
        f"morphs drawn as above from seed {C.CALIBRATION_SEED}: "
        + ", ".join(f"{k}: m={m:.5f}, s={s:.5f}" for k, m, s in
                    zip(V.PROJECTIONS, C.OFFSETS, C.SCALES, strict=True)) + ".",
        "- `F0_TABLE`: median F0 (Hz) that each variant has at espeak pitch settings "
        f"{', '.join(str(x) for x in C.F0_TABLE_SETTINGS)}, measured once "
        "(`python -m s2f.corpus.calibrate`); it is in `voice_function.json`.",
        "",
        "In this corpus: "
        f"pitch_hz {pitch.min():.0f}–{pitch.max():.0f} Hz (median {np.median(pitch):.0f}); "
        f"{groups.get('male', 0)} male-variant and {groups.get('female', 0)} female-variant voices; "
        f"variants {', '.join(f'{k} {v}' for k, v in sorted(variants.items()))}; "
        f"pitch range {rng_.min()}–{rng_.max()}; rate {rate.min()}–{rate.max()} wpm. "
        f"The median F0 measured on each identity's speech (autocorrelation on voiced frames, "
        f"`f0_measured_hz`) correlates with pitch_hz at r = {corr:.3f} (log scale).",
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
