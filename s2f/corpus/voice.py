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
from s2f.models.pitch import frame_f0, median_f0  # noqa: F401 (re-exported)

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
