"""Metrics on inputs whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from s2f import metrics


def test_cosine_degrees_known_angles() -> None:
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    np.testing.assert_allclose(metrics.cosine_degrees(a, b), [0.0, 90.0, 180.0], atol=1e-6)


def test_feature_similarity_is_scale_free() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=(50, 16))
    pred = true + 0.1 * rng.normal(size=true.shape)
    s1 = metrics.feature_similarity(pred, true)
    s2 = metrics.feature_similarity(3 * pred, true)
    assert s1["cosine_deg_mean"] == pytest.approx(s2["cosine_deg_mean"])
    assert s1["l2_mean"] == pytest.approx(s2["l2_mean"])
    assert 0 < s1["cosine_deg_mean"] < 15


def test_recall_perfect_and_reversed_and_chance() -> None:
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(40, 8))
    target = np.arange(40)
    perfect = metrics.retrieval_recall(metrics.retrieval_ranks(pool, pool, target), 40)
    assert all(v["recall"] == 1.0 for v in perfect.values())
    assert perfect[10]["chance"] == pytest.approx(0.25)
    assert 50 not in perfect  # K at or above the pool size is not reported
    worst = metrics.retrieval_ranks(-pool, pool, target)
    assert metrics.retrieval_recall(worst, 40)[1]["recall"] == 0.0
    # Random predictions over many trials land near chance.
    ranks = np.concatenate([
        metrics.retrieval_ranks(rng.normal(size=(40, 8)), pool, target) for _ in range(50)])
    assert metrics.retrieval_recall(ranks, 40)[10]["recall"] == pytest.approx(0.25, abs=0.04)


def test_constant_prediction_ranks_last_on_ties() -> None:
    pool = np.eye(5)
    pred = np.ones((5, 5))  # equidistant to all: ties count against the model
    assert np.all(metrics.retrieval_ranks(pred, pool, np.arange(5)) == 4)


def test_diversity_catches_collapse() -> None:
    rng = np.random.default_rng(2)
    true = rng.normal(size=(60, 32))
    healthy = true + 0.3 * rng.normal(size=true.shape)
    collapsed = np.tile(true.mean(axis=0), (60, 1)) + 1e-6 * rng.normal(size=true.shape)
    assert metrics.diversity(healthy, true)["diversity"] > 0.8
    assert metrics.diversity(collapsed, true)["diversity"] < 0.01


def test_bootstrap_ci_contains_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(3)
    small = rng.binomial(1, 0.3, size=50).astype(float)
    large = rng.binomial(1, 0.3, size=2000).astype(float)
    lo, hi = metrics.bootstrap_ci(small)
    assert lo <= small.mean() <= hi
    lo2, hi2 = metrics.bootstrap_ci(large)
    assert (hi2 - lo2) < (hi - lo)


def test_craniofacial_measurements_scale_invariant_and_nose() -> None:
    rng = np.random.default_rng(4)
    lm = rng.uniform(0, 100, size=(3, 68, 2))
    lm[:, 36], lm[:, 45] = [30, 40], [70, 40]  # iod 40
    lm[:, 31], lm[:, 35] = [40, 60], [60, 60]  # nose width 20
    m = metrics.craniofacial_measurements(lm)
    np.testing.assert_allclose(m["nose_width"], 0.5)
    m2 = metrics.craniofacial_measurements(lm * 2.5 + 7)
    for k in m:
        np.testing.assert_allclose(m[k], m2[k], rtol=1e-9)


def test_pearson_known() -> None:
    x = np.arange(20.0)
    r, p = metrics.pearson(x, 2 * x + 1)
    assert r == pytest.approx(1.0) and p < 1e-10
    assert np.isnan(metrics.pearson(x, np.ones(20))[0])
