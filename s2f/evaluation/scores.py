"""Every evaluation number, computed from arrays with `s2f.evaluation.metrics`.

Metric names (flat, as logged to MLflow and stored in the `evaluations` table):
- `cosine_deg_mean_6s`, `l2_std_3s`, ...: feature similarity per input length;
- `recall_at_K_6s` with `_ci_low` / `_ci_high` (bootstrap 95 %), `chance_at_K`;
  `mean_face_recall_at_K` (+ CIs): the baseline that predicts the training mean for every voice;
- `diversity_6s`, `spread_pred_deg_6s`, `spread_true_deg`: spread of the predictions relative to
  the true features (`metrics.diversity`); `recon_landmark_diversity`, `recon_image_diversity`:
  the same for the decoder's outputs, voice reconstruction (S2F) relative to the reconstruction
  of the true feature (F2F);
- `cranio_<measurement>_r` / `_p`: Pearson r and p between F2F and S2F measurements;
  `cranio_random_pair_<measurement>` with `_low` / `_high`: the random-pair baseline's mean and
  95 % range over `cranio_random_pairings` derangements;
- `voice_<parameter>_<method>_r` / `_p`: demo-corpus voice parameters against a read-out of the
  per-identity mean predicted feature. Methods: `ridge` (leave-one-out kernel ridge, closed form,
  λ = mean of the kernel's diagonal), `ridge_true` (the same from the true features: the ceiling),
  `projection` (the corpus's own projection p_k = e · u_k applied to the prediction, when the
  features are the corpus's 128-D dlib descriptors).

    python -m s2f.evaluation.scores     # scores a random prediction against random truth
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from s2f.evaluation import metrics

if TYPE_CHECKING:
    import torch

SECONDS = (3.0, 6.0)
# The demo corpus's voice parameters (s2f.corpus.table.IDENTITIES) worth a read-out; the other
# numeric columns (index, n_clips, detection scores) say nothing about the voice.
VOICE_PARAMETERS = ("pitch_hz", "pitch_spread", "rate_wpm", "f1_pct", "f2_pct", "f3_pct", "breath",
                    "flutter", "f0_measured_hz")
PRIMARY_SECONDS = 6.0  # the paper's headline input length; the promotion gate reads these


def sec_tag(seconds: float) -> str:
    return f"{seconds:g}s"


PAPER_MAX_POOL = 5000  # the paper's retrieval database: 5,000 face images, one per test clip
# The demo corpus's voice settings (s2f.corpus.voice.VoiceParams): what espeak-ng is told, so
# the best any voice encoder can recover. The proj_*/z_* columns are face projections, not voice.
ORACLE_NUMERIC = ("pitch_hz", "pitch_spread", "rate_wpm", "f1_pct", "f2_pct", "f3_pct", "breath",
                  "flutter")


@dataclass
class Scores:
    metrics: dict[str, float]
    similarity: pl.DataFrame   # method, seconds, metric, mean, std
    recall: pl.DataFrame       # method, seconds, k, recall, ci_low, ci_high, chance
    craniofacial: pl.DataFrame  # measurement, r, p, n
    voice_parameters: pl.DataFrame  # parameter, method, r, p, n
    paper_recall: pl.DataFrame | None = None  # method, seconds, distance, k, recall, CIs, chance


def valid_rows(pred: np.ndarray) -> np.ndarray:
    """The rows of a prediction that exist: a control or a reconstruction without a feature
    for some clips (unknown gender, no face found in the image) has NaN rows there, and those
    clips are left out of its scores (`<method>_n_queries` says how many were scored).
    Checked in row blocks (no N × D temporary)."""
    step = metrics.block_rows(int(np.prod(np.shape(pred)[1:])))
    return np.concatenate([np.isfinite(pred[i:i + step]).all(axis=1)
                           for i in range(0, len(pred), step)] or [np.zeros(0, bool)])


def _valid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`x[valid]`, without the copy when every row is valid (a prediction is N × D)."""
    return x if valid.all() else x[valid]


def similarity_scores(pred: np.ndarray, true: np.ndarray, method: str, seconds: float | None
                      ) -> tuple[dict[str, float], list[dict[str, object]]]:
    valid = valid_rows(pred)
    sim = (metrics.feature_similarity(_valid(pred, valid), _valid(true, valid)) if valid.any() else
           {f"{n}_{s}": float("nan") for n in ("cosine_deg", "l2", "l1") for s in ("mean", "std")})
    prefix = "" if method == "model" else f"{method}_"
    suffix = "" if seconds is None else f"_{sec_tag(seconds)}"
    flat = {f"{prefix}{k}{suffix}": v for k, v in sim.items()}
    flat[f"{prefix}n_queries{suffix}"] = float(valid.sum())
    rows = [{"method": method, "seconds": seconds, "metric": name,
             "mean": sim[f"{name}_mean"], "std": sim[f"{name}_std"]}
            for name in ("cosine_deg", "l2", "l1")]
    return flat, rows


def _recall_cis(ranks: np.ndarray, recall: dict[int, dict[str, float]], n_boot: int,
                seed: int) -> list[tuple[float, float]]:
    """Bootstrap CI of each recall@K in `recall` (its Ks, in order), over the queries: one set
    of resamples for every K, as separate seeded draws would give. Hits are kept as booleans
    (1 byte per query and K): the mean of 0/1 values is an exact integer sum either way."""
    return metrics.bootstrap_cis([ranks < k for k in recall], n_boot=n_boot, seed=seed)


def retrieval_scores(pred: np.ndarray, pool: np.ndarray, target: np.ndarray, method: str,
                     seconds: float | None, n_boot: int = metrics.DEFAULT_BOOTSTRAP, seed: int = 0,
                     device: torch.device | None = None
                     ) -> tuple[dict[str, float], list[dict[str, object]]]:
    """recall@K against the per-identity pool, each with a bootstrap CI over voices (NaN rows
    of `pred` left out: `valid_rows`). The pool may hold more entries than identities
    (distractor faces). `device`: where the ranking runs (None: numpy on the CPU)."""
    valid = valid_rows(pred)
    ranks = metrics.retrieval_ranks(_valid(pred, valid), pool, _valid(target, valid),
                                    device=device)
    prefix = "" if method == "model" else f"{method}_"
    suffix = "" if seconds is None else f"_{sec_tag(seconds)}"
    flat: dict[str, float] = {f"{prefix}median_rank{suffix}": float(np.median(ranks) + 1)}
    rows: list[dict[str, object]] = []
    recall = metrics.retrieval_recall(ranks, len(pool))
    cis = _recall_cis(ranks, recall, n_boot, seed)
    for (k, rc), (lo, hi) in zip(recall.items(), cis, strict=True):
        name = f"{prefix}recall_at_{k}{suffix}"
        flat.update({name: rc["recall"], f"{name}_ci_low": lo, f"{name}_ci_high": hi,
                     f"chance_at_{k}": rc["chance"]})
        rows.append({"method": method, "seconds": seconds, "k": k, "recall": rc["recall"],
                     "ci_low": lo, "ci_high": hi, "chance": rc["chance"]})
    return flat, rows


def paper_retrieval_scores(pred: np.ndarray, true: np.ndarray, method: str,
                           seconds: float | None, n_boot: int = metrics.DEFAULT_BOOTSTRAP, seed: int = 0,
                           max_pool: int = PAPER_MAX_POOL, distractors: np.ndarray | None = None,
                           device: torch.device | None = None
                           ) -> tuple[dict[str, float], list[dict[str, object]]]:
    """The paper's retrieval protocol (supplementary material): the database is the true
    features of up to `max_pool` test clips (a seeded random subset when there are more, all
    otherwise), one query per clip (its prediction), ranked by L2 and L1 on the raw features
    and by cosine on normalised ones, separately; recall@1/2/5/10 with chance K / pool and a
    bootstrap CI over queries. Metric names: `[method_]paper_recall_at_<K>_<distance>[_<s>s]`,
    `paper_chance_at_<K>`, `paper_pool_size`, and `paper_l2_l1_raw` = 1 (rows without it
    ranked L2 and L1 on normalised features: the same ranking as cosine).
    `distractors` (faces without a voice) join the database after the subset is drawn; NaN rows
    of `pred` are not queried (`valid_rows`) but their true faces stay in the database.
    `device`: where the ranking runs (None: numpy on the CPU)."""
    n = len(true)
    keep = np.arange(n) if n <= max_pool else np.sort(
        np.random.default_rng(seed).permutation(n)[:max_pool])
    pool, queries = true[keep], pred[keep]
    target = np.arange(len(keep))
    asked = valid_rows(queries)
    queries, target = queries[asked], target[asked]
    if distractors is not None and len(distractors):
        pool = np.concatenate([pool, np.asarray(distractors, pool.dtype)])
    prefix = "" if method == "model" else f"{method}_"
    suffix = "" if seconds is None else f"_{sec_tag(seconds)}"
    flat: dict[str, float] = {"paper_pool_size": float(len(pool)),
                              f"{prefix}paper_n_queries{suffix}": float(asked.sum()),
                              "paper_l2_l1_raw": 1.0}
    rows: list[dict[str, object]] = []
    for distance in ("l2", "l1", "cosine"):
        ranks = metrics.distance_ranks(queries, pool, target, distance,  # type: ignore[arg-type]
                                       device=device)
        recall = metrics.retrieval_recall(ranks, len(pool), metrics.PAPER_KS)
        cis = _recall_cis(ranks, recall, n_boot, seed)
        for (k, rc), (lo, hi) in zip(recall.items(), cis, strict=True):
            name = f"{prefix}paper_recall_at_{k}_{distance}{suffix}"
            flat.update({name: rc["recall"], f"{name}_ci_low": lo, f"{name}_ci_high": hi,
                         f"paper_chance_at_{k}": rc["chance"]})
            rows.append({"method": method, "seconds": seconds, "distance": distance, "k": k,
                         "recall": rc["recall"], "ci_low": lo, "ci_high": hi,
                         "chance": rc["chance"]})
    return flat, rows


def paper_distance_label(distance: str, m: dict[str, float] | None = None) -> str:
    """How a paper-protocol distance is labelled: `l2 (raw)`, `l1 (raw)` (raw features, as the
    paper; `(normalised)` for rows scored before, which ranked exactly as cosine), `cosine`
    (on L2-normalised features by definition)."""
    if distance == "cosine":
        return distance
    raw = m is None or m.get("paper_l2_l1_raw") == 1.0
    return f"{distance} ({'raw' if raw else 'normalised'})"


def voice_design(params: pl.DataFrame) -> np.ndarray:
    """The demo corpus's exact voice settings (`ORACLE_NUMERIC`, all continuous) as a design
    matrix; pitch as log Hz (the setting is log-uniform in its projection's quantile)."""
    missing = [c for c in ORACLE_NUMERIC if c not in params.columns]
    if missing:
        raise ValueError(f"no voice parameters {missing} in the identities table")
    cols = [params[c].cast(pl.Float64).to_numpy() for c in ORACLE_NUMERIC]
    cols[0] = np.log(cols[0])
    return np.stack(cols, axis=1)


class StreamedRidge:
    """Closed-form ridge regression from a small design (N × k: voice settings, log F0), held
    whole, to the face features (N × D), added in blocks of rows (`add`): only Xᵀ Y (k × D)
    and Σ Y (D) are kept, so a million train features are never in memory at once. Inputs
    standardised, outputs centred; `alpha` is fixed (1 on standardised inputs), never tuned
    on test."""

    def __init__(self, x_train: np.ndarray, alpha: float = 1.0) -> None:
        x = np.asarray(x_train, np.float64)
        self.mu = x.mean(axis=0)
        sd = x.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)
        self.design = (x - self.mu) / self.sd
        self.alpha = alpha
        self.xty: np.ndarray | None = None   # Σ design_iᵀ y_i
        self.y_sum: np.ndarray | None = None
        self.added = np.zeros(len(x), bool)

    def add(self, rows: np.ndarray, y: np.ndarray) -> None:
        """The features `y` of train rows `rows` (indices into `x_train`, each once)."""
        rows = np.asarray(rows)
        if self.added[rows].any() or len(np.unique(rows)) != len(rows):
            raise ValueError("a train row was added twice to the ridge")
        y64 = np.asarray(y, np.float64)
        xty, y_sum = self.design[rows].T @ y64, y64.sum(axis=0)
        self.xty = xty if self.xty is None else self.xty + xty
        self.y_sum = y_sum if self.y_sum is None else self.y_sum + y_sum
        self.added[rows] = True

    def predict(self, x_test: np.ndarray) -> np.ndarray:
        """Predictions for `x_test` (float32) from every train row's features."""
        if self.xty is None or self.y_sum is None or not self.added.all():
            raise ValueError(f"the ridge has the features of {int(self.added.sum())} of its "
                             f"{len(self.added)} train rows")
        y_mean = self.y_sum / len(self.added)
        # Σ aᵢ (yᵢ − ȳ)ᵀ = Σ aᵢ yᵢᵀ − (Σ aᵢ) ȳᵀ: the centred outputs without holding them
        rhs = self.xty - np.outer(self.design.sum(axis=0), y_mean)
        gram = self.design.T @ self.design + self.alpha * np.eye(self.design.shape[1])
        w = np.linalg.solve(gram, rhs)
        b = (np.asarray(x_test, np.float64) - self.mu) / self.sd
        return (b @ w + y_mean).astype(np.float32)


def oracle_ridge(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 alpha: float = 1.0) -> np.ndarray:
    """Ridge regression from the voice settings to the face feature, fitted on training rows
    only (`StreamedRidge` with every row at once); returns the test predictions."""
    ridge = StreamedRidge(x_train, alpha)
    ridge.add(np.arange(len(x_train)), y_train)
    return ridge.predict(x_test)


def diversity_scores(pred: np.ndarray, true: np.ndarray, seconds: float) -> dict[str, float]:
    d = metrics.diversity(pred, true)
    tag = sec_tag(seconds)
    return {f"diversity_{tag}": d["diversity"], f"spread_pred_deg_{tag}": d["spread_pred_deg"],
            "spread_true_deg": d["spread_true_deg"]}


def craniofacial_scores(det_f2f: np.ndarray, det_s2f: np.ndarray, seed: int = 0,
                        n_pairings: int = metrics.DEFAULT_DERANGEMENTS
                        ) -> tuple[dict[str, float], list[dict[str, object]]]:
    """Craniofacial correlations between the measurements on the landmarks dlib detected on the
    rendered F2F and S2F faces (N×68×2 each), as the paper: Pearson r and p per measurement, p
    Bonferroni-corrected for the number of measurements, and the random-pair baseline as a
    permutation distribution: r between S2F of each sample and F2F of another, over
    `n_pairings` seeded random derangements; its mean (`cranio_random_pair_<m>`) and 95 %
    range (`_low`, `_high`: 2.5 and 97.5 percentiles) stand beside each r. (One fixed
    pairing, as before, is one draw of that distribution: SD ≈ 1/√n, 0.09 at n = 120.)"""
    flat: dict[str, float] = {}
    rows: list[dict[str, object]] = []
    n = len(det_f2f)
    m_true = metrics.craniofacial_measurements(det_f2f)
    m_voice = metrics.craniofacial_measurements(det_s2f)
    pairings = metrics.derangements(n, n_pairings, seed)
    results = {name: (metrics.pearson(m_true[name], m_voice[name]),
                      metrics.pearson_rows(m_true[name][pairings], m_voice[name]))
               for name in m_true}
    p_corr = metrics.bonferroni([p for (_, p), _ in results.values()])
    random_abs: list[np.ndarray] = []
    for (name, ((r, p), r_rand)), pc in zip(results.items(), p_corr, strict=True):
        finite = r_rand[np.isfinite(r_rand)]
        mean, low, high = ((float(finite.mean()), *map(float, np.quantile(finite, [0.025, 0.975])))
                           if len(finite) else (float("nan"),) * 3)
        flat.update({f"cranio_{name}_r": r, f"cranio_{name}_p": p,
                     f"cranio_{name}_p_bonferroni": float(pc),
                     f"cranio_random_pair_{name}": mean, f"cranio_random_pair_{name}_low": low,
                     f"cranio_random_pair_{name}_high": high})
        random_abs.append(np.abs(finite))
        rows.append({"measurement": name, "r": r, "p": p, "p_bonferroni": float(pc),
                     "random_pair_r": mean, "random_pair_low": low, "random_pair_high": high,
                     "n": n})
    pooled = np.concatenate(random_abs) if random_abs else np.empty(0)
    flat["cranio_random_pair_abs_r_mean"] = float(pooled.mean()) if len(pooled) else float("nan")
    flat["cranio_random_pairings"] = float(len(pairings))
    flat["cranio_n"] = float(n)
    return flat, rows


def reconstruction_scores(lm_f2f: np.ndarray, lm_s2f: np.ndarray, img_f2f: np.ndarray,
                          img_s2f: np.ndarray) -> dict[str, float]:
    """The diversity of the reconstructions (the decoder's own landmarks and its images), S2F
    relative to F2F."""
    flat: dict[str, float] = {}
    n = len(lm_f2f)
    flat["recon_landmark_diversity"] = metrics.diversity(
        lm_s2f.reshape(n, -1), lm_f2f.reshape(n, -1))["diversity"]
    flat["recon_image_diversity"] = metrics.diversity(
        img_s2f.reshape(n, -1).astype(np.float64), img_f2f.reshape(n, -1).astype(np.float64)
    )["diversity"]
    return flat


def loo_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Leave-one-out predictions of linear (kernel) ridge regression x → y, closed form:
    ŷ_loo,i = y_i − e_i / (1 − H_ii) with H = K (K + λI)⁻¹, K = XXᵀ on centred X and y."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xc, yc = x - x.mean(axis=0), y - y.mean()
    k = xc @ xc.T
    lam = alpha * max(float(np.trace(k)) / len(k), 1e-12)
    h = k @ np.linalg.inv(k + lam * np.eye(len(k)))
    resid = yc - h @ yc
    return y - resid / np.maximum(1.0 - np.diag(h), 1e-9)


def _corpus_projections(features: np.ndarray) -> tuple[tuple[str, ...], np.ndarray] | None:
    """The demo corpus's own projections p_k = e · u_k, if its constants fit these features."""
    try:
        from s2f.corpus import voice_constants
        from s2f.corpus.voice import PROJECTIONS
    except ImportError:
        return None
    directions = np.asarray(voice_constants.DIRECTIONS, np.float64)
    if directions.shape[1] != features.shape[1]:
        return None
    return PROJECTIONS, features.astype(np.float64) @ directions.T


def voice_parameter_scores(pred_by_id: np.ndarray, true_by_id: np.ndarray, params: pl.DataFrame
                           ) -> tuple[dict[str, float], list[dict[str, object]]]:
    """Correlate each numeric voice parameter of the identities with read-outs of the features.
    Rows of `params` align with the rows of `pred_by_id` / `true_by_id`."""
    flat: dict[str, float] = {}
    rows: list[dict[str, object]] = []
    n = params.height
    if n < 4:
        return flat, rows
    numeric = [c for c in VOICE_PARAMETERS if c in params.columns
               and params.schema[c].is_numeric() and params[c].std() not in (0, None)]

    def add(param: str, method: str, x: np.ndarray, y: np.ndarray) -> None:
        r, p = metrics.pearson(x, y)
        flat[f"voice_{param}_{method}_r"], flat[f"voice_{param}_{method}_p"] = r, p
        rows.append({"parameter": param, "method": method, "r": r, "p": p, "n": n})

    for col in numeric:
        y = params[col].to_numpy().astype(np.float64)
        add(col, "ridge", loo_ridge(pred_by_id, y), y)
        add(col, "ridge_true", loo_ridge(true_by_id, y), y)
    proj = _corpus_projections(pred_by_id)
    if proj is not None:
        names, values = proj
        for i, k in enumerate(names):
            col = f"proj_{k}"
            if col in params.columns:
                add(col, "projection", values[:, i], params[col].to_numpy().astype(np.float64))
    return flat, rows


def frame(rows: list[dict[str, object]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


SIMILARITY_SCHEMA = {"method": pl.String, "seconds": pl.Float64, "metric": pl.String,
                     "mean": pl.Float64, "std": pl.Float64}
RECALL_SCHEMA = {"method": pl.String, "seconds": pl.Float64, "k": pl.Int64, "recall": pl.Float64,
                 "ci_low": pl.Float64, "ci_high": pl.Float64, "chance": pl.Float64}
CRANIO_SCHEMA = {"measurement": pl.String, "r": pl.Float64, "p": pl.Float64,
                 "p_bonferroni": pl.Float64, "random_pair_r": pl.Float64,
                 "random_pair_low": pl.Float64, "random_pair_high": pl.Float64, "n": pl.Int64}
PAPER_RECALL_SCHEMA = {"method": pl.String, "seconds": pl.Float64, "distance": pl.String,
                       "k": pl.Int64, "recall": pl.Float64, "ci_low": pl.Float64,
                       "ci_high": pl.Float64, "chance": pl.Float64}
VOICE_SCHEMA = {"parameter": pl.String, "method": pl.String, "r": pl.Float64, "p": pl.Float64,
                "n": pl.Int64}


def main() -> int:
    rng = np.random.default_rng(0)
    true = rng.normal(size=(40, 16))
    pool, target = true[::2], np.repeat(np.arange(20), 2)
    flat, _ = retrieval_scores(true + rng.normal(size=true.shape), pool, target, "model", 6.0)
    print({k: round(v, 3) for k, v in flat.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
