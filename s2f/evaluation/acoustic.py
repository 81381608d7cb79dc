"""Acoustic baselines: what numbers measured on the voice, without a model, predict of the face.

The F0-only ridge (`f0_ridge_`) stands beside every model number, on every corpus (the demo's,
AVSpeech, the real pairs): the clip's median F0 (`s2f.models.pitch.median_f0`: normalised
autocorrelation on voiced frames) is regressed onto the face feature with the same closed-form
ridge as the oracle (`scores.StreamedRidge`), fitted on the train role's clips only and applied
to the scored role's. A model that does not beat it has learnt pitch, and pitch is mostly
gender. Input: log F0 (pitch perception and the male/female gap are multiplicative); a clip
with no voiced frame takes the train median, and how many did is kept as a metric.

The all-statistic acoustic ridge (`acoustic_ridge_`) does the same from every statistic of
`s2f.media.acoustics` (pitch, intonation range, syllable rate, three formant-band centroids,
periodicity, jitter): what the voice shows of the face without learning. On the demo corpus it
is the bar between "learnt the voice's qualities" and "learnt more than a few measurements";
a statistic no train clip has (unvoiced) is dropped, a missing one takes the train median.

Median F0 and the statistics are measured once per audio file and process (keyed by path, size and mtime): a
pipeline run scores dev and test, for the model and the control, on the same train clips.

    python -m s2f.evaluation.acoustic AUDIO...     # prints each file's median F0
    python -m s2f.media.acoustics AUDIO...         # prints each file's statistics
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from s2f.evaluation.scores import StreamedRidge
from s2f.media.audio import SAMPLE_RATE
from s2f.media.packs import AudioReadError, load_clip_audio
from storage.layout import audio_file_of


@lru_cache(maxsize=1 << 20)
def _measured(path: str, size: int, mtime_ns: int) -> tuple[float, ...]:
    """(median F0, *ACOUSTIC_STATISTICS) of one clip's audio (a resolved key: pack member or
    FLAC; `size`, `mtime_ns`: of the file holding it): decoded once for both baselines."""
    from s2f.media.acoustics import acoustic_statistics
    from s2f.models.pitch import median_f0

    wave = load_clip_audio(path)
    return (median_f0(wave, SAMPLE_RATE), *acoustic_statistics(wave, SAMPLE_RATE).tolist())


def _measured_of(paths: Sequence[Path | str]) -> np.ndarray:
    """`_measured` of each clip (rows); NaN rows for clips whose audio is gone or unreadable."""
    from s2f.media.acoustics import ACOUSTIC_STATISTICS

    out = np.full((len(paths), 1 + len(ACOUSTIC_STATISTICS)), np.nan)
    for n, path in enumerate(paths):
        try:
            st = audio_file_of(path).stat()
            out[n] = _measured(str(path), st.st_size, st.st_mtime_ns)
        except (OSError, AudioReadError):
            continue
    return out


def median_f0_of(paths: Sequence[Path | str]) -> np.ndarray:
    """Median F0 (Hz) of each audio file, NaN where no frame is voiced or the file is gone."""
    return _measured_of(paths)[:, 0]


def acoustic_statistics_of(paths: Sequence[Path | str]) -> np.ndarray:
    """`s2f.media.acoustics.ACOUSTIC_STATISTICS` of each audio file (rows; NaN where a statistic
    is undefined or the file is gone)."""
    return _measured_of(paths)[:, 1:]


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


class AcousticRidge:
    """The all-statistic acoustic ridge, fitted on train: the statistics of
    `s2f.media.acoustics` → face feature. Statistics finite on fewer than `MIN_VOICED_TRAIN`
    train clips are dropped; a missing value takes that statistic's train median. The design
    is held; the train features are added in blocks (`add`, as `scores.StreamedRidge`)."""

    def __init__(self, train_stats: np.ndarray) -> None:
        finite = np.isfinite(train_stats)
        self.keep = finite.sum(axis=0) >= MIN_VOICED_TRAIN
        if not self.keep.any():
            raise ValueError("no acoustic statistic is defined on two train clips")
        self.fill = np.array([np.median(train_stats[finite[:, j], j])
                              for j in np.nonzero(self.keep)[0]])
        self.ridge = StreamedRidge(self.design(train_stats))

    def design(self, stats: np.ndarray) -> np.ndarray:
        x = stats[:, self.keep]
        return np.where(np.isfinite(x), x, self.fill)

    def add(self, rows: np.ndarray, features: np.ndarray) -> None:
        self.ridge.add(rows, features)

    def predict(self, eval_stats: np.ndarray) -> np.ndarray:
        return self.ridge.predict(self.design(eval_stats))


def acoustic_ridge_fit(train_stats: np.ndarray, eval_stats: np.ndarray
                       ) -> tuple[AcousticRidge | None, dict[str, float]]:
    """The acoustic ridge to fit (None when no statistic is defined on `MIN_VOICED_TRAIN`
    train clips), and what goes into it: statistics kept, scored clips with a missing one."""
    keep = np.isfinite(train_stats).sum(axis=0) >= MIN_VOICED_TRAIN
    info = {"acoustic_ridge_statistics": float(keep.sum()),
            "acoustic_ridge_eval_incomplete":
                float((~np.isfinite(eval_stats[:, keep])).any(axis=1).sum())}
    if not keep.any():
        return None, info
    return AcousticRidge(train_stats), info


def acoustic_ridge(train_stats: np.ndarray, train_features: np.ndarray, eval_stats: np.ndarray
                   ) -> tuple[np.ndarray | None, dict[str, float]]:
    """The acoustic ridge's prediction for each scored clip, fitted on train only with every
    train feature at once (`acoustic_ridge_fit` adds them in blocks); None as there."""
    fit, info = acoustic_ridge_fit(train_stats, eval_stats)
    if fit is None:
        return None, info
    fit.add(np.arange(len(train_stats)), train_features)
    return fit.predict(eval_stats), info


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path, f0 in zip(args, median_f0_of(args), strict=True):
        print(f"{path}\t{f0:.1f} Hz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
