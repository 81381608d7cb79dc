"""The corpus's ground truth: each identity's voice is a fixed function of its face.

`voice_parameters(face_embedding)` maps the dlib ResNet 128-D descriptor of an identity's face
to the settings of its espeak-ng voice. Nothing else (no random draw, no identity index) enters:

    p_k = e · u_k            k ∈ PROJECTIONS (pitch, range, rate, f1, f2, f3, breath, flutter)
    z_k = (p_k − m_k) / s_k
    q_k = Φ(z_k)             Φ: standard normal CDF, so q_k ∈ (0, 1), increasing in p_k

and each setting is monotone in its own q_k only (no categorical bucket):

    pitch_hz      = 85 · (255 / 85) ** q_pitch       target median F0, log-uniform 85..255 Hz
    pitch_spread  = 1.15 + 0.8 · q_range             top / base of the voice's pitch line
    rate_wpm      = round(130 + 70 · q_rate)         words per minute
    f1_pct        = round(82 + 36 · q_f1)            first formant's frequency, % of espeak's
    f2_pct        = round(82 + 36 · q_f2)            second formant's
    f3_pct        = round(82 + 36 · q_f3)            third to fifth formants'
    breath        = round(45 · q_breath)             breath noise at every formant (0 = none)
    flutter       = round(40 · q_flutter)            F0 wobble

The voice is a voice file (`voice_file_text`) espeak-ng loads by path: the English language,
a pitch line `pitch <base> <top>` in Hz with base = pitch_hz / F0_OVER_BASE(pitch_spread) and
top = base · pitch_spread (F0_OVER_BASE is measured: the median F0 espeak-ng speaks with, over
the base, at each spread), formant lines, breath and flutter. espeak's own pitch and range
parameters stay at 50 (the voice file's).

u_k are the first eight principal directions of the descriptors of the 68 real faces in
`s2f/assets/faces` (unit vectors; signs such that the faces of bald_guys.jpg, all adult men,
project below the mean), m_k and s_k the mean and standard deviation of p_k over morphs drawn
as the corpus draws them; all constants are in `s2f.corpus.voice_constants`, written by
`python -m s2f.corpus.calibrate`. The pitch projection is the real faces' first principal
direction, the one with the widest spread. How each setting was verified in the audio: the
data card and `tests/test_corpus.py` (each setting moves its own `s2f.media.acoustics`
statistic).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from s2f.corpus import voice_constants as C
from s2f.models.pitch import frame_f0, median_f0  # noqa: F401 (re-exported)

PROJECTIONS = ("pitch", "range", "rate", "f1", "f2", "f3", "breath", "flutter")
LANGUAGE = "en"
PITCH_HZ_MIN, PITCH_HZ_MAX = 85.0, 255.0
SPREAD_MIN, SPREAD_SPAN = 1.15, 0.8
RATE_MIN, RATE_SPAN = 130, 70
FORMANT_PCT_MIN, FORMANT_PCT_SPAN = 82, 36
BREATH_MAX = 45
FLUTTER_MAX = 40
# (setting, projection, what it is, the acoustics statistic it moves): the data card's table
SETTINGS = (
    ("pitch_hz", "pitch", "target median F0 (Hz)", "log_f0"),
    ("pitch_spread", "range", "intonation range: top / base of the pitch line", "log_f0_range"),
    ("rate_wpm", "rate", "speaking rate (words per minute)", "syllable_rate"),
    ("f1_pct", "f1", "first formant frequency (% of espeak's)", "f1_centroid_hz"),
    ("f2_pct", "f2", "second formant frequency (%)", "f2_centroid_hz"),
    ("f3_pct", "f3", "third to fifth formant frequencies (%)", "f3_centroid_hz"),
    ("breath", "breath", "breath noise at the formants (0-45)", "periodicity"),
    ("flutter", "flutter", "F0 flutter (0-40)", "log_jitter"),
)


@dataclass(frozen=True)
class VoiceParams:
    pitch_hz: float          # target median F0 in Hz
    pitch_spread: float      # top / base of the pitch line
    pitch_base_hz: int       # the voice file's pitch line, Hz
    pitch_top_hz: int
    rate_wpm: int            # speaking rate, words per minute
    f1_pct: int              # formant frequencies, % of espeak's default voice
    f2_pct: int
    f3_pct: int              # formants 3, 4 and 5
    breath: int              # breath noise amplitude at every formant
    flutter: int             # F0 flutter
    proj_pitch: float        # p_k: raw projections of the face embedding
    proj_range: float
    proj_rate: float
    proj_f1: float
    proj_f2: float
    proj_f3: float
    proj_breath: float
    proj_flutter: float
    z_pitch: float           # z_k: standardised projections
    z_range: float
    z_rate: float
    z_f1: float
    z_f2: float
    z_f3: float
    z_breath: float
    z_flutter: float

    def as_dict(self) -> dict:
        return asdict(self)

    def voice_file_text(self) -> str:
        """The espeak-ng voice file of this voice (see the module doc)."""
        return voice_file_text(self.pitch_base_hz, self.pitch_top_hz, self.f1_pct, self.f2_pct,
                               self.f3_pct, self.breath, self.flutter)


def voice_file_text(base_hz: int, top_hz: int, f1_pct: int = 100, f2_pct: int = 100,
                    f3_pct: int = 100, breath: int = 0, flutter: int = 0) -> str:
    """An English espeak-ng voice file: pitch line, formant frequencies (formants 3-5 share
    f3_pct), breath at every formant, flutter."""
    formants = [f"formant {n} {pct} 100 100" for n, pct in
                ((1, f1_pct), (2, f2_pct), (3, f3_pct), (4, f3_pct), (5, f3_pct))]
    return "\n".join([
        "name s2f-demo", f"language {LANGUAGE} 2", "tunes s1 c1 q1 e1",
        f"pitch {base_hz} {top_hz}", "formant 0 100 100 100", *formants,
        "breath " + " ".join([str(breath)] * 8), f"flutter {flutter}", ""])


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def projections(face_embedding: np.ndarray) -> np.ndarray:
    """p_k = e · u_k for k in PROJECTIONS (float64)."""
    e = np.asarray(face_embedding, np.float64).reshape(-1)
    if e.shape != (len(C.DIRECTIONS[0]),):
        raise ValueError(f"expected a {len(C.DIRECTIONS[0])}-D face embedding, got {e.shape}")
    return np.asarray(C.DIRECTIONS, np.float64) @ e


def pitch_line(pitch_hz: float, spread: float) -> tuple[int, int]:
    """The voice file's pitch line (base, top) in Hz at which espeak-ng speaks with median F0
    `pitch_hz` (interpolated in the measured F0_OVER_BASE table) and top / base `spread`."""
    ratio = float(np.interp(spread, C.SPREAD_TABLE, C.F0_OVER_BASE))
    base = max(round(pitch_hz / ratio), 20)
    return base, max(round(base * spread), base + 1)


def voice_parameters(face_embedding: np.ndarray) -> VoiceParams:
    """The voice of the identity whose face descriptor is `face_embedding` (see module doc)."""
    p = projections(face_embedding)
    z = (p - np.asarray(C.OFFSETS, np.float64)) / np.asarray(C.SCALES, np.float64)
    q = dict(zip(PROJECTIONS, (_phi(float(v)) for v in z), strict=True))
    pitch_hz = PITCH_HZ_MIN * (PITCH_HZ_MAX / PITCH_HZ_MIN) ** q["pitch"]
    spread = SPREAD_MIN + SPREAD_SPAN * q["range"]
    base, top = pitch_line(pitch_hz, spread)
    return VoiceParams(
        pitch_hz=float(pitch_hz), pitch_spread=float(spread), pitch_base_hz=base,
        pitch_top_hz=top, rate_wpm=round(RATE_MIN + RATE_SPAN * q["rate"]),
        **{f"{k}_pct": round(FORMANT_PCT_MIN + FORMANT_PCT_SPAN * q[k]) for k in ("f1", "f2", "f3")},
        breath=round(BREATH_MAX * q["breath"]), flutter=round(FLUTTER_MAX * q["flutter"]),
        **{f"proj_{k}": float(v) for k, v in zip(PROJECTIONS, p, strict=True)},
        **{f"z_{k}": float(v) for k, v in zip(PROJECTIONS, z, strict=True)},
    )
