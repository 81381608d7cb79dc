"""The ``ge2e`` voice front-end: a pretrained GE2E speaker encoder and a trained head to the face
feature.

The speaker encoder is resemblyzer's (Apache-2.0; Wan et al. 2018, "Generalized End-to-End Loss
for Speaker Verification", as implemented by C. Jemine): a 3-layer LSTM (hidden 256) over 40
mel bands, its last hidden state → Linear 256 → ReLU → L2 normalisation. Only the weights file
of the installed wheel is used (`resemblyzer/pretrained.pt`, found with
`importlib.util.find_spec`, loaded with ``torch.load(weights_only=True)``: tensors only, no
code is unpickled and resemblyzer's modules are never imported, so its heavy dependencies
(librosa, webrtcvad) are not needed). Its audio preprocessing is re-implemented here in torch,
to match `resemblyzer.audio` and `VoiceEncoder.embed_utterance`:

- 16 kHz; the volume raised (never lowered) to −30 dBFS (`normalize_volume`, increase only);
- mel: ``librosa.feature.melspectrogram(n_fft=400, hop_length=160, n_mels=40)``: a periodic
  Hann window of 400 samples, centred frames with zero padding (librosa ≥ 0.10's default
  ``pad_mode="constant"``), power spectrum (not log), Slaney mel filterbank with Slaney area
  normalisation (`mel_filterbank`, a numpy re-implementation of ``librosa.filters.mel``);
- partial utterances of 160 frames (1.6 s), one every round(16000 / 1.3 / 160) = 77 frames,
  the last kept if it covers ≥ 75 % of a partial (the wave zero-padded to its end); each
  partial is embedded, the partial embeddings are averaged and L2-normalised.

Not re-implemented: resemblyzer's long-silence trimming (webrtcvad); the clips are already
cut to speech. Measured against resemblyzer 0.1.4 + librosa 0.11 (`tests/test_voice_frontends.py`
holds golden values): see the test for the tolerances.

`Ge2eVoiceEncoder` takes the 16 kHz wave B×N itself (`takes_waves`), not the paper's
spectrogram: embedding (frozen unless ``finetune``), with ``f0_input`` the wave's standardised
log median F0 appended (`s2f.models.frontend.F0Input`: 257 inputs) → MLP head (``head_width``,
depth 2) → optional target scaling and activation → B×D. Registered models hold the encoder's weights
in their own safetensors file, so loading one needs neither resemblyzer nor the network.

    python -m s2f.models.ge2e            # loads the weights, embeds 6 s of a tone, times it
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from s2f.models.frontend import F0Input, TargetScaler, window_average

SAMPLE_RATE = 16000
N_FFT = 400                 # 25 ms window
HOP = 160                   # 10 ms hop
N_MELS = 40
PARTIAL_FRAMES = 160        # 1.6 s partial utterances
PARTIAL_RATE = 1.3          # partials per second (embed_utterance's default)
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
HIDDEN = 256
EMBEDDING_DIM = 256
LAYERS = 3

GE2E_PACKAGE = "resemblyzer"
GE2E_VERSION = "0.1.4"
GE2E_WEIGHTS_FILE = "pretrained.pt"
GE2E_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
# What its authors say it was trained on. The wheel's README does not say; Resemblyzer's issue
# tracker (resemble-ai/Resemblyzer#76) notes conflicting answers (VoxCeleb 1+2 + LibriSpeech
# other in #3/#8, VoxCeleb2 in #32); the author's statement for the Real-Time-Voice-Cloning
# encoder it ships (CorentinJ/Real-Time-Voice-Cloning#1032) is the one quoted.
GE2E_TRAINED_ON = (
    "speech only, no faces: per its author (C. Jemine, Real-Time-Voice-Cloning issue #1032) the "
    "training sets of LibriSpeech, VoxCeleb1 (dev A-D) and VoxCeleb2, 3,201 h from 8,371 "
    "speakers; Resemblyzer's own README does not say and its issue #76 notes conflicting "
    "answers. VoxCeleb speakers (including those of a VoxCeleb-derived test set) may have "
    "been heard by the speaker encoder, never with their faces.")


class Ge2eWeightsMissing(FileNotFoundError):
    """resemblyzer's wheel (which holds the pretrained weights) is not installed."""


def ge2e_weights_path() -> Path:
    """`resemblyzer/pretrained.pt` of the installed wheel, located without importing it."""
    spec = importlib.util.find_spec(GE2E_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / GE2E_WEIGHTS_FILE
        if path.is_file():
            return path
    raise Ge2eWeightsMissing(
        f"the GE2E weights ship in the {GE2E_PACKAGE} wheel: pip install --no-deps "
        f"{GE2E_PACKAGE}=={GE2E_VERSION} (scripts/setup.sh does; only its weights file is used)")


def ge2e_provenance(path: Path | None = None) -> dict[str, str]:
    """Where the pretrained weights come from: package, version, file, SHA-256, training data."""
    from importlib.metadata import PackageNotFoundError, version

    path = path or ge2e_weights_path()
    try:
        installed = version(GE2E_PACKAGE)
    except PackageNotFoundError:
        installed = "unknown"
    return {"ge2e_package": GE2E_PACKAGE, "ge2e_version": installed,
            "ge2e_weights_file": f"{GE2E_PACKAGE}/{GE2E_WEIGHTS_FILE}",
            "ge2e_weights_sha256": _sha256(path), "ge2e_license": "Apache-2.0",
            "ge2e_trained_on": GE2E_TRAINED_ON}


@lru_cache(maxsize=4)
def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_ge2e_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The speaker encoder's tensors (`lstm.*`, `linear.*`), loaded with weights_only=True:
    the file is a pickle, and weights_only unpickles tensors and plain containers only. A file
    whose SHA-256 is not the known one is refused."""
    path = path or ge2e_weights_path()
    digest = _sha256(path)
    if digest != GE2E_SHA256:
        raise ValueError(f"{path}: SHA-256 {digest[:12]}… is not resemblyzer {GE2E_VERSION}'s "
                         f"{GE2E_SHA256[:12]}…")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["model_state"]
    return {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}


# -- the mel front-end ------------------------------------------------------------------------

def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear to 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz,
                    min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS
                   ) -> np.ndarray:
    """``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)`` (fmin 0, fmax sr/2, Slaney
    scale and area normalisation), n_mels × (n_fft/2 + 1), float32."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2:n_mels + 2] / fdiff[1:n_mels + 1, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def normalize_volume(waves: torch.Tensor, target_dbfs: float = TARGET_DBFS) -> torch.Tensor:
    """Each wave (B×N) raised to `target_dbfs` RMS if quieter; louder waves are kept as they
    are (resemblyzer's ``normalize_volume(increase_only=True)``)."""
    rms = waves.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-10)
    gain_db = (target_dbfs - 20 * torch.log10(rms)).clamp_min(0.0)
    return waves * torch.pow(10.0, gain_db / 20)


def partial_starts(n_samples: int, rate: float = PARTIAL_RATE,
                   min_coverage: float = MIN_COVERAGE) -> tuple[list[int], int]:
    """(first mel frame of each partial utterance, samples the wave is zero-padded to):
    `VoiceEncoder.compute_partial_slices` of resemblyzer."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SAMPLE_RATE / rate) / HOP))
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    starts = list(range(0, steps, frame_step))
    last = starts[-1] * HOP
    coverage = (n_samples - last) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts, max(n_samples, (starts[-1] + PARTIAL_FRAMES) * HOP)


class MelFrontend(nn.Module):
    """16 kHz waves B×N → power mel spectrogram B×T×40 (T = 1 + N // 160), as
    `resemblyzer.audio.wav_to_mel_spectrogram`."""

    def __init__(self) -> None:
        super().__init__()
        # derived, not learnt: not saved (non-persistent), rebuilt identically on load
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filterbank()), persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(waves.float(), N_FFT, HOP, N_FFT, window=self.window.float(),
                          center=True, pad_mode="constant", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)          # B×201×T
        return torch.einsum("mf,bft->btm", self.filters.float(), power)


class Ge2eSpeakerEncoder(nn.Module):
    """resemblyzer's `VoiceEncoder` network and `embed_utterance`, batched, in torch."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = MelFrontend()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING_DIM)

    def embed_partials(self, mels: torch.Tensor) -> torch.Tensor:
        """Partial utterances P×160×40 → L2-normalised embeddings P×256."""
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """Waves B×N (16 kHz) → utterance embeddings B×256 (L2-normalised). Always in the
        parameters' precision: a bf16 autocast (CUDA training) stops at the head, so the
        pretrained embedding is the one the weights were trained to give."""
        with torch.autocast(waves.device.type, enabled=False):
            return self._embed(waves)

    def _embed(self, waves: torch.Tensor) -> torch.Tensor:
        b, n = waves.shape
        starts, padded = partial_starts(n)
        waves = normalize_volume(waves.float())
        if padded > n:
            waves = nn.functional.pad(waves, (0, padded - n))
        mel = self.mel(waves)                                  # B×T×40
        idx = torch.tensor(starts, device=mel.device)[:, None] + torch.arange(
            PARTIAL_FRAMES, device=mel.device)
        partials = mel[:, idx]                                 # B×P×160×40
        param = next(self.lstm.parameters())
        emb = self.embed_partials(partials.reshape(-1, PARTIAL_FRAMES, N_MELS).to(param.dtype))
        mean = emb.view(b, len(starts), -1).mean(dim=1)
        return mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Ge2eConfig:
    """Every knob of the ge2e front-end (what the registry's config.json holds)."""

    out_dim: int = 128
    head_width: int = 256
    finetune: bool = False
    seconds: float = 3.0                      # training windows; inference's default length
    final_activation: Literal["relu", "none"] = "none"
    standardized: bool = False                # a TargetScaler after the head
    test_window_seconds: float | None = None  # eval: average predictions over such windows
    f0_input: bool = False                    # the wave's median F0 as one more head input
    weights_sha256: str = GE2E_SHA256         # the pretrained encoder it started from

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ge2eConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TypeError(f"unknown Ge2eConfig fields: {sorted(unknown)}")
        return cls(**d)


class Ge2eVoiceEncoder(nn.Module):
    """16 kHz waves B×N → predicted face feature B×D: GE2E embedding → MLP head."""

    takes_waves = True  # callers pass the wave, not the paper's spectrogram

    def __init__(self, cfg: Ge2eConfig, pretrained: bool = True,
                 weights: Path | None = None) -> None:
        """`pretrained`: load resemblyzer's weights into the speaker encoder (training); the
        registry builds with False and loads the model's own safetensors instead."""
        super().__init__()
        self.cfg = cfg
        self.speaker = Ge2eSpeakerEncoder()
        if pretrained:
            self.speaker.load_state_dict(load_ge2e_state(weights))
        if not cfg.finetune:
            self.speaker.requires_grad_(False)
        self.f0 = F0Input(SAMPLE_RATE) if cfg.f0_input else None
        head_in = EMBEDDING_DIM + (1 if self.f0 is not None else 0)
        self.head = nn.Sequential(nn.Linear(head_in, cfg.head_width), nn.ReLU(inplace=True),
                                  nn.Linear(cfg.head_width, cfg.out_dim))
        self.scaler = TargetScaler(cfg.out_dim) if cfg.standardized else None

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        """The speaker embedding B×256 (no gradient into the encoder unless `finetune`)."""
        with torch.set_grad_enabled(self.cfg.finetune and torch.is_grad_enabled()):
            return self.speaker(waves)

    def _predict(self, waves: torch.Tensor) -> torch.Tensor:
        x = self.embed(waves).to(self.head[0].weight.dtype)
        if self.f0 is not None:
            x = torch.cat([x, self.f0(waves).to(x.dtype)], dim=1)
        x = self.head(x)
        if self.scaler is not None:
            x = self.scaler(x)
        return torch.relu(x) if self.cfg.final_activation == "relu" else x

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if not self.training and self.cfg.test_window_seconds:
            window = round(self.cfg.test_window_seconds * SAMPLE_RATE)
            return window_average(self._predict, waves, window, dim=1)
        return self._predict(waves)


def main() -> int:
    enc = Ge2eSpeakerEncoder()
    enc.load_state_dict(load_ge2e_state())
    t = torch.arange(6 * SAMPLE_RATE) / SAMPLE_RATE
    wave = (0.1 * torch.sin(2 * torch.pi * 150 * t))[None]
    with torch.no_grad():
        enc(wave)
        t0 = time.perf_counter()
        emb = enc(wave)
    print(f"embedding {tuple(emb.shape)}, norm {float(emb.norm()):.4f}, "
          f"{(time.perf_counter() - t0) * 1e3:.0f} ms for 6 s; {ge2e_provenance()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
