"""Acoustic statistics of a speech wave: what a voice shows without a model.

    python -m s2f.media.acoustics AUDIO...     # prints each file's statistics

`acoustic_statistics(wave, rate)` measures, on the wave alone, one number per quality a voice
can vary in: the statistics the all-statistic acoustic ridge (`s2f.evaluation.acoustic`) maps
to the face, and the measurements by which the demo corpus's voice parameters are checked in
its audio (each parameter must move its own statistic: `tests/test_corpus.py`).

| name              | measures                         | how                                         |
|-------------------|----------------------------------|---------------------------------------------|
| log_f0            | pitch                            | log of the median F0 of voiced frames       |
| log_f0_range      | intonation range                 | 90th − 10th percentile of log F0 (voiced)   |
| syllable_rate     | speaking rate                    | energy-envelope peaks per second of speech  |
| f1_centroid_hz    | first formant                    | spectral centroid of loud frames, 200-1000 Hz |
| f2_centroid_hz    | second formant                   | the same, 900-2600 Hz                       |
| f3_centroid_hz    | third and higher formants        | the same, 2400-4500 Hz                      |
| periodicity       | breathiness (noise in the voice) | median autocorrelation peak of loud frames  |
| log_jitter        | pitch flutter (F0 wobble)        | log median |Δ log F0| of adjacent frames    |

F0 is `s2f.models.pitch.frame_f0` (the F0 ridge's measurement). The band centroids follow the
formants because a formant moves the spectral envelope under the harmonics; they are not
formant trackers, but each is monotone in its own formant (measured on espeak-ng voices) and
needs no tuning. A wave with no voiced frame gets NaN for the F0 statistics.
"""

from __future__ import annotations

import sys

import numpy as np

from s2f.models.pitch import frame_f0

ACOUSTIC_STATISTICS = ("log_f0", "log_f0_range", "syllable_rate", "f1_centroid_hz",
                       "f2_centroid_hz", "f3_centroid_hz", "periodicity", "log_jitter")
FORMANT_BANDS_HZ = ((200.0, 1000.0), (900.0, 2600.0), (2400.0, 4500.0))
FFT_SIZE, FFT_HOP = 1024, 256  # ~46 ms frames at 22 kHz: a few harmonics wide at low F0
LOUD_QUANTILE = 50  # frames louder than the wave's median energy carry the voice's spectrum
ENVELOPE_HOP_S = 0.01
MIN_SYLLABLE_GAP_S = 0.1  # syllables are ≥ 100 ms apart even in fast speech


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    if len(x) < size:
        return np.zeros((0, size))
    return np.lib.stride_tricks.sliding_window_view(x, size)[::hop]


def band_centroids(x: np.ndarray, rate: int) -> list[float]:
    """Spectral centroid (Hz) of the loud frames' mean power spectrum in each formant band."""
    frames = _frames(x, FFT_SIZE, FFT_HOP)
    if not len(frames):
        return [float("nan")] * len(FORMANT_BANDS_HZ)
    power = np.abs(np.fft.rfft(frames * np.hanning(FFT_SIZE), axis=1)) ** 2
    energy = power.sum(axis=1)
    spectrum = power[energy >= np.percentile(energy, LOUD_QUANTILE)].mean(axis=0)
    freqs = np.fft.rfftfreq(FFT_SIZE, 1.0 / rate)
    out = []
    for lo, hi in FORMANT_BANDS_HZ:
        band = (freqs >= lo) & (freqs < hi)
        total = spectrum[band].sum()
        out.append(float((freqs[band] * spectrum[band]).sum() / total) if total > 0
                   else float("nan"))
    return out


def periodicity(x: np.ndarray, rate: int, fmin: float = 60.0, fmax: float = 420.0) -> float:
    """Median over loud 40 ms frames of the best normalised autocorrelation in the F0 lag range:
    1 for a clean periodic voice, lower as breath noise is mixed in."""
    size, hop = int(0.04 * rate), int(0.01 * rate)
    frames = _frames(x, size, hop)
    if not len(frames):
        return float("nan")
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames ** 2).sum(axis=1)
    frames = frames[energy >= np.percentile(energy, 60)]
    spec = np.fft.rfft(frames, n=2 * size, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :size]
    # unbiased: a lag-L product sums size − L terms; else a long period reads less periodic
    ac = ac / np.maximum(ac[:, :1], 1e-12) * size / (size - np.arange(size))
    lo, hi = int(rate / fmax), int(rate / fmin)
    return float(np.median(ac[:, lo:hi].max(axis=1)))


def syllable_rate(x: np.ndarray, rate: int) -> float:
    """Peaks of the smoothed energy envelope (syllable nuclei) per second of speech, speech
    being the frames within 30 dB of the loudest."""
    hop = int(ENVELOPE_HOP_S * rate)
    frames = _frames(x, 2 * hop, hop)
    if len(frames) < 3:
        return float("nan")
    env = np.sqrt((frames ** 2).mean(axis=1))
    kernel = np.hanning(9)
    env = np.convolve(env, kernel / kernel.sum(), mode="same")
    speech = env > env.max() * 10 ** (-30 / 20)
    seconds = speech.sum() * ENVELOPE_HOP_S
    if seconds <= 0:
        return float("nan")
    peak = (env[1:-1] > env[:-2]) & (env[1:-1] >= env[2:]) & (env[1:-1] > 0.3 * env.max())
    idx = np.nonzero(peak)[0] + 1
    gap = int(MIN_SYLLABLE_GAP_S / ENVELOPE_HOP_S)
    kept: list[int] = []
    for i in idx:  # of peaks closer than a syllable, keep the first
        if not kept or i - kept[-1] >= gap:
            kept.append(int(i))
    return len(kept) / seconds


def acoustic_statistics(wave: np.ndarray, rate: int) -> np.ndarray:
    """The ACOUSTIC_STATISTICS of `wave` (mono samples at `rate` Hz), float64, in that order."""
    x = np.asarray(wave, np.float64).reshape(-1)
    f0 = frame_f0(x, rate)
    if len(f0):
        log_f0 = np.log(f0)
        jitter = np.median(np.abs(np.diff(log_f0))) if len(f0) > 1 else np.nan
        spread = np.percentile(log_f0, 90) - np.percentile(log_f0, 10)  # robust to octave slips
        pitch = [float(np.median(log_f0)), float(spread),
                 float(np.log(max(jitter, 1e-5)))]
    else:
        pitch = [float("nan")] * 3
    return np.asarray([pitch[0], pitch[1], syllable_rate(x, rate), *band_centroids(x, rate),
                       periodicity(x, rate), pitch[2]], np.float64)


def main(argv: list[str] | None = None) -> int:
    from s2f.media.audio import SAMPLE_RATE, load_audio

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__.strip().splitlines()[2])
        return 2
    print("file\t" + "\t".join(ACOUSTIC_STATISTICS))
    for path in args:
        stats = acoustic_statistics(load_audio(path), SAMPLE_RATE)
        print(path + "\t" + "\t".join(f"{v:.4g}" for v in stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
