"""Pitch measurement: the median F0 of a clip, by normalised autocorrelation on voiced frames.

One measurement for the whole project: the demo corpus calibrates its voices with it
(`s2f.corpus.voice`, `s2f.corpus.calibrate`), the evaluation's F0 ridge regresses the face on it
(`s2f.evaluation.acoustic`), and the voice front-end's `f0_input` feeds it to the model's head
(`s2f.models.frontend.F0Input`). It lives in `models` because the model computes it on its own
input (training, evaluation, predict and serving alike) and `models` imports no part below it.

    python -m s2f.models.pitch        # median F0 of a 150 Hz tone with harmonics
"""

from __future__ import annotations

import numpy as np


def frame_f0(wave: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 420.0,
             frame_s: float = 0.04, hop_s: float = 0.01, voicing: float = 0.6) -> np.ndarray:
    """F0 in Hz of every voiced frame, by normalised autocorrelation: frames of 40 ms every
    10 ms, Hann window (its own autocorrelation divided out); a frame is voiced when it is loud
    (energy above a tenth of the 90th percentile) and its best autocorrelation peak in the
    60..420 Hz lag range exceeds 0.6. The shortest-lag peak within 90% of the best is taken
    (guards against octave-down errors), refined by parabolic interpolation."""
    x = np.asarray(wave, np.float64).reshape(-1)
    n, hop = int(frame_s * sample_rate), int(hop_s * sample_rate)
    if len(x) < n:
        return np.zeros(0)
    starts = np.arange(0, len(x) - n + 1, hop)
    win = np.hanning(n)
    frames = x[starts[:, None] + np.arange(n)]
    frames = (frames - frames.mean(1, keepdims=True)) * win
    energy = (frames ** 2).sum(1)
    loud = energy > 0.1 * np.percentile(energy, 90)
    nfft = 1 << (2 * n - 1).bit_length()
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, nfft)) ** 2, nfft)[:, :n]
    ac /= ac[:, :1] + 1e-12
    wac = np.correlate(win, win, "full")[n - 1:]
    ac /= np.maximum(wac / wac[0], 1e-3)
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin)
    seg = ac[:, lo:hi + 1]
    best = seg.argmax(1)
    peak = seg[np.arange(len(seg)), best]
    out = []
    for r in np.nonzero(loud & (peak > voicing))[0]:
        s = seg[r]
        is_peak = (s[1:-1] >= s[:-2]) & (s[1:-1] >= s[2:]) & (s[1:-1] >= 0.9 * peak[r])
        cand = np.nonzero(is_peak)[0] + 1
        b = int(cand[0]) if len(cand) else int(best[r])
        off = 0.0
        if 0 < b < len(s) - 1:
            den = s[b - 1] - 2 * s[b] + s[b + 1]
            off = 0.5 * (s[b - 1] - s[b + 1]) / den if den != 0 else 0.0
        out.append(sample_rate / (lo + b + off))
    return np.asarray(out)


def median_f0(wave: np.ndarray, sample_rate: int) -> float:
    """Median F0 (Hz) over the voiced frames of `wave`; NaN if none is voiced."""
    f0 = frame_f0(wave, sample_rate)
    return float(np.median(f0)) if len(f0) else float("nan")


if __name__ == "__main__":
    t = np.arange(16000) / 16000
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    print(f"{median_f0(tone, 16000):.1f} Hz")
