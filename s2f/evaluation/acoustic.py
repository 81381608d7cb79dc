"""Acoustic baselines: what one number measured on the voice predicts of the face.

The F0-only ridge (`f0_ridge_`) stands beside every model number, on every corpus (the demo's,
AVSpeech, the real pairs): the clip's median F0 (`s2f.models.pitch.median_f0`: normalised
autocorrelation on voiced frames) is regressed onto the face feature with the same closed-form
ridge as the oracle (`scores.StreamedRidge`), fitted on the train role's clips only and applied
to the scored role's. A model that does not beat it has learnt pitch, and pitch is mostly
gender. Input: log F0 (pitch perception and the male/female gap are multiplicative); a clip
with no voiced frame takes the train median, and how many did is kept as a metric.

Median F0 is measured once per audio file and process (keyed by path, size and mtime): a
pipeline run scores dev and test, for the model and the control, on the same train clips.

    python -m s2f.evaluation.acoustic AUDIO...     # prints each file's median F0
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from s2f.evaluation.scores import StreamedRidge
from s2f.media.audio import SAMPLE_RATE, load_audio


@lru_cache(maxsize=1 << 20)
def _median_f0(path: str, size: int, mtime_ns: int) -> float:
    from s2f.models.pitch import median_f0

    return median_f0(load_audio(path), SAMPLE_RATE)


def median_f0_of(paths: Sequence[Path | str]) -> np.ndarray:
    """Median F0 (Hz) of each audio file, NaN where no frame is voiced or the file is gone."""
    out = np.full(len(paths), np.nan)
    for n, path in enumerate(paths):
        try:
            st = Path(path).stat()
        except OSError:
            continue
        out[n] = _median_f0(str(path), st.st_size, st.st_mtime_ns)
    return out


MIN_VOICED_TRAIN = 2  # a ridge on one input needs two distinct points


class F0Ridge:
    """The F0-only ridge, fitted on train: log median F0 → face feature. The design (one number
    per train clip) is held; the train features are added in blocks (`add`, as
    `scores.StreamedRidge`), so they need not be in memory at once."""

    def __init__(self, train_f0: np.ndarray) -> None:
        voiced = _voiced(train_f0)
        if voiced.sum() < MIN_VOICED_TRAIN:
            raise ValueError(f"{int(voiced.sum())} voiced train clips: the F0 ridge needs "
                             f"{MIN_VOICED_TRAIN}")
        self.fill = float(np.median(train_f0[voiced]))
        self.ridge = StreamedRidge(self.design(train_f0))

    def design(self, f0: np.ndarray) -> np.ndarray:
        """log F0 as a one-column design; unvoiced clips take the train median."""
        f0 = np.where(_voiced(f0), f0, self.fill)
        return np.log(f0)[:, None]

    def add(self, rows: np.ndarray, features: np.ndarray) -> None:
        self.ridge.add(rows, features)

    def predict(self, eval_f0: np.ndarray) -> np.ndarray:
        return self.ridge.predict(self.design(eval_f0))


def _voiced(f0: np.ndarray) -> np.ndarray:
    return np.isfinite(f0) & (f0 > 0)


def f0_ridge_fit(train_f0: np.ndarray, eval_f0: np.ndarray
                 ) -> tuple[F0Ridge | None, dict[str, float]]:
    """The F0-only ridge to fit (None when fewer than `MIN_VOICED_TRAIN` train clips are
    voiced: nothing to fit; `f0_ridge_train_voiced` says so), and what goes into it."""
    voiced = _voiced(train_f0)
    info = {"f0_ridge_train_voiced": float(voiced.sum()),
            "f0_ridge_eval_unvoiced": float((~_voiced(eval_f0)).sum())}
    if voiced.sum() < MIN_VOICED_TRAIN:
        return None, info
    fit = F0Ridge(train_f0)
    return fit, {**info, "f0_ridge_train_median_hz": fit.fill}


def f0_ridge(train_f0: np.ndarray, train_features: np.ndarray, eval_f0: np.ndarray
             ) -> tuple[np.ndarray | None, dict[str, float]]:
    """The F0-only ridge's prediction for each scored clip, fitted on train only, with every
    train feature at once (`f0_ridge_fit` adds them in blocks); None as `f0_ridge_fit`."""
    fit, info = f0_ridge_fit(train_f0, eval_f0)
    if fit is None:
        return None, info
    fit.add(np.arange(len(train_f0)), train_features)
    return fit.predict(eval_f0), info


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path, f0 in zip(args, median_f0_of(args), strict=True):
        print(f"{path}\t{f0:.1f} Hz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
