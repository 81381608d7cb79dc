"""The paper's evaluation metrics, plus the ones that catch a collapsed model.

All functions take numpy arrays (N×D features, N×68×2 landmarks) and return plain floats or
dicts, so they can be logged to MLflow and written to Parquet as they are.

- `feature_similarity`: cosine distance in degrees, L2 and L1 between predicted and true
  features (mean and std over samples), as in the paper's Table 2.
- `retrieval_recall`: for each voice, rank a pool of face features by cosine distance to the
  prediction (`retrieval_ranks`; `distance_ranks` ranks by L2 or L1 on the raw features or by
  cosine, as the paper's retrieval table); recall@K is the fraction whose true face is in the
  top K; chance is K / pool.
- `bootstrap_ci`: percentile confidence interval of any per-sample statistic.
- `diversity`: spread of the predictions relative to the spread of the true features; a model
  that predicts one face for every voice scores ~0 however good its mean distance looks.
- `craniofacial_measurements`: distances and ratios on dlib's 68 iBUG landmarks.
- `bonferroni`: p-values corrected for the number of measurements tested together.
- `derangements`, `pearson_rows`: the random-pair baseline's permutation distribution (each
  sample paired with another's measurement, many times over).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # torch only for the device path (`device_ranks`), imported there
    import torch

# Bootstrap resamples of every confidence interval, unless a caller says otherwise (the CLI's
# and the flows' `--bootstrap` default too).
DEFAULT_BOOTSTRAP = 1000

RECALL_KS = (1, 2, 5, 10, 20, 50)

# Random pairings behind the craniofacial random-pair baseline's mean and 95 % range.
DEFAULT_DERANGEMENTS = 1000


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_degrees(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-sample angle between prediction and truth, in degrees."""
    cos = np.sum(_unit(pred) * _unit(true), axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def feature_similarity(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean ± std of cosine distance (degrees), L2 and L1 between predicted and true features.
    L2 and L1 are taken on L2-normalised features, so encoders of any scale compare."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    deg = cosine_degrees(pred, true)
    diff = _unit(pred) - _unit(true)
    l2 = np.linalg.norm(diff, axis=-1)
    l1 = np.abs(diff).sum(axis=-1)
    out: dict[str, float] = {}
    for name, v in (("cosine_deg", deg), ("l2", l2), ("l1", l1)):
        out[f"{name}_mean"] = float(v.mean())
        out[f"{name}_std"] = float(v.std())
    return out


def retrieval_ranks(pred: np.ndarray, pool: np.ndarray, target: np.ndarray,
                    device: torch.device | None = None) -> np.ndarray:
    """0-based rank of each sample's true pool entry when the pool is sorted by cosine distance
    to the sample's prediction. `target[i]` is the index of sample i's true face in `pool`.
    Ties count against the model (the true face ranks after every equally distant one).
    `device`: rank in blocks with torch there (`device_ranks`); None: numpy on the CPU."""
    if device is not None:
        return device_ranks(pred, pool, target, "cosine", device)
    sims = _unit(pred) @ _unit(pool).T  # N × P
    true_sim = sims[np.arange(len(pred)), target]
    return (sims >= true_sim[:, None]).sum(axis=1) - 1


RetrievalDistance = Literal["l2", "l1", "cosine"]
PAPER_KS = (1, 2, 5, 10)  # the paper's retrieval table (supplementary material)


def distance_ranks(pred: np.ndarray, pool: np.ndarray, target: np.ndarray,
                   distance: RetrievalDistance, chunk: int = 256,
                   device: torch.device | None = None) -> np.ndarray:
    """0-based rank of each sample's true pool entry, the pool sorted by `distance` to the
    sample's prediction: L2 and L1 on the raw (unnormalised) features, as the paper ranks its
    database; cosine on L2-normalised ones. (On normalised features L2 is a monotone function
    of cosine and would rank exactly as it.) Ties count against the model. Chunked so a
    5,000 × 5,000 × D L1 never sits in memory at once. `device`: with torch there
    (`device_ranks`); None: numpy on the CPU."""
    if device is not None:
        return device_ranks(pred, pool, target, distance, device)
    if distance == "cosine":
        p, q = _unit(pred), _unit(pool)
    else:
        p, q = np.asarray(pred, np.float64), np.asarray(pool, np.float64)
    if distance == "l1":  # the N×P×D difference: keep each block near 16 M numbers
        chunk = max(1, min(chunk, 16_000_000 // max(q.size, 1)))
    ranks = np.empty(len(p), dtype=np.int64)
    for i in range(0, len(p), chunk):
        block = p[i:i + chunk]
        if distance == "cosine":
            d = -(block @ q.T)
        elif distance == "l2":
            d = np.sqrt(np.maximum((block ** 2).sum(1)[:, None] + (q ** 2).sum(1)[None, :]
                                   - 2 * block @ q.T, 0.0))
        elif distance == "l1":
            d = np.abs(block[:, None, :] - q[None, :, :]).sum(-1)
        else:
            raise ValueError(f"unknown retrieval distance {distance!r}")
        rows = np.arange(len(block))
        true_d = d[rows, target[i:i + chunk]]
        ranks[i:i + chunk] = (d <= true_d[:, None]).sum(axis=1) - 1
    return ranks


def device_ranks(pred: np.ndarray, pool: np.ndarray, target: np.ndarray,
                 distance: RetrievalDistance, device: torch.device,
                 block_rows: int = 1024) -> np.ndarray:
    """`distance_ranks` computed with torch on `device` (a GPU: the N × P distances of a
    5,000-clip split in blocks of `block_rows` queries), the ranks returned to the CPU.
    float64 as the numpy path, and the same formulas (L1 by `cdist`, which sums |a - b|
    without the N × P × D difference), so ranks equal the CPU's except where two distances
    agree to the last bits (ties, then counted against the model on both)."""
    import torch

    if distance not in ("l2", "l1", "cosine"):
        raise ValueError(f"unknown retrieval distance {distance!r}")
    def on_device(x: np.ndarray) -> torch.Tensor:
        x = _unit(x) if distance == "cosine" else np.asarray(x, np.float64)
        return torch.as_tensor(x, device=device)

    p, q = on_device(pred), on_device(pool)
    t = torch.as_tensor(np.asarray(target, np.int64), device=device)
    q_sq = (q ** 2).sum(1)
    ranks = torch.empty(len(p), dtype=torch.int64, device=device)
    for i in range(0, len(p), block_rows):
        block = p[i:i + block_rows]
        if distance == "cosine":
            d = -(block @ q.T)
        elif distance == "l2":
            d = torch.sqrt(torch.clamp((block ** 2).sum(1)[:, None] + q_sq[None, :]
                                       - 2 * block @ q.T, min=0.0))
        else:
            d = torch.cdist(block, q, p=1)
        true_d = d[torch.arange(len(block), device=device), t[i:i + block_rows]]
        ranks[i:i + block_rows] = (d <= true_d[:, None]).sum(dim=1) - 1
    return ranks.cpu().numpy()


def retrieval_recall(ranks: np.ndarray, pool_size: int,
                     ks: Sequence[int] = RECALL_KS) -> dict[int, dict[str, float]]:
    """recall@K and the chance level K / pool size, for each K below the pool size."""
    out: dict[int, dict[str, float]] = {}
    for k in ks:
        if k >= pool_size:
            continue
        out[k] = {"recall": float(np.mean(ranks < k)), "chance": k / pool_size}
    return out


def bootstrap_ci(values: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
                 n_boot: int = DEFAULT_BOOTSTRAP, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` over per-sample `values`."""
    values = np.asarray(values)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    stats = np.array([statistic(values[i]) for i in idx])
    return (float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2)))


def spread(features: np.ndarray) -> float:
    """Mean angular distance (degrees) of L2-normalised features to their mean direction."""
    u = _unit(features)
    return float(cosine_degrees(u, np.broadcast_to(u.mean(axis=0), u.shape)).mean())


def diversity(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Spread of the predictions across voices relative to the spread of the true features.
    1 means predictions vary as much as real faces do; ~0 means every voice gets one face."""
    s_pred, s_true = spread(pred), spread(true)
    return {"spread_pred_deg": s_pred, "spread_true_deg": s_true,
            "diversity": s_pred / s_true if s_true > 0 else float("nan")}


# Craniofacial measurements on the 68-point iBUG layout (0-based indices):
# jaw 0-16, brows 17-26, nose bridge 27-30, nostrils 31-35, eyes 36-47, mouth 48-67.
def _d(lm: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1)


def craniofacial_measurements(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Scale-free measurements (ratios to the outer inter-ocular distance) per face.
    `landmarks`: N×68×2. Returns name → N values."""
    lm = np.asarray(landmarks, np.float64)
    iod = np.maximum(_d(lm, 36, 45), 1e-9)  # outer eye corners
    face_height = np.linalg.norm(lm[..., 8, :] - (lm[..., 19, :] + lm[..., 24, :]) / 2, axis=-1)
    nose_width = _d(lm, 31, 35)
    nose_height = _d(lm, 27, 33)
    return {
        "nose_width": nose_width / iod,
        "nose_height": nose_height / iod,
        "nasal_index": nose_width / np.maximum(nose_height, 1e-9),
        "mouth_width": _d(lm, 48, 54) / iod,
        "upper_lip_height": _d(lm, 51, 62) / iod,
        "lower_lip_height": _d(lm, 66, 57) / iod,
        "face_width": _d(lm, 0, 16) / iod,
        "face_height": face_height / iod,
        "face_width_height_ratio": _d(lm, 0, 16) / np.maximum(face_height, 1e-9),
        "jaw_width": _d(lm, 4, 12) / iod,
        "eye_distance": _d(lm, 39, 42) / iod,  # inner corners
        "eye_width": (_d(lm, 36, 39) + _d(lm, 42, 45)) / 2 / iod,
        "chin_height": _d(lm, 57, 8) / iod,
    }


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and its two-sided p-value; (nan, nan) when either side is constant."""
    from scipy.stats import pearsonr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return (float("nan"), float("nan"))
    r, p = pearsonr(x, y)
    return (float(r), float(p))


def derangements(n: int, count: int = DEFAULT_DERANGEMENTS, seed: int = 0) -> np.ndarray:
    """`count` × n uniformly random derangements (permutations without a fixed point: every
    sample is paired with another), seeded; rejection sampling (about 1 in e permutations is
    one). n < 2 has none: an empty array."""
    if n < 2:
        return np.empty((0, n), dtype=np.int64)
    rng = np.random.default_rng(seed)
    found: list[np.ndarray] = []
    have = 0
    while have < count:
        perms = np.argsort(rng.random((max(count, 64), n)), axis=1)
        ok = perms[(perms != np.arange(n)).all(axis=1)]
        found.append(ok)
        have += len(ok)
    return np.concatenate(found)[:count]


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of `x` (P × n) with `y` (n); NaN where a side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean()
    den = np.sqrt((xc ** 2).sum(axis=-1) * (yc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc @ yc) / np.where(den > 0, den, 1.0), np.nan)


def bonferroni(p: Sequence[float] | np.ndarray, m: int | None = None) -> np.ndarray:
    """Bonferroni-corrected p-values: p × m (m = the number of tests, default len(p)), capped
    at 1; NaN stays NaN and does not count as a test."""
    p = np.asarray(p, np.float64)
    m = int(np.isfinite(p).sum()) if m is None else m
    return np.minimum(p * max(m, 1), 1.0)
