"""Who is who among the bundled real faces, and which split each person belongs to.

    python -m s2f.corpus.persons            # check persons.json against dlib and the annotations
    python -m s2f.corpus.persons --write    # regenerate persons.json (then check the crops by eye)

`s2f/assets/faces/persons.json` maps every face dlib's HOG detector finds in the bundled photos
(file, index among the photo's detections, box) to a person id. How it was made (`draft`):

- `bald_guys.jpg` is a collage of 24 photographs of four men; dlib's descriptors fall into four
  groups of six whose within-group distances are all below dlib's same-person threshold (0.6)
  and whose between-group distances are all above it: four persons, `bald_guys:man1..4`,
  numbered by their first face.
- Every other photo is a single group photograph (PASCAL VOC) or a portrait; one person appears
  once in a photograph, and the hand-made face boxes of dlib's annotation files
  (`training.xml`, `testing.xml`) mark each face exactly once: every face there is its own
  person, `<photo stem>:<index>`. The few cross-photo pairs dlib puts below 0.6 are small
  (36-60 px) faces of evidently different people (sex, age, hair); they were checked by eye on
  a contact sheet of the aligned crops and kept apart.

Persons that dlib cannot tell apart still must not straddle splits (a morph of one could pass
for the other), so `same_person_clusters` joins persons with any pair of faces closer than 0.6
(union-find) and `assign_splits` gives whole clusters to train / dev / test.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

PERSONS_FILE = "persons.json"
SPLITS = ("train", "dev", "test")
COLLAGE = "bald_guys.jpg"
SAME_PERSON = 0.6  # dlib's threshold (s2f.corpus.faces.SAME_PERSON; repeated to avoid the import)


class FaceLike(Protocol):
    file: str
    index: int
    box: tuple[int, int, int, int]
    embedding: np.ndarray


def _distances(faces: Sequence[FaceLike]) -> np.ndarray:
    e = np.asarray([f.embedding for f in faces], np.float64)
    return np.linalg.norm(e[:, None] - e[None], axis=2)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over n items joined by `pairs` (k×2); the label of an item is the smallest
    item of its component, so labels do not depend on the order of the pairs."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.asarray([root(i) for i in range(n)])


def draft(faces: Sequence[FaceLike]) -> list[dict]:
    """The persons table as the module docstring describes it (see there)."""
    d = _distances(faces)
    collage = [i for i, f in enumerate(faces) if f.file == COLLAGE]
    sub = d[np.ix_(collage, collage)]
    labels = _components(len(collage), np.argwhere(np.triu(sub < SAME_PERSON, 1)))
    groups = sorted(set(labels.tolist()))
    for g in groups:  # clean groups: all below within, all above between
        inside = labels == g
        if not ((sub[np.ix_(inside, inside)] < SAME_PERSON).all()
                and (sub[np.ix_(inside, ~inside)] >= SAME_PERSON).all()):
            raise RuntimeError(f"{COLLAGE}: dlib's descriptors do not split into clean persons")
    man = {i: f"bald_guys:man{groups.index(int(labels[k])) + 1}" for k, i in enumerate(collage)}
    return [{"file": f.file, "index": f.index, "box": list(f.box),
             "person": man.get(i, f"{Path(f.file).stem}:{f.index}")}
            for i, f in enumerate(faces)]


def load_persons(faces_dir: Path) -> dict[tuple[str, int], dict]:
    path = Path(faces_dir) / PERSONS_FILE
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read the persons table {path}: {exc}") from exc
    return {(r["file"], int(r["index"])): r for r in table["faces"]}


def persons_of(faces: Sequence[FaceLike], faces_dir: Path) -> list[str]:
    """The person of each face, from persons.json; a face it does not list (or lists with
    another box) is an error: the table no longer describes what dlib finds."""
    table = load_persons(faces_dir)
    out = []
    for f in faces:
        row = table.get((f.file, f.index))
        if row is None or tuple(row["box"]) != tuple(f.box):
            raise RuntimeError(
                f"{f.file}#{f.index} {f.box} is not in {Path(faces_dir) / PERSONS_FILE} "
                "(or has another box there): regenerate it with "
                "`python -m s2f.corpus.persons --write` and check the crops")
        out.append(str(row["person"]))
    if len(table) != len(faces):
        raise RuntimeError(f"{PERSONS_FILE} lists {len(table)} faces, dlib finds {len(faces)}")
    return out


def same_person_clusters(faces: Sequence[FaceLike], persons: Sequence[str]) -> np.ndarray:
    """Cluster label per face: persons joined when any of their faces are closer than 0.6."""
    names = sorted(set(persons))
    pid = np.asarray([names.index(p) for p in persons])
    close = np.argwhere(np.triu(_distances(faces) < SAME_PERSON, 1))
    pairs = np.concatenate([pid[close], np.stack([pid, pid], 1)]) if len(close) else np.stack([pid, pid], 1)
    return _components(len(names), pairs)[pid]


def assign_splits(clusters: np.ndarray, persons: Sequence[str], fractions: dict[str, float],
                  seed: int, attempt: int = 0) -> dict[int, str]:
    """Split of each cluster: largest first (ties in an order drawn from `seed` and `attempt`),
    each to the split whose number of persons lags its share (`fractions`, summing to 1) the
    most. A split with a positive fraction gets at least one cluster."""
    size: dict[int, set[str]] = {}
    for c, p in zip(clusters.tolist(), persons, strict=True):
        size.setdefault(c, set()).add(p)
    ids = sorted(size)
    key = (2,) if attempt == 0 else (2, attempt)
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key)).permutation(len(ids))
    ranked = sorted(range(len(ids)), key=lambda k: (-len(size[ids[k]]), int(order[k])))
    total = len(set(persons))
    have = {s: 0 for s in SPLITS}
    out: dict[int, str] = {}
    wanted = [s for s in SPLITS if fractions.get(s, 0) > 0]
    if len(ids) < len(wanted):
        raise ValueError(f"{len(ids)} person clusters cannot fill {len(wanted)} splits")
    for rank, k in enumerate(ranked):
        empty = [s for s in wanted if have[s] == 0]
        left = len(ranked) - rank
        pool = empty if len(empty) >= left else wanted  # keep enough clusters for empty splits
        split = max(pool, key=lambda s: (fractions[s] * total - have[s], -SPLITS.index(s)))
        out[ids[k]] = split
        have[split] += len(size[ids[k]])
    return out


STRATIFY_CANDIDATES = 2048  # greedy splits tried: seed 0's worst gap 0.96 SD at 256, 0.83 at 4096


def split_gap(values: np.ndarray, splits: Sequence[str]) -> float:
    """How far the dev and test faces' distribution of each column of `values` (faces × k)
    lies from train's: the largest |mean gap| or |SD gap| over columns and splits, in train
    SDs. 0: every split covers the same range of every column."""
    labels = np.asarray(splits)
    train = values[labels == "train"]
    if len(train) < 2:
        return float("inf")
    mu, sd = train.mean(axis=0), np.maximum(train.std(axis=0), 1e-12)
    worst = 0.0
    for split in ("dev", "test"):
        part = values[labels == split]
        if len(part) == 0:
            continue
        gaps = np.abs(part.mean(axis=0) - mu) / sd
        if len(part) > 1:
            gaps = np.maximum(gaps, np.abs(part.std(axis=0) - sd) / sd)
        worst = max(worst, float(gaps.max()))
    return worst


def stratified_splits(clusters: np.ndarray, persons: Sequence[str], fractions: dict[str, float],
                      seed: int, values: np.ndarray,
                      candidates: int = STRATIFY_CANDIDATES) -> dict[int, str]:
    """Of `candidates` greedy splits (`assign_splits`, attempts 0..candidates-1), the one whose
    `split_gap` over the faces' `values` (faces × k: the voice projections of the real faces)
    is smallest, among those giving every split with a share at least two persons (a morph
    mixes two). Deterministic in `seed`."""
    best: tuple[float, dict[int, str]] | None = None
    wanted = [s for s in SPLITS if fractions.get(s, 0) > 0]
    for attempt in range(candidates):
        out = assign_splits(clusters, persons, fractions, seed, attempt)
        labels = [out[int(c)] for c in clusters]
        if any(len({p for p, t in zip(persons, labels, strict=True) if t == s}) < 2
               for s in wanted):
            continue
        gap = split_gap(values, labels)
        if best is None or gap < best[0]:
            best = (gap, out)
    if best is None:  # too few persons for two per split: the plain greedy split, as before
        return assign_splits(clusters, persons, fractions, seed)
    return best[1]


def annotated_boxes(faces_dir: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """Hand-made face boxes (x0, y0, x1, y1) per photo, from dlib's annotation files."""
    out: dict[str, list[tuple[int, int, int, int]]] = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(Path(faces_dir) / name).getroot().iter("image"):
            for b in image.iter("box"):
                x, y = int(b.get("left")), int(b.get("top"))
                w, h = int(b.get("width")), int(b.get("height"))
                out.setdefault(image.get("file"), []).append((x, y, x + w, y + h))
    return out


def _iou(a: Sequence[int], b: Sequence[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def check_annotations(faces: Sequence[FaceLike], faces_dir: Path) -> list[str]:
    """Problems: an annotated photo whose detections and hand-made boxes do not pair one to
    one (IoU ≥ 0.3), i.e. where 'one detection = one person' is not backed by the annotation."""
    problems = []
    for photo, boxes in annotated_boxes(faces_dir).items():
        dets = [f.box for f in faces if f.file == photo]
        matched = {max(range(len(boxes)), key=lambda k: _iou(d, boxes[k])) for d in dets
                   if boxes and max(_iou(d, b) for b in boxes) >= 0.3}
        if len(dets) != len(boxes) or len(matched) != len(dets):
            problems.append(f"{photo}: {len(dets)} detections, {len(boxes)} annotated faces, "
                            f"{len(matched)} paired")
    return problems


def main(argv: list[str]) -> int:
    from s2f.corpus.faces import ASSETS_DIR, FaceModels, detect_real_faces

    faces = detect_real_faces(FaceModels(), ASSETS_DIR)
    if "--write" in argv:
        method = " ".join(__doc__.split("How it was made (`draft`):")[1].split("Persons that")[0]
                          .split())
        rows = ",\n".join("  " + json.dumps(r) for r in draft(faces))
        (ASSETS_DIR / PERSONS_FILE).write_text(
            "{\n" f' "method": {json.dumps(method)},\n "faces": [\n{rows}\n ]\n' "}\n")
    persons = persons_of(faces, ASSETS_DIR)
    problems = check_annotations(faces, ASSETS_DIR)
    clusters = same_person_clusters(faces, persons)
    print(f"{len(faces)} faces, {len(set(persons))} persons, {len(set(clusters.tolist()))} "
          f"clusters at dlib distance < {SAME_PERSON}")
    print("annotation check:", "; ".join(problems) or "every annotated photo pairs one to one")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
