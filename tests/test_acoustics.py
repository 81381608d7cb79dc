"""Acoustic statistics (`s2f.media.acoustics`) on signals whose answer is known, and the
all-statistic acoustic ridge (`s2f.evaluation.acoustic.acoustic_ridge`): train only, gaps.

    pytest tests/test_acoustics.py
"""

from __future__ import annotations

import numpy as np
import pytest

from s2f.evaluation.acoustic import acoustic_ridge
from s2f.media.acoustics import ACOUSTIC_STATISTICS, acoustic_statistics

RATE = 16000


def _voice(f0: float, seconds: float = 3.0, syllables_hz: float = 0.0, noise: float = 0.0,
           wobble: float = 0.0, formant_hz: float = 0.0, seed: int = 0) -> np.ndarray:
    """A harmonic 'voice': F0 with a random wobble (log-F0 SD `wobble` per 10 ms), harmonics
    shaped by one resonance at `formant_hz`, syllable-rate amplitude modulation, white noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    steps = np.repeat(rng.normal(0, wobble, n // 160 + 1), 160)[:n]
    phase = 2 * np.pi * np.cumsum(f0 * np.exp(steps)) / RATE
    wave = np.zeros(n)
    for h in range(1, int(4000 / f0)):
        gain = 1.0 / h if not formant_hz else 1.0 / (1 + ((h * f0 - formant_hz) / 150) ** 2)
        wave += gain * np.sin(h * phase)
    if syllables_hz:
        wave *= 0.5 * (1 - np.cos(2 * np.pi * syllables_hz * np.arange(n) / RATE))
    wave /= np.abs(wave).max()
    return wave + noise * rng.normal(size=n)


def _stat(wave: np.ndarray, name: str) -> float:
    return float(acoustic_statistics(wave, RATE)[ACOUSTIC_STATISTICS.index(name)])


def test_pitch_statistics_read_f0_and_its_wobble() -> None:
    assert np.exp(_stat(_voice(120.0), "log_f0")) == pytest.approx(120.0, rel=0.02)
    assert np.exp(_stat(_voice(220.0), "log_f0")) == pytest.approx(220.0, rel=0.02)
    steady, wobbly = _voice(150.0, wobble=0.002), _voice(150.0, wobble=0.03)
    assert _stat(wobbly, "log_jitter") > _stat(steady, "log_jitter") + 1.0
    assert _stat(wobbly, "log_f0_range") > _stat(steady, "log_f0_range")


def test_syllable_rate_counts_envelope_peaks() -> None:
    slow, fast = _voice(130.0, 4.0, syllables_hz=3.0), _voice(130.0, 4.0, syllables_hz=6.0)
    assert _stat(slow, "syllable_rate") == pytest.approx(3.0, rel=0.25)
    assert _stat(fast, "syllable_rate") == pytest.approx(6.0, rel=0.25)


def test_band_centroids_follow_a_resonance_and_noise_lowers_periodicity() -> None:
    low, high = _voice(110.0, formant_hz=1300.0), _voice(110.0, formant_hz=2100.0)
    assert _stat(high, "f2_centroid_hz") > _stat(low, "f2_centroid_hz") + 300
    clean, breathy = _voice(140.0, noise=0.01), _voice(140.0, noise=0.3)
    assert _stat(clean, "periodicity") > 0.9
    assert _stat(breathy, "periodicity") < _stat(clean, "periodicity") - 0.1


def test_silence_has_no_pitch_statistics() -> None:
    stats = acoustic_statistics(np.zeros(RATE), RATE)
    assert stats.shape == (len(ACOUSTIC_STATISTICS),)
    for name in ("log_f0", "log_f0_range", "log_jitter"):
        assert np.isnan(stats[ACOUSTIC_STATISTICS.index(name)])


def test_acoustic_ridge_is_fitted_on_train_only_and_fills_gaps() -> None:
    rng = np.random.default_rng(0)
    stats = rng.normal(size=(80, 4))
    stats[:, 3] = np.nan  # a statistic no clip has: dropped
    feats = stats[:, :3] @ rng.normal(size=(3, 6)) + rng.normal(0, 0.01, (80, 6))
    train, held = slice(0, 60), slice(60, 80)
    pred, info = acoustic_ridge(stats[train], feats[train], stats[held])
    assert pred is not None and pred.shape == (20, 6)
    assert info["acoustic_ridge_statistics"] == 3 and info["acoustic_ridge_eval_incomplete"] == 0
    assert np.abs(pred - feats[held]).mean() < 0.2 * np.abs(feats[train].mean(0) - feats[held]).mean()
    # The fit reads train only: other scored clips, the same prediction for the same input.
    gap = stats[60:62].copy()
    gap[1, 0] = np.nan
    again, info = acoustic_ridge(stats[train], feats[train], gap)
    assert np.allclose(again[0], pred[0]) and info["acoustic_ridge_eval_incomplete"] == 1
    filled = gap[1:2].copy()
    filled[0, 0] = np.median(stats[train, 0])  # a missing value takes the train median
    one, _ = acoustic_ridge(stats[train], feats[train], filled)
    assert np.allclose(again[1], one[0])
    none, info = acoustic_ridge(np.full((5, 4), np.nan), feats[:5], stats[:2])
    assert none is None and info["acoustic_ridge_statistics"] == 0
