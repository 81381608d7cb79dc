"""The demo corpus's person-disjoint split, checked on the full default plan (planning only: dlib
finds the real faces, nothing is morphed or rendered) and on the committed persons table.

    pytest tests/test_corpus_plan.py
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from s2f.corpus import DEMO_DEV_FRACTION, DEMO_IDENTITIES, DEMO_TEST_FRACTION
from s2f.corpus.build import CorpusConfig, _real_faces, plan_corpus, split_persons
from s2f.corpus.faces import ASSETS_DIR, SAME_PERSON, mixable
from s2f.corpus.persons import (
    assign_splits,
    check_annotations,
    persons_of,
    same_person_clusters,
    split_gap,
    stratified_splits,
)
from s2f.corpus.voice import projections


@pytest.fixture(scope="module")
def real():
    return _real_faces(str(ASSETS_DIR))


def test_persons_table_describes_every_face_dlib_finds(real) -> None:
    persons = persons_of(real, ASSETS_DIR)  # raises if a face is missing or moved
    assert check_annotations(real, ASSETS_DIR) == []  # one annotated box per detection
    bald = Counter(p for f, p in zip(real, persons, strict=True) if f.file == "bald_guys.jpg")
    assert sorted(bald.values()) == [6, 6, 6, 6]  # four men, six photos each
    others = [(f.file, p) for f, p in zip(real, persons, strict=True) if f.file != "bald_guys.jpg"]
    assert len({p for _, p in others}) == len(others)  # one face per person elsewhere
    # a person's faces are all within dlib's same-person distance of each other
    emb = np.asarray([f.embedding for f in real], np.float64)
    for person in bald:
        e = emb[[i for i, p in enumerate(persons) if p == person]]
        assert np.linalg.norm(e[:, None] - e[None], axis=2).max() < SAME_PERSON


def test_default_plan_is_person_disjoint(real, tmp_path: Path) -> None:
    config = CorpusConfig(out=tmp_path)
    assert (config.identities, config.test_fraction, config.dev_fraction) == (
        DEMO_IDENTITIES, DEMO_TEST_FRACTION, DEMO_DEV_FRACTION)
    plans = plan_corpus(config, real)
    people = split_persons(config, real)
    count = Counter(p.split for p in plans)
    assert count == {"train": 240, "dev": 40, "test": 120}  # chance@10 on test: 10/120
    faces = {s: set() for s in count}
    for p in plans:
        assert p.primary in p.pool
        assert {people.splits[j] for j in p.pool} == {p.split}
        faces[p.split] |= set(p.pool)
    persons = {s: {people.persons[j] for j in f} for s, f in faces.items()}
    clusters = {s: {people.clusters[j] for j in f} for s, f in faces.items()}
    photos_faces = {s: {real[j].key for j in f} for s, f in faces.items()}
    for held in ("dev", "test"):
        assert faces[held].isdisjoint(faces["train"])
        assert photos_faces[held].isdisjoint(photos_faces["train"])
        assert persons[held].isdisjoint(persons["train"])
        assert clusters[held].isdisjoint(clusters["train"])
        # nothing of train is within dlib's same-person distance of a held-out face
        e = np.asarray([f.embedding for f in real], np.float64)
        d = np.linalg.norm(e[sorted(faces[held])][:, None] - e[sorted(faces["train"])][None], axis=2)
        assert d.min() >= SAME_PERSON
    assert persons["dev"].isdisjoint(persons["test"])
    assert len(persons["test"]) >= 10  # the test identities are mixes of many people
    # every face of a split can be mixed with another of its split (morphs need two people)
    allowed = mixable(real)
    for s, f in faces.items():
        pool = sorted(f)
        assert allowed[np.ix_(pool, pool)].any(axis=1).all(), s
    assert plan_corpus(config, real) == plans  # planning is deterministic


def test_assign_splits_keeps_clusters_whole_and_fills_every_split() -> None:
    persons = [f"p{i}" for i in range(30)]
    # cluster labels: one big cluster of 10, three of 3, eleven singletons
    labels = [0] * 10 + [10] * 3 + [13] * 3 + [16] * 3 + list(range(19, 30))
    fractions = {"train": 0.6, "dev": 0.1, "test": 0.3}
    out = assign_splits(np.asarray(labels), persons, fractions, seed=0)
    assert set(out) == set(labels)
    got = Counter(out[c] for c in labels)
    assert set(got) == {"train", "dev", "test"}
    assert abs(got["test"] - 9) <= 2 and abs(got["dev"] - 3) <= 2
    assert out[0] == "train"  # the largest cluster goes first, to the largest share
    # same-person clusters of real faces: every face of a person shares its cluster
    with pytest.raises(ValueError, match="cannot fill"):
        assign_splits(np.asarray([0, 0]), ["a", "b"], fractions, seed=0)


def test_default_split_is_stratified_by_voice_projection(real, tmp_path: Path) -> None:
    """Train, dev and test real faces cover the same range of every voice projection: the
    chosen split's worst gap (mean or SD, in train SDs) is well below the plain greedy split's
    and under one train SD."""
    config = CorpusConfig(out=tmp_path)
    people = split_persons(config, real)
    values = np.asarray([projections(f.embedding) for f in real])
    persons = persons_of(real, ASSETS_DIR)
    clusters = same_person_clusters(real, persons)
    fractions = {"train": 1 - config.test_fraction - config.dev_fraction,
                 "dev": config.dev_fraction, "test": config.test_fraction}
    plain = assign_splits(clusters, persons, fractions, config.seed)
    plain_gap = split_gap(values, [plain[int(c)] for c in clusters])
    chosen_gap = split_gap(values, people.splits)
    assert chosen_gap < 1.0 and chosen_gap < 0.6 * plain_gap, (chosen_gap, plain_gap)
    for split in ("train", "dev", "test"):  # a morph mixes two persons of its split
        assert len({people.persons[i] for i, s in enumerate(people.splits) if s == split}) >= 2


def test_stratified_splits_pick_the_closest_of_the_candidates() -> None:
    rng = np.random.default_rng(3)
    persons = [f"p{i}" for i in range(40)]
    labels = np.arange(40)  # every person its own cluster
    values = rng.normal(size=(40, 3))
    values[:5] += 6.0  # five outliers: a split holding most of them is far from train
    fractions = {"train": 0.6, "dev": 0.1, "test": 0.3}
    out = stratified_splits(labels, persons, fractions, seed=0, values=values, candidates=64)
    best = split_gap(values, [out[int(c)] for c in labels])
    gaps = [split_gap(values, [assign_splits(labels, persons, fractions, 0, a)[int(c)]
                               for c in labels]) for a in range(64)]
    assert best == pytest.approx(min(gaps)) and best < np.median(gaps)
    assert stratified_splits(labels, persons, fractions, 0, values, 64) == out  # deterministic


def test_same_person_clusters_join_look_alikes(real) -> None:
    persons = persons_of(real, ASSETS_DIR)
    clusters = same_person_clusters(real, persons)
    e = np.asarray([f.embedding for f in real], np.float64)
    close = np.argwhere(np.linalg.norm(e[:, None] - e[None], axis=2) < SAME_PERSON)
    assert all(clusters[i] == clusters[j] for i, j in close)
    for p in set(persons):
        assert len({clusters[i] for i, q in enumerate(persons) if q == p}) == 1
