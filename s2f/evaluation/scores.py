"""Every evaluation number, computed from arrays with `s2f.metrics`.

Metric names (flat, as logged to MLflow and stored in the `evaluations` table):
- `cosine_deg_mean_6s`, `l2_std_3s`, ...: feature similarity per input length;
- `recall_at_K_6s` with `_ci_low` / `_ci_high` (bootstrap 95 %), `chance_at_K`;
  `mean_face_recall_at_K` (+ CIs): the baseline that predicts the training mean for every voice;
- `diversity_6s`, `spread_pred_deg_6s`, `spread_true_deg`: spread of the predictions relative to
  the true features (`metrics.diversity`); `recon_landmark_diversity`, `recon_image_diversity`:
  the same for the decoder's outputs, voice reconstruction (S2F) relative to the reconstruction
  of the true feature (F2F);
- `cranio_<measurement>_r` / `_p`: Pearson r and p between F2F and S2F measurements;
- `voice_<parameter>_<method>_r` / `_p`: demo-corpus voice parameters against a read-out of the
  per-identity mean predicted feature. Methods: `ridge` (leave-one-out kernel ridge, closed form,
  λ = mean of the kernel's diagonal), `ridge_true` (the same from the true features: the ceiling),
  `projection` (the corpus's own projection p_k = e · u_k applied to the prediction, when the
  features are the corpus's 128-D dlib descriptors).

    python -m s2f.evaluation.scores     # scores a random prediction against random truth
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from s2f import metrics

SECONDS = (3.0, 6.0)
# The demo corpus's voice parameters (s2f.corpus.table.IDENTITIES) worth a read-out; the other
# numeric columns (index, n_clips, detection scores) say nothing about the voice.
VOICE_PARAMETERS = ("pitch_hz", "espeak_pitch", "pitch_range", "rate_wpm", "f0_measured_hz",
                    "proj_pitch", "proj_range", "proj_rate", "proj_variant")
PRIMARY_SECONDS = 6.0  # the paper's headline input length; the promotion gate reads these


def sec_tag(seconds: float) -> str:
    return f"{seconds:g}s"


@dataclass
class Scores:
    metrics: dict[str, float]
    similarity: pl.DataFrame   # method, seconds, metric, mean, std
    recall: pl.DataFrame       # method, seconds, k, recall, ci_low, ci_high, chance
    craniofacial: pl.DataFrame  # measurement, r, p, n
    voice_parameters: pl.DataFrame  # parameter, method, r, p, n


def similarity_scores(pred: np.ndarray, true: np.ndarray, method: str, seconds: float | None
                      ) -> tuple[dict[str, float], list[dict[str, object]]]:
    sim = metrics.feature_similarity(pred, true)
    prefix = "" if method == "model" else f"{method}_"
    suffix = "" if seconds is None else f"_{sec_tag(seconds)}"
    flat = {f"{prefix}{k}{suffix}": v for k, v in sim.items()}
    rows = [{"method": method, "seconds": seconds, "metric": name,
             "mean": sim[f"{name}_mean"], "std": sim[f"{name}_std"]}
            for name in ("cosine_deg", "l2", "l1")]
    return flat, rows


def retrieval_scores(pred: np.ndarray, pool: np.ndarray, target: np.ndarray, method: str,
                     seconds: float | None, n_boot: int = 1000, seed: int = 0
                     ) -> tuple[dict[str, float], list[dict[str, object]]]:
    """recall@K against the per-identity pool, each with a bootstrap CI over voices."""
    ranks = metrics.retrieval_ranks(pred, pool, target)
    prefix = "" if method == "model" else f"{method}_"
    suffix = "" if seconds is None else f"_{sec_tag(seconds)}"
    flat: dict[str, float] = {f"{prefix}median_rank{suffix}": float(np.median(ranks) + 1)}
    rows: list[dict[str, object]] = []
    for k, rc in metrics.retrieval_recall(ranks, len(pool)).items():
        lo, hi = metrics.bootstrap_ci((ranks < k).astype(np.float64), n_boot=n_boot, seed=seed)
        name = f"{prefix}recall_at_{k}{suffix}"
        flat.update({name: rc["recall"], f"{name}_ci_low": lo, f"{name}_ci_high": hi,
                     f"chance_at_{k}": rc["chance"]})
        rows.append({"method": method, "seconds": seconds, "k": k, "recall": rc["recall"],
                     "ci_low": lo, "ci_high": hi, "chance": rc["chance"]})
    return flat, rows


def diversity_scores(pred: np.ndarray, true: np.ndarray, seconds: float) -> dict[str, float]:
    d = metrics.diversity(pred, true)
    tag = sec_tag(seconds)
    return {f"diversity_{tag}": d["diversity"], f"spread_pred_deg_{tag}": d["spread_pred_deg"],
            "spread_true_deg": d["spread_true_deg"]}


def reconstruction_scores(lm_f2f: np.ndarray, lm_s2f: np.ndarray, img_f2f: np.ndarray,
                          img_s2f: np.ndarray) -> tuple[dict[str, float], list[dict[str, object]]]:
    """Craniofacial correlations F2F vs S2F, and the diversity of the reconstructions."""
    flat: dict[str, float] = {}
    rows: list[dict[str, object]] = []
    m_true = metrics.craniofacial_measurements(lm_f2f)
    m_voice = metrics.craniofacial_measurements(lm_s2f)
    for name in m_true:
        r, p = metrics.pearson(m_true[name], m_voice[name])
        flat[f"cranio_{name}_r"], flat[f"cranio_{name}_p"] = r, p
        rows.append({"measurement": name, "r": r, "p": p, "n": len(lm_f2f)})
    n = len(lm_f2f)
    flat["recon_landmark_diversity"] = metrics.diversity(
        lm_s2f.reshape(n, -1), lm_f2f.reshape(n, -1))["diversity"]
    flat["recon_image_diversity"] = metrics.diversity(
        img_s2f.reshape(n, -1).astype(np.float64), img_f2f.reshape(n, -1).astype(np.float64)
    )["diversity"]
    return flat, rows


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
CRANIO_SCHEMA = {"measurement": pl.String, "r": pl.Float64, "p": pl.Float64, "n": pl.Int64}
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
