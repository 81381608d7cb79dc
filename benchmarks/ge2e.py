"""The ge2e voice front-end on this machine: embedding time per 6 s clip, and how well a ridge
from the frozen GE2E embedding separates male from female voices on the Speech2Face page's
VoxCeleb clips (labels from its index.html), beside a one-variable ridge on median F0.

    python benchmarks/ge2e.py [--page ../shared/data/speech2face-page] [--folds 5] [--threads N]

Timing: `Ge2eSpeakerEncoder` on one 6 s clip (7 partial utterances of 1.6 s), median of 10
runs after a warm-up, and a batch of 16 clips (per clip). Gender: each clip's first 6 s (shorter
clips repeated, as the pipeline does) → 256-D embedding; ridge (alpha 1, intercept, labels ±1)
fitted and scored by person-disjoint k-fold cross-validation (a person's clips are all in one
fold); accuracy with a bootstrap 95 % CI over persons (1,000 resamples). The data stay where
they are (no licence): read, never copied.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch

from s2f.corpus.voice import median_f0
from s2f.media.audio import SAMPLE_RATE, fix_length, load_audio
from s2f.models.ge2e import Ge2eSpeakerEncoder, load_ge2e_state

PAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech2face-page"


def page_labels(page: Path) -> list[tuple[str, str, int]]:
    """(clip file, person, 1 = male / 0 = female) from the VoxCeleb table of index.html."""
    html = (page / "voxceleb" / "index.html").read_text(errors="replace")
    rows = re.findall(r"<td><br>(Male|Female) <br>.*?src=\"\./Wav/([^\"]+\.flac)\"", html, re.S)
    out = []
    for sex, name in rows:
        person = re.match(r"(\d+[A-Za-z_.\-']+?)_[A-Za-z0-9_\-]{11}_\d+\.flac$", name)
        out.append((name, person.group(1) if person else name, int(sex == "Male")))
    return out


def time_embedding(enc: Ge2eSpeakerEncoder, clip: np.ndarray) -> tuple[float, float]:
    """(ms for one 6 s clip, ms per clip in a batch of 16)."""
    one = torch.from_numpy(clip)[None]
    batch = one.repeat(16, 1)
    with torch.no_grad():
        enc(one)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            enc(one)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        enc(batch)
        per_clip = (time.perf_counter() - t0) / 16
    return float(np.median(times)) * 1e3, per_clip * 1e3


def ridge_cv(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int,
             alpha: float = 1.0) -> np.ndarray:
    """Out-of-fold predictions (sign = class) of a ridge on standardised x, folds by group."""
    persons = np.unique(groups)
    rng = np.random.default_rng(0)
    fold_of = dict(zip(rng.permutation(persons), np.arange(len(persons)) % folds, strict=True))
    f = np.array([fold_of[g] for g in groups])
    pred = np.zeros(len(y))
    t = 2.0 * y - 1
    for k in range(folds):
        tr, te = f != k, f == k
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
        a = np.c_[(x[tr] - mu) / sd, np.ones(tr.sum())]
        reg = alpha * np.eye(a.shape[1])
        reg[-1, -1] = 0.0  # the intercept is not shrunk
        w = np.linalg.solve(a.T @ a + reg, a.T @ t[tr])
        pred[te] = np.c_[(x[te] - mu) / sd, np.ones(te.sum())] @ w
    return pred


def accuracy_ci(correct: np.ndarray, groups: np.ndarray, n_boot: int = 1000
                ) -> tuple[float, float, float]:
    """Accuracy and its bootstrap 95 % CI, resampling persons."""
    persons = np.unique(groups)
    idx = {p: np.nonzero(groups == p)[0] for p in persons}
    rng = np.random.default_rng(1)
    boots = [np.mean(np.concatenate([correct[idx[p]] for p in rng.choice(persons, len(persons))]))
             for _ in range(n_boot)]
    return float(correct.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", type=Path, default=PAGE)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc = Ge2eSpeakerEncoder()
    enc.load_state_dict(load_ge2e_state())
    enc.eval()
    labels = page_labels(args.page)
    six = round(6 * SAMPLE_RATE)
    t0 = time.perf_counter()
    waves = [fix_length(load_audio(args.page / "voxceleb" / "Wav" / n), six) for n, _, _ in labels]
    decode_s = time.perf_counter() - t0
    one_ms, batch_ms = time_embedding(enc, waves[0])
    t0 = time.perf_counter()
    with torch.no_grad():
        emb = np.concatenate([enc(torch.from_numpy(np.stack(waves[i:i + 16]))).numpy()
                              for i in range(0, len(waves), 16)])
    embed_s = time.perf_counter() - t0
    f0 = np.array([[median_f0(w, SAMPLE_RATE)] for w in waves])
    f0 = np.where(np.isnan(f0), np.nanmedian(f0), f0)
    y = np.array([m for _, _, m in labels], float)
    groups = np.array([p for _, p, _ in labels])
    print(f"{len(labels)} clips, {len(np.unique(groups))} persons, {int(y.sum())} male; "
          f"torch threads {args.threads}; decode {decode_s:.1f} s, embed all {embed_s:.1f} s")
    print(f"| GE2E embedding of one 6 s clip | {one_ms:.0f} ms (batch of 16: {batch_ms:.0f} ms "
          "per clip) |")
    print(f"\n| predictor ({args.folds}-fold, person-disjoint) | gender accuracy [95% CI] |")
    print("|---|---|")
    print(f"| majority class | {max(y.mean(), 1 - y.mean()):.3f} |")
    for name, x in (("ridge on median F0 (1 variable)", f0), ("ridge on GE2E embedding (256-D)",
                                                             emb)):
        acc, lo, hi = accuracy_ci((ridge_cv(x, y, groups, args.folds) > 0) == (y > 0.5), groups)
        print(f"| {name} | {acc:.3f} [{lo:.3f}, {hi:.3f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
