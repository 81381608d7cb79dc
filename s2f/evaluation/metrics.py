"""The paper's evaluation metrics, plus the ones that catch a collapsed model.

All functions take numpy arrays (N×D features, N×68×2 landmarks) and return plain floats or
dicts, so they can be logged to MLflow and written to Parquet as they are.

- `feature_similarity`: cosine distance in degrees, L2 and L1 between predicted and true
  features (mean and std over samples), as in the paper's Table 2.
- `retrieval_recall`: for each voice, rank a pool of face features by cosine distance to the
  prediction (`retrieval_ranks`; `distance_ranks` ranks by L2 or L1 on the raw features or by
  cosine, as the paper's retrieval table); recall@K is the fraction whose true face is in the
  top K; chance is K / pool.
- `bootstrap_ci`, `bootstrap_cis`: percentile confidence interval of any per-sample statistic
  (of several columns on the same resamples).

Memory is bounded in the number of samples N: retrieval ranks blocks of queries against the
pool and keeps each query's rank only (the N × P distance matrix never exists), per-sample
metrics run over row blocks, and the bootstrap draws its n_boot × N indices a few replicates
at a time. Every result is the one the whole-array computation gives (the tests compare).
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


def _float64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_degrees(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-sample angle between prediction and truth, in degrees."""
    cos = np.sum(_unit(pred) * _unit(true), axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


# Numbers in one row block of the per-sample metrics (similarity, spread, finite rows): 1 M
# float64 = 8 MB per temporary, and a block has about six live (float64 copies, unit vectors,
# differences), so ~50 MB however many samples; 8,192 rows of 128-D features, plenty per call.
ROW_BLOCK_NUMBERS = 1 << 20


def block_rows(dim: int) -> int:
    """Rows of a `ROW_BLOCK_NUMBERS` block of a dim-wide array."""
    return max(1, ROW_BLOCK_NUMBERS // max(dim, 1))


def feature_similarity(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean ± std of cosine distance (degrees), L2 and L1 between predicted and true features.
    L2 and L1 are taken on L2-normalised features, so encoders of any scale compare.
    Per-sample values are computed in row blocks (float64 temporaries of one block only)."""
    n = len(pred)
    deg, l2, l1 = np.empty(n), np.empty(n), np.empty(n)
    step = block_rows(int(np.prod(np.shape(pred)[1:])))
    for i in range(0, n, step):
        p = np.asarray(pred[i:i + step], np.float64)
        t = np.asarray(true[i:i + step], np.float64)
        deg[i:i + step] = cosine_degrees(p, t)
        diff = _unit(p) - _unit(t)
        l2[i:i + step] = np.linalg.norm(diff, axis=-1)
        l1[i:i + step] = np.abs(diff).sum(axis=-1)
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
    Computed in blocks of queries (`distance_ranks`): the N × P matrix never exists.
    `device`: rank in blocks with torch there (`device_ranks`); None: numpy on the CPU."""
    return distance_ranks(pred, pool, target, "cosine", device=device)


RetrievalDistance = Literal["l2", "l1", "cosine"]
PAPER_KS = (1, 2, 5, 10)  # the paper's retrieval table (supplementary material)

# Entries of one block of the query × pool distance matrix: 4 M float64 = 32 MB (two live:
# the product and the distances), whatever the number of queries. Big enough that each block
# is one BLAS call of useful size (838 queries against the paper's 5,000-face pool, a dozen
# against a 290k-identity AVSpeech pool).
DISTANCE_BLOCK_NUMBERS = 1 << 22
# Numbers in one slice of L1's query × pool × D difference: 4 M float64 = 32 MB (L1 has no BLAS
# form, so the difference itself is the temporary; its absolute value is taken in place).
L1_BLOCK_NUMBERS = 1 << 22


def _distance_block(block: np.ndarray, pool: np.ndarray, pool_sq: np.ndarray | None,
                    distance: RetrievalDistance) -> np.ndarray:
    """Distances from a block of queries to every pool entry (block rows × P, float64).
    `block` and `pool` are already normalised for cosine; `pool_sq`: the pool's squared norms
    (L2)."""
    # In place where the arithmetic allows: the same operations in the same order as the
    # whole-matrix expressions before, with fewer rows × P temporaries alive.
    if distance == "cosine":
        d = block @ pool.T
        return np.negative(d, out=d)
    if distance == "l2":
        assert pool_sq is not None
        product = (2 * block) @ pool.T  # `2 * block @ pool.T` parses so
        d = (block ** 2).sum(1)[:, None] + pool_sq[None, :]
        d -= product
        del product
        np.maximum(d, 0.0, out=d)
        return np.sqrt(d, out=d)
    if distance == "l1":  # pool entries in slices, so the rows × P × D difference stays bounded
        d = np.empty((len(block), len(pool)))
        step = max(1, L1_BLOCK_NUMBERS // max(block.size, 1))
        for j in range(0, len(pool), step):
            diff = block[:, None, :] - pool[None, j:j + step, :]
            d[:, j:j + step] = np.abs(diff, out=diff).sum(-1)
        return d
    raise ValueError(f"unknown retrieval distance {distance!r}")


def distance_ranks(pred: np.ndarray, pool: np.ndarray, target: np.ndarray,
                   distance: RetrievalDistance, chunk: int | None = None,
                   device: torch.device | None = None) -> np.ndarray:
    """0-based rank of each sample's true pool entry, the pool sorted by `distance` to the
    sample's prediction: L2 and L1 on the raw (unnormalised) features, as the paper ranks its
    database; cosine on L2-normalised ones. (On normalised features L2 is a monotone function
    of cosine and would rank exactly as it.) Ties count against the model.
    Bounded memory: queries are taken `chunk` at a time (default: as many as fit
    `DISTANCE_BLOCK_NUMBERS` distances), each block's distances to the whole pool are computed in
    float64, and only the rank of the true entry is kept; the queries are converted (float64,
    normalised) block by block, so only the pool is copied whole. `device`: with torch there
    (`device_ranks`); None: numpy on the CPU."""
    if distance not in ("l2", "l1", "cosine"):
        raise ValueError(f"unknown retrieval distance {distance!r}")
    if device is not None:
        return device_ranks(pred, pool, target, distance, device)
    convert = _unit if distance == "cosine" else _float64
    q = convert(pool)
    q_sq = (q ** 2).sum(1) if distance == "l2" else None
    rows = max(1, DISTANCE_BLOCK_NUMBERS // max(len(q), 1))
    if distance == "l1":  # at least one pool entry per L1 slice: fewer queries per block
        rows = max(1, min(rows, L1_BLOCK_NUMBERS // max(q.shape[1], 1)))
    rows = rows if chunk is None else max(1, min(rows, chunk))
    target = np.asarray(target)
    ranks = np.empty(len(pred), dtype=np.int64)
    for i in range(0, len(pred), rows):
        d = _distance_block(convert(pred[i:i + rows]), q, q_sq, distance)
        true_d = d[np.arange(len(d)), target[i:i + rows]]
        ranks[i:i + len(d)] = (d <= true_d[:, None]).sum(axis=1) - 1
        del d  # before the next block is computed: one block alive, not two
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


# Resample indices drawn at once by the bootstrap: 4 M int64 = 32 MB, so n_boot × N never
# sits in memory (at N = 1M, four replicates per draw).
BOOTSTRAP_BLOCK_INDICES = 1 << 22


def bootstrap_cis(columns: Sequence[np.ndarray],
                  statistic: Callable[[np.ndarray], float] = np.mean,
                  n_boot: int = DEFAULT_BOOTSTRAP, alpha: float = 0.05, seed: int = 0
                  ) -> list[tuple[float, float]]:
    """`bootstrap_ci` of several per-sample columns of one length on the same resamples (each
    result equals `bootstrap_ci(column, ...)` with the same seed): one draw of the indices
    serves every column, e.g. recall@K for each K. The n_boot × N resample indices are drawn
    in blocks of replicates (`BOOTSTRAP_BLOCK_INDICES`); the generator's stream is the one a
    single n_boot × N draw makes, so the intervals are those of drawing all at once."""
    cols = [np.asarray(c) for c in columns]
    n = len(cols[0]) if cols else 0
    if any(len(c) != n for c in cols):
        raise ValueError(f"bootstrap columns of different lengths: {[len(c) for c in cols]}")
    if n == 0:
        return [(float("nan"), float("nan")) for _ in cols]
    rng = np.random.default_rng(seed)
    stats = np.empty((len(cols), n_boot))
    step = max(1, BOOTSTRAP_BLOCK_INDICES // n)
    for b in range(0, n_boot, step):
        idx = rng.integers(0, n, size=(min(step, n_boot - b), n))
        for c, values in enumerate(cols):
            stats[c, b:b + len(idx)] = [statistic(values[i]) for i in idx]
    return [(float(np.quantile(s, alpha / 2)), float(np.quantile(s, 1 - alpha / 2)))
            for s in stats]


def bootstrap_ci(values: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
                 n_boot: int = DEFAULT_BOOTSTRAP, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` over per-sample `values`
    (resamples drawn in blocks: `bootstrap_cis`)."""
    return bootstrap_cis([values], statistic, n_boot, alpha, seed)[0]


def spread(features: np.ndarray) -> float:
    """Mean angular distance (degrees) of L2-normalised features to their mean direction.
    Two passes over row blocks: the mean direction, then each row's angle to it."""
    n = len(features)
    step = block_rows(int(np.prod(np.shape(features)[1:])))
    total: np.ndarray | None = None
    for i in range(0, n, step):
        u = _unit(features[i:i + step])
        # the running sum carried as the first row: the rows are added in order, one by one,
        # exactly as one sum over all of them
        total = u.sum(axis=0) if total is None else np.concatenate([total[None], u]).sum(axis=0)
    if total is None:
        return float("nan")
    mean_dir = total / np.intp(n)
    angles = np.concatenate([cosine_degrees(u, np.broadcast_to(mean_dir, u.shape))
                             for u in (_unit(features[i:i + step]) for i in range(0, n, step))])
    return float(angles.mean())


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
