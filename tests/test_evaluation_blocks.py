"""Evaluation in bounded memory: the blocked computations against the whole-array ones they
replace (kept here as small reference implementations), bit for bit where they promise it.

Blocks are shrunk (monkeypatched constants) so every computation really runs in many blocks of
odd sizes; the data are random, and for ties built so that every distance is exact in floating
point (sparse ±1 features), so the tie rule is compared, not rounding.

    pytest tests/test_evaluation_blocks.py
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from s2f.evaluation import metrics

# -- the whole-array computations as they were (reference implementations) ---------------------


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def dense_retrieval_ranks(pred: np.ndarray, pool: np.ndarray, target: np.ndarray) -> np.ndarray:
    sims = _unit(pred) @ _unit(pool).T  # N × P
    true_sim = sims[np.arange(len(pred)), target]
    return (sims >= true_sim[:, None]).sum(axis=1) - 1


def dense_distance_ranks(pred: np.ndarray, pool: np.ndarray, target: np.ndarray,
                         distance: str) -> np.ndarray:
    if distance == "cosine":
        d = -(_unit(pred) @ _unit(pool).T)
    else:
        p, q = np.asarray(pred, np.float64), np.asarray(pool, np.float64)
        if distance == "l2":
            d = np.sqrt(np.maximum((p ** 2).sum(1)[:, None] + (q ** 2).sum(1)[None, :]
                                   - 2 * p @ q.T, 0.0))
        else:
            d = np.abs(p[:, None, :] - q[None, :, :]).sum(-1)
    true_d = d[np.arange(len(pred)), target]
    return (d <= true_d[:, None]).sum(axis=1) - 1


def dense_bootstrap_ci(values: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
                       n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
                       ) -> tuple[float, float]:
    values = np.asarray(values)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    stats = np.array([statistic(values[i]) for i in idx])
    return (float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2)))


def dense_feature_similarity(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    deg = metrics.cosine_degrees(pred, true)
    diff = _unit(pred) - _unit(true)
    out: dict[str, float] = {}
    for name, v in (("cosine_deg", deg), ("l2", np.linalg.norm(diff, axis=-1)),
                    ("l1", np.abs(diff).sum(axis=-1))):
        out[f"{name}_mean"], out[f"{name}_std"] = float(v.mean()), float(v.std())
    return out


def dense_spread(features: np.ndarray) -> float:
    u = _unit(features)
    return float(metrics.cosine_degrees(u, np.broadcast_to(u.mean(axis=0), u.shape)).mean())


# -- data ---------------------------------------------------------------------------------------


@pytest.fixture()
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few dozen numbers: every call below runs in many blocks of odd sizes."""
    monkeypatch.setattr(metrics, "DISTANCE_BLOCK_NUMBERS", 97)
    monkeypatch.setattr(metrics, "ROW_BLOCK_NUMBERS", 37)
    monkeypatch.setattr(metrics, "L1_BLOCK_NUMBERS", 211)
    monkeypatch.setattr(metrics, "BOOTSTRAP_BLOCK_INDICES", 101)


def continuous(rng: np.random.Generator, n: int, p: int, d: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool of raw features with unequal norms, noisy predictions, random targets."""
    pool = rng.normal(size=(p, d)) * rng.uniform(0.5, 3.0, size=(p, 1))
    target = rng.integers(0, p, n)
    pred = pool[target] + rng.normal(scale=1.5, size=(n, d))
    return pred.astype(np.float32), pool.astype(np.float32), target


def exact_ties(rng: np.random.Generator, n: int, p: int, d: int = 16
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features with exactly four entries of ±1 (norm 2): unit vectors hold 0 and ±0.5, so
    cosine, L2 and L1 are exact whatever the summation order, and few distinct values make
    many ties; a pool with duplicate entries and predictions equal to pool entries."""
    def sparse(m: int) -> np.ndarray:
        x = np.zeros((m, d))
        for row in x:
            row[rng.choice(d, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
        return x
    pool = sparse(p)
    dup = min(5, p // 2)
    pool[p - dup:] = pool[:dup]  # duplicate entries
    target = rng.integers(0, p, n)
    pred = sparse(n)
    pred[::3] = pool[target[::3]]  # some predictions exactly on their face
    return pred, pool, target


# -- retrieval ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [continuous, exact_ties])
def test_blocked_ranks_equal_the_dense_ones(make, small_blocks) -> None:
    rng = np.random.default_rng(7)
    for n, p, d in ((53, 41, 16), (200, 7, 16), (5, 300, 16), (1, 1, 16)):
        pred, pool, target = make(rng, n, p, d)
        got = metrics.retrieval_ranks(pred, pool, target)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, dense_retrieval_ranks(pred, pool, target))
        for distance in ("l2", "l1", "cosine"):
            for chunk in (None, 1, 4):
                np.testing.assert_array_equal(
                    metrics.distance_ranks(pred, pool, target, distance, chunk=chunk),
                    dense_distance_ranks(pred, pool, target, distance), err_msg=distance)
    # the tie rule holds: a constant prediction is equidistant to an orthonormal pool
    assert (metrics.retrieval_ranks(np.ones((5, 5)), np.eye(5), np.arange(5)) == 4).all()


def test_ties_data_has_ties() -> None:
    """The tie data above does what it says: many equal distances."""
    pred, pool, target = exact_ties(np.random.default_rng(7), 53, 41)
    d = -(_unit(pred) @ _unit(pool).T)
    true_d = d[np.arange(len(d)), target]
    assert ((d == true_d[:, None]).sum(axis=1) > 1).mean() > 0.3


def test_ranking_never_holds_the_query_by_pool_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 queries × 2,000 faces: the dense float64 matrix alone is 32 MB. With blocks of
    64 k distances (L1: 256 k differences) each ranking's traced numpy allocations peak far
    below it: the pool's float64 copy and one block (L1: its difference and absolute value)."""
    monkeypatch.setattr(metrics, "DISTANCE_BLOCK_NUMBERS", 1 << 16)
    monkeypatch.setattr(metrics, "L1_BLOCK_NUMBERS", 1 << 18)
    pred, pool, target = continuous(np.random.default_rng(0), 2000, 2000, 8)
    dense = 2000 * 2000 * 8
    runs = {"retrieval_ranks": lambda: metrics.retrieval_ranks(pred, pool, target)}
    for distance in ("cosine", "l2", "l1"):
        runs[distance] = lambda d=distance: metrics.distance_ranks(pred, pool, target, d)
    for name, run in runs.items():
        tracemalloc.start()
        try:
            run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # the code before: 36 MB (retrieval_ranks), 8.5 / 12.6 / 70 MB (cosine, L2, L1)
        assert peak < dense / (4 if name == "l1" else 8), (name, peak)


# -- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_in_blocks_equals_one_draw(small_blocks) -> None:
    rng = np.random.default_rng(3)
    for n, n_boot, seed in ((1, 50, 0), (7, 333, 1), (150, 200, 5), (1000, 30, 2)):
        hits = (rng.random(n) < 0.3).astype(np.float64)
        assert metrics.bootstrap_ci(hits, n_boot=n_boot, seed=seed) == dense_bootstrap_ci(
            hits, n_boot=n_boot, seed=seed)
        cols = [hits, rng.random(n), (rng.random(n) < 0.8).astype(np.float64)]
        assert metrics.bootstrap_cis(cols, n_boot=n_boot, seed=seed) == [
            dense_bootstrap_ci(c, n_boot=n_boot, seed=seed) for c in cols]
    assert metrics.bootstrap_ci(np.array([3.0, 1.0, 2.0]), np.median, 99, 0.1, 4) == \
        dense_bootstrap_ci(np.array([3.0, 1.0, 2.0]), np.median, 99, 0.1, 4)
    assert np.isnan(metrics.bootstrap_ci(np.array([]))).all()
    with pytest.raises(ValueError, match="different lengths"):
        metrics.bootstrap_cis([np.ones(3), np.ones(4)])


def test_bootstrap_never_holds_n_boot_by_n(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 resamples of 5,000 values: the index matrix alone would be 40 MB of int64; drawn
    64 k indices at a time, the traced peak is a fraction of it."""
    monkeypatch.setattr(metrics, "BOOTSTRAP_BLOCK_INDICES", 1 << 16)
    values = (np.random.default_rng(0).random(5000) < 0.2).astype(np.float64)
    tracemalloc.start()
    try:
        metrics.bootstrap_ci(values, n_boot=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1000 * 5000 * 8 / 8, peak


def test_recall_cis_in_scores_equal_one_dense_draw_per_k(small_blocks) -> None:
    """`retrieval_scores` and the paper protocol bootstrap every K on one set of resamples,
    with boolean hits: each CI is the separate dense float draw it replaced."""
    from s2f.evaluation.scores import paper_retrieval_scores, retrieval_scores

    rng = np.random.default_rng(10)
    pred, pool, target = continuous(rng, 300, 60, 16)
    flat, _ = retrieval_scores(pred, pool, target, "model", 6.0, n_boot=200, seed=3)
    ranks = dense_retrieval_ranks(pred, pool, target)
    for k in (1, 2, 5, 10, 20, 50):
        hits = (ranks < k).astype(np.float64)
        assert flat[f"recall_at_{k}_6s"] == hits.mean()
        assert (flat[f"recall_at_{k}_6s_ci_low"], flat[f"recall_at_{k}_6s_ci_high"]) == \
            dense_bootstrap_ci(hits, n_boot=200, seed=3)
    true = pool[target] + rng.normal(scale=0.3, size=pred.shape)
    flat, _ = paper_retrieval_scores(pred, true, "x", None, n_boot=100, seed=2, max_pool=250)
    keep = np.sort(np.random.default_rng(2).permutation(300)[:250])
    for distance in ("l2", "l1", "cosine"):
        ranks = dense_distance_ranks(pred[keep], true[keep], np.arange(250), distance)
        for k in (1, 2, 5, 10):
            hits = (ranks < k).astype(np.float64)
            name = f"x_paper_recall_at_{k}_{distance}"
            assert flat[name] == hits.mean()
            assert (flat[f"{name}_ci_low"], flat[f"{name}_ci_high"]) == dense_bootstrap_ci(
                hits, n_boot=100, seed=2)


# -- per-sample metrics -------------------------------------------------------------------------


def test_similarity_and_spread_in_blocks_equal_the_whole_arrays(small_blocks) -> None:
    from s2f.evaluation.scores import valid_rows

    rng = np.random.default_rng(4)
    for n, d in ((1, 8), (97, 8), (500, 3)):
        pred, true = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)) + 1.0
        assert metrics.feature_similarity(pred, true) == dense_feature_similarity(pred, true)
        assert metrics.spread(pred) == dense_spread(pred)
        assert metrics.spread(true) == dense_spread(true)
        pred[n // 2, 1] = np.nan
        np.testing.assert_array_equal(valid_rows(pred), np.isfinite(pred).all(axis=1))
    mean = np.broadcast_to(rng.normal(size=8), (300, 8))  # the mean face: a broadcast view
    assert metrics.spread(mean) == dense_spread(mean)


def test_group_means_equal_per_group_means(monkeypatch: pytest.MonkeyPatch) -> None:
    from s2f.evaluation import data
    from s2f.evaluation.data import group_means

    monkeypatch.setattr(data, "GROUP_BLOCK_NUMBERS", 50)  # divided a few groups at a time

    rng = np.random.default_rng(5)
    values = rng.normal(size=(3000, 12)).astype(np.float32)
    _, groups = np.unique(rng.integers(0, 700, 3000), return_inverse=True)
    k = int(groups.max()) + 1
    expected = np.stack([values[groups == g].mean(axis=0) for g in range(k)])
    got = group_means(values, groups, k)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="empty groups"):
        group_means(values, groups, k + 1)


# -- the controls' train features, shard by shard -----------------------------------------------


def _feature_shards(tmp_path: Path) -> tuple[object, dict[str, np.ndarray]]:
    """A data dir whose train features lie in three face_features shards, with a clip in two
    shards (the first wins), another encoder's rows and a test clip; returns the layout and
    the features the train clips should get."""
    from storage.io import rows_to_table, write_table_atomic
    from storage.layout import DataLayout
    from storage.schemas import CLIPS, face_features_schema

    layout = DataLayout(tmp_path / "data").ensure()
    rng = np.random.default_rng(6)
    clips, expected, shards = [], {}, [[], [], []]
    for i in range(40):
        key, split = f"k{i:03d}", "test" if i % 10 == 0 else "train"
        clips.append({"clip_key": key, "manifest": "m", "split": split, "line_no": i,
                      "youtube_id": f"trn{i:08d}", "start_s": 0.0, "end_s": 1.0,
                      "status": "ok", "audio_path": f"audio/{key}.flac"})
        feat = rng.normal(size=4).astype(np.float32)
        shard = shards[i % 3]
        shard.append({"clip_key": key, "encoder": "dlib-resnet", "feature": feat.tolist(),
                      "l2_norm": 1.0})
        shard.append({"clip_key": key, "encoder": "other", "feature": [9.0] * 4, "l2_norm": 1.0})
        expected[key] = feat
    # k005 lies in shard 2 too, with another feature: shard 2's row comes first in the scan
    shards[2].insert(0, {"clip_key": "k005", "encoder": "dlib-resnet", "feature": [5.0] * 4,
                         "l2_norm": 1.0})
    expected["k005"] = np.full(4, 5.0, np.float32)
    write_table_atomic(rows_to_table(clips, CLIPS), layout.shard_path("clips", "m", 0))
    for n, rows in enumerate(shards):  # shard 2 sorts first: its manifest name
        write_table_atomic(rows_to_table(rows, face_features_schema(4)),
                           layout.shard_path("face_features", f"m{2 - n}", 0))
    return layout, expected


def test_train_features_come_shard_by_shard_once_each(tmp_path: Path) -> None:
    from s2f.evaluation.data import FeatureMean, training_clips, training_feature_blocks

    layout, expected = _feature_shards(tmp_path)
    train = training_clips(layout, "dlib-resnet", dev_fraction=0.0)
    assert "feature" not in train.columns and train["clip_key"].is_sorted()
    assert train.height == 36  # 40 clips, 4 of them test
    seen: list[int] = []
    got = np.zeros((train.height, 4), np.float32)
    mean = FeatureMean()
    blocks = list(training_feature_blocks(layout, "dlib-resnet", train))
    assert len(blocks) == 3  # one per shard
    for rows, block in blocks:
        seen += rows.tolist()
        got[rows] = block
        mean.add(rows, block)
    assert sorted(seen) == list(range(train.height))  # every train clip once
    want = np.stack([expected[k] for k in train["clip_key"]])
    np.testing.assert_array_equal(got, want)  # k005: the first shard's row
    np.testing.assert_allclose(mean.mean(), want.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_ridges_fitted_in_blocks_equal_the_whole_fit() -> None:
    """The streamed ridge (Xᵀ Y and Σ Y per block) against the closed form on all rows at once
    (the oracle's formula before), the F0 ridge likewise, and gender means."""
    from s2f.evaluation.acoustic import f0_ridge, f0_ridge_fit
    from s2f.evaluation.pairs import GenderMeans, gender_only
    from s2f.evaluation.scores import StreamedRidge, oracle_ridge

    rng = np.random.default_rng(8)
    x, y, x_test = rng.normal(size=(90, 3)) * [1, 50, 0.1] + [0, 200, 5], rng.normal(
        size=(90, 6)).astype(np.float32), rng.normal(size=(11, 3))
    mu, sd = x.mean(0), x.std(0)
    a, b = (x - mu) / sd, (x_test - mu) / sd
    w = np.linalg.solve(a.T @ a + np.eye(3), a.T @ (y - y.mean(0)))
    whole = (b @ w + y.mean(0)).astype(np.float32)
    np.testing.assert_allclose(oracle_ridge(x, y, x_test), whole, rtol=1e-5, atol=1e-6)
    ridge = StreamedRidge(x)
    order = rng.permutation(90)
    for part in np.array_split(order, 7):
        ridge.add(part, y[part])
    np.testing.assert_allclose(ridge.predict(x_test), whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="added twice"):
        ridge.add(order[:2], y[order[:2]])
    partial = StreamedRidge(x)
    partial.add(order[:10], y[order[:10]])
    with pytest.raises(ValueError, match="10 of its 90"):
        partial.predict(x_test)

    f0 = rng.uniform(90, 250, 90)
    fit, _ = f0_ridge_fit(f0, f0[:5])
    assert fit is not None
    for part in np.array_split(order, 4):
        fit.add(part, y[part])
    np.testing.assert_array_equal(fit.predict(f0[:5]), f0_ridge(f0, y, f0[:5])[0])

    genders = [("female", "male", None)[i % 3] for i in range(90)]
    means = GenderMeans(genders)
    for part in np.array_split(order, 5):
        means.add(part, y[part])
    np.testing.assert_array_equal(means.predict(["male", None], 6),
                                  gender_only(genders, y, ["male", None]))
    np.testing.assert_allclose(means.predict(["male"], 6)[0], y[1::3].mean(0), rtol=1e-5)


# -- waveforms ----------------------------------------------------------------------------------


def test_waves_are_read_and_encoded_in_blocks(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation reads `WAVE_READ_BLOCK` waves, encodes them at every length and drops them:
    the encoder never gets more than a block, and the predictions equal encoding every wave
    read first."""
    from eval_helpers import make_eval_data, tone_encoder

    from s2f.evaluation import run as evaluation_run
    from s2f.evaluation.data import load_eval_set
    from s2f.media.audio import load_audio
    from s2f.registry.inference import LoadedModel, ModelRef, encode_waves

    data = make_eval_data(tmp_path / "data", n_test=10, n_train=2, clips=2)
    es = load_eval_set(data.layout, "dlib-resnet")
    encoder = LoadedModel(ModelRef("local", None, None, None), tone_encoder(data, noise=0.5))
    sizes: list[int] = []

    def counting(enc: LoadedModel, waves: list[np.ndarray], seconds: float,
                 batch_size: int = 8) -> np.ndarray:
        sizes.append(len(waves))
        return encode_waves(enc, waves, seconds, batch_size=batch_size)

    monkeypatch.setattr(evaluation_run, "WAVE_READ_BLOCK", 8)
    monkeypatch.setattr(evaluation_run, "encode_waves", counting)
    preds = evaluation_run._predict(encoder, es, (3.0, 6.0))
    assert len(es) == 20 and sizes == [8, 8, 8, 8, 4, 4]  # 3 blocks × 2 lengths
    waves = [load_audio(p) for p in es.audio_paths]
    for s in (3.0, 6.0):
        np.testing.assert_array_equal(preds[s], encode_waves(encoder, waves, s))
    monkeypatch.undo()
    assert evaluation_run.WAVE_READ_BLOCK % 8 == 0  # encode_waves' batch: same batches


def test_identity_pool_is_the_per_identity_mean() -> None:
    from s2f.evaluation.data import EvalSet

    rng = np.random.default_rng(9)
    ids = [f"id{rng.integers(0, 30):02d}" for _ in range(200)]
    feats = rng.normal(size=(200, 8)).astype(np.float32)
    es = EvalSet(clip_keys=[str(i) for i in range(200)], youtube_ids=ids, identities=ids,
                 audio_paths=[], features=feats, encoder="e", identity_source="youtube_id",
                 split_snapshot_id="s", features_hash="h")
    names, pool, target = es.identity_pool()
    assert names == sorted(set(ids)) and [names[t] for t in target] == ids
    np.testing.assert_array_equal(
        pool, np.stack([feats[target == i].mean(axis=0) for i in range(len(names))]))
