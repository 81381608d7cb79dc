"""Metrics on inputs whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from s2f.evaluation import metrics


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


def test_distance_ranks_match_a_brute_force_sort_for_each_distance() -> None:
    """Ranks by L2 and L1 (raw features) and cosine against an argsort of the full distance
    matrix. Ties cannot occur with continuous random features, so the comparison is exact
    (integers)."""
    from s2f.evaluation.metrics import distance_ranks

    rng = np.random.default_rng(3)
    pool = rng.normal(size=(40, 16)) * rng.uniform(0.5, 3.0, size=(40, 1))  # norms differ
    pred = pool + rng.normal(size=pool.shape)
    target = np.arange(40)
    u = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    dists = {"l2": np.linalg.norm(pred[:, None] - pool[None], axis=-1),
             "l1": np.abs(pred[:, None] - pool[None]).sum(-1),
             "cosine": 1 - u(pred) @ u(pool).T}
    for name, d in dists.items():
        expected = np.argsort(np.argsort(d, axis=1), axis=1)[target, target]
        assert (distance_ranks(pred, pool, target, name, chunk=7) == expected).all(), name


def test_raw_l2_and_l1_rank_apart_from_cosine() -> None:
    """The paper ranks its database by L2 on raw features. Face `near` points the prediction's
    way but is 10× longer; face `true` is close in space but 27° off: cosine puts `near` first,
    raw L2 and L1 put `true` first. (L2 on normalised features would rank exactly as cosine.)"""
    from s2f.evaluation.metrics import distance_ranks
    from s2f.evaluation.scores import paper_retrieval_scores

    pred = np.array([[1.0, 0.0]])
    pool = np.array([[10.0, 1.0], [1.0, 0.5]])  # near (by angle), true
    target = np.array([1])
    ranks = {d: int(distance_ranks(pred, pool, target, d)[0]) for d in ("l2", "l1", "cosine")}
    assert ranks == {"l2": 0, "l1": 0, "cosine": 1}
    # the paper protocol: two queries, each the other's look-alike by angle
    true = np.array([[1.0, 0.5], [10.0, 1.0]])
    preds = np.array([[1.0, 0.0], [10.0, 0.0]])
    flat, _ = paper_retrieval_scores(preds, true, "model", 6.0, n_boot=10)
    assert flat["paper_l2_l1_raw"] == 1.0
    assert flat["paper_recall_at_1_l2_6s"] == flat["paper_recall_at_1_l1_6s"] == 1.0
    assert flat["paper_recall_at_1_cosine_6s"] == 0.5


def test_paper_protocol_pool_is_the_clips_capped_at_max_pool() -> None:
    from s2f.evaluation.scores import paper_retrieval_scores

    rng = np.random.default_rng(0)
    true = rng.normal(size=(30, 8))
    flat, rows = paper_retrieval_scores(true, true, "model", 6.0, n_boot=20)
    assert flat["paper_pool_size"] == 30 and flat["paper_chance_at_10"] == pytest.approx(10 / 30)
    assert flat["paper_recall_at_1_l1_6s"] == 1.0 and len(rows) == 12  # 3 distances × 4 K
    capped, _ = paper_retrieval_scores(true + rng.normal(size=true.shape), true, "oracle", None,
                                       n_boot=20, max_pool=20)
    assert capped["paper_pool_size"] == 20 and "oracle_paper_recall_at_10_cosine" in capped


def test_bonferroni_and_craniofacial_random_pairs() -> None:
    """Known landmarks: S2F = F2F + small noise gives r near 1 and p tiny; the random-pair
    baseline pairs each S2F with another sample's F2F, so its r is near 0 (n = 200 samples:
    |r| < 0.3 holds with margin, sd of r under independence is ~0.07)."""
    from s2f.evaluation.metrics import bonferroni
    from s2f.evaluation.scores import craniofacial_scores
    from s2f.faces.align import template_pixels

    assert bonferroni([0.01, 0.2, float("nan")]).tolist()[:2] == pytest.approx([0.02, 0.4])
    assert bonferroni([0.6, 0.6]).tolist() == [1.0, 1.0]
    rng = np.random.default_rng(1)
    f2f = template_pixels()[None] + rng.normal(scale=3.0, size=(200, 68, 2))
    s2f = f2f + rng.normal(scale=0.3, size=f2f.shape)
    flat, rows = craniofacial_scores(f2f, s2f)
    assert len(rows) == 13 and flat["cranio_n"] == 200
    assert flat["cranio_nose_width_r"] > 0.8
    assert flat["cranio_nose_width_p_bonferroni"] == pytest.approx(
        min(1.0, flat["cranio_nose_width_p"] * 13))
    assert flat["cranio_random_pair_abs_r_mean"] < 0.3


def test_random_pair_baseline_is_a_permutation_distribution() -> None:
    """1,000 seeded derangements per measurement: its 95 % range brackets 0 with the width
    independence predicts (±1.96/√n, ≈ ±0.18 at n = 120), the true pairing's r (near 1) lies far
    above it, and one seed gives the same numbers twice."""
    from s2f.evaluation.metrics import derangements, pearson, pearson_rows
    from s2f.evaluation.scores import craniofacial_scores
    from s2f.faces.align import template_pixels

    perms = derangements(120, 1000, seed=4)
    assert perms.shape == (1000, 120) and (perms != np.arange(120)).all()  # nobody kept
    assert (np.sort(perms, axis=1) == np.arange(120)).all()  # permutations
    assert len({p.tobytes() for p in perms}) == 1000
    assert derangements(1).shape == (0, 1)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=120), rng.normal(size=120)
    assert pearson_rows(x[perms[:3]], y) == pytest.approx([pearson(x[q], y)[0]
                                                           for q in perms[:3]])
    f2f = template_pixels()[None] + rng.normal(scale=3.0, size=(120, 68, 2))
    s2f = f2f + rng.normal(scale=0.5, size=f2f.shape)
    flat, rows = craniofacial_scores(f2f, s2f, seed=5)
    assert flat["cranio_random_pairings"] == 1000
    for row in rows:
        name = row["measurement"]
        low, high = flat[f"cranio_random_pair_{name}_low"], flat[f"cranio_random_pair_{name}_high"]
        assert low < flat[f"cranio_random_pair_{name}"] < high and row["random_pair_low"] == low
        assert -0.3 < low < -0.1 and 0.1 < high < 0.3, (name, low, high)  # ~±1.96/√120
        assert flat[f"cranio_{name}_r"] > high
    again, _ = craniofacial_scores(f2f, s2f, seed=5)
    assert again == flat


def test_oracle_ridge_recovers_a_linear_map_fitted_on_train_only() -> None:
    import polars as pl

    from s2f.evaluation.scores import ORACLE_NUMERIC, oracle_ridge, voice_design

    params = pl.DataFrame({c: [100.0 + 10 * i + j for j in range(6)]
                           for i, c in enumerate(ORACLE_NUMERIC)})
    x = voice_design(params)
    assert x.shape == (6, len(ORACLE_NUMERIC))
    assert np.allclose(x[:, 0], np.log(params["pitch_hz"].to_numpy()))  # pitch as log Hz
    assert np.allclose(x[:, 1:], params.drop("pitch_hz").to_numpy())
    with pytest.raises(ValueError, match="no voice parameters"):
        voice_design(params.drop("breath"))
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(200, 3))
    w = rng.normal(size=(3, 5))
    pred = oracle_ridge(xs[:150], xs[:150] @ w, xs[150:], alpha=1e-6)
    assert np.abs(pred - xs[150:] @ w).max() < 1e-3
