"""Light audio augmentation of the training waveforms (issue 28's small-data options).

Off by default; `TrainConfig.augment()` builds it from three fields, each drawn per training
sample (uniformly in its range):

- speed (`augment_speed`, e.g. ``[0.9, 1.1]``): the whole clip resampled by the factor (linear
  interpolation), before the window is cut: faster and higher-pitched above 1. Linear
  interpolation leaks a little energy past 8 kHz / factor back below it; at ±10 % and 16 kHz
  speech that is small, and it needs no filter design;
- gain (`augment_gain_db`, ``g``: a gain in [−g, g] dB) on the window;
- noise (`augment_snr_db`, e.g. ``[20, 40]``): white Gaussian noise added to the window at that
  signal-to-noise ratio (relative to the window's own power; a silent window stays silent).

Only the training stream augments (`s2f.train.data.PairStream` with ``augment``, and only when
it loads a training epoch); validation, dev, test, evaluation and predict never do. Every draw
comes from (seed, epoch, the pair's position in the index) alone, as the random crops do, so a
run is reproducible, a resumed run sees the same waves, and the waves do not depend on which
loader worker or rank loads them. The draws are made in a fixed order (speed, gain, SNR,
noise), whatever is off, so that turning one on does not change the others.

    python -m s2f.train.augment      # one 1 s tone, augmented under three seeds
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUGMENT_STREAM = 11  # the seed sequence's extra key: augmentation draws never reuse the crops'


@dataclass(frozen=True)
class Augment:
    """What is drawn for each training sample; a range of (1, 1) or 0 dB is off."""

    speed: tuple[float, float] = (1.0, 1.0)
    gain_db: float = 0.0
    snr_db: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.speed
        if not 0 < lo <= hi:
            raise ValueError(f"augment speed range needs 0 < low <= high, got {self.speed}")
        if self.gain_db < 0:
            raise ValueError(f"augment gain is a ± range in dB, >= 0; got {self.gain_db}")
        if self.snr_db is not None and self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"augment SNR range needs low <= high, got {self.snr_db}")

    def rng(self, seed: int, epoch: int, position: int) -> np.random.Generator:
        return np.random.default_rng([seed, epoch, position, AUGMENT_STREAM])

    def before_crop(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The whole clip at a drawn speed (first draw of `rng`)."""
        factor = rng.uniform(*self.speed)
        return speed_perturb(wave, factor) if factor != 1.0 else wave

    def after_crop(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The cut window with a drawn gain and noise (the next draws of `rng`)."""
        gain = rng.uniform(-self.gain_db, self.gain_db)
        snr = rng.uniform(*self.snr_db) if self.snr_db is not None else None
        noise = rng.standard_normal(window.size).astype(np.float32)
        out = window * np.float32(10 ** (gain / 20))
        if snr is not None:
            power = float(np.mean(np.square(out, dtype=np.float64)))
            out = out + noise * np.float32(np.sqrt(power / 10 ** (snr / 10)))
        return out.astype(np.float32, copy=False)


def speed_perturb(wave: np.ndarray, factor: float) -> np.ndarray:
    """`wave` played `factor` times as fast (length / factor samples), linear interpolation."""
    n = wave.size
    m = max(1, int(round(n / factor)))
    positions = np.arange(m, dtype=np.float64) * factor
    return np.interp(positions, np.arange(n), wave).astype(np.float32)


if __name__ == "__main__":
    tone = np.sin(2 * np.pi * 150 * np.arange(16000) / 16000).astype(np.float32)
    aug = Augment(speed=(0.9, 1.1), gain_db=6.0, snr_db=(20.0, 40.0))
    for s in range(3):
        r = aug.rng(s, 0, 0)
        w = aug.after_crop(aug.before_crop(tone, r), r)
        print(f"seed {s}: {w.size} samples, rms {float(np.sqrt(np.mean(w ** 2))):.3f}")
