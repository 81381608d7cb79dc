"""The corpus's ground truth: each identity's voice is a fixed function of its face.

`voice_parameters(face_embedding)` maps the dlib ResNet 128-D descriptor of an identity's face
to the espeak-ng settings of its voice. Nothing else (no random draw, no identity index) enters:

    p_k = e · u_k                    k ∈ {pitch, range, rate, variant}
    z_k = (p_k − m_k) / s_k
    q_k = Φ(z_k)                     Φ: standard normal CDF, so q_k ∈ (0, 1), increasing in p_k

    pitch_hz     = 85 · (255 / 85) ** q_pitch            target median F0, log-uniform 85..255 Hz
    group        = female variants if q_pitch ≥ 0.5 else male variants
    variant      = group[min(⌊q_variant · len(group)⌋, len(group) − 1)]
    espeak_pitch = the espeak pitch setting (0..100) at which `variant` speaks with median F0
                   pitch_hz (interpolated in the measured F0 table, log-F0 linear), clipped
    pitch_range  = round(20 + 70 · q_range)              espeak intonation range, 0..100
    rate_wpm     = round(130 + 70 · q_rate)              words per minute

u_k are the first four principal directions of the descriptors of the 68 real faces in
`s2f/assets/faces` (unit vectors; signs such that the faces of bald_guys.jpg, all adult men,
project below the mean), m_k and s_k the mean and standard deviation of p_k over morphs drawn
as the corpus draws them; all constants are in `s2f.corpus.voice_constants`, written by
`python -m s2f.corpus.calibrate`. The pitch projection is the real faces' first principal
direction, the one with the widest spread.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from s2f.corpus import voice_constants as C

PROJECTIONS = ("pitch", "range", "rate", "variant")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
LANGUAGE = "en"
PITCH_HZ_MIN, PITCH_HZ_MAX = 85.0, 255.0
RANGE_MIN, RANGE_SPAN = 20, 70
RATE_MIN, RATE_SPAN = 130, 70


@dataclass(frozen=True)
class VoiceParams:
    voice: str               # espeak-ng voice name, language+variant (e.g. "en+f2")
    variant: str             # espeak-ng voice variant (formant set), e.g. "f2"
    group: str               # "male" or "female" variant family (from the pitch projection)
    pitch_hz: float          # target median F0 in Hz: the voice's pitch parameter
    espeak_pitch: int        # espeak pitch setting 0..100 that gives pitch_hz with `variant`
    pitch_range: int         # espeak intonation range setting 0..100
    rate_wpm: int            # speaking rate, words per minute
    proj_pitch: float        # p_k: raw projections of the face embedding
    proj_range: float
    proj_rate: float
    proj_variant: float
    z_pitch: float           # z_k: standardised projections
    z_range: float
    z_rate: float
    z_variant: float

    def as_dict(self) -> dict:
        return asdict(self)


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def projections(face_embedding: np.ndarray) -> np.ndarray:
    """p_k = e · u_k for k in PROJECTIONS (float64)."""
    e = np.asarray(face_embedding, np.float64).reshape(-1)
    if e.shape != (len(C.DIRECTIONS[0]),):
        raise ValueError(f"expected a {len(C.DIRECTIONS[0])}-D face embedding, got {e.shape}")
    return np.asarray(C.DIRECTIONS, np.float64) @ e


def espeak_pitch_for(variant: str, pitch_hz: float) -> int:
    """The espeak pitch setting at which `variant` speaks with median F0 `pitch_hz`."""
    settings = np.asarray(C.F0_TABLE_SETTINGS, np.float64)
    f0 = np.log(np.asarray(C.F0_TABLE[variant], np.float64))
    return int(np.clip(round(float(np.interp(math.log(pitch_hz), f0, settings))), 0, 100))


def voice_parameters(face_embedding: np.ndarray) -> VoiceParams:
    """The voice of the identity whose face descriptor is `face_embedding` (see module doc)."""
    p = projections(face_embedding)
    z = (p - np.asarray(C.OFFSETS, np.float64)) / np.asarray(C.SCALES, np.float64)
    q = dict(zip(PROJECTIONS, (_phi(float(v)) for v in z), strict=True))
    pitch_hz = PITCH_HZ_MIN * (PITCH_HZ_MAX / PITCH_HZ_MIN) ** q["pitch"]
    group, variants = ("female", FEMALE_VARIANTS) if q["pitch"] >= 0.5 else ("male", MALE_VARIANTS)
    variant = variants[min(int(q["variant"] * len(variants)), len(variants) - 1)]
    return VoiceParams(
        voice=f"{LANGUAGE}+{variant}", variant=variant, group=group,
        pitch_hz=float(pitch_hz), espeak_pitch=espeak_pitch_for(variant, pitch_hz),
        pitch_range=round(RANGE_MIN + RANGE_SPAN * q["range"]),
        rate_wpm=round(RATE_MIN + RATE_SPAN * q["rate"]),
        **{f"proj_{k}": float(v) for k, v in zip(PROJECTIONS, p, strict=True)},
        **{f"z_{k}": float(v) for k, v in zip(PROJECTIONS, z, strict=True)},
    )


# -- pitch measurement ---------------------------------------------------------------------------

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
