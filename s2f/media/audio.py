"""Speech input of the voice encoder: FLAC → fixed-length 16 kHz mono → compressed complex STFT.

The paper's input (Oh et al. 2019, §3): up to 6 s of 16 kHz speech, a clip shorter than that
repeated until it is long enough; STFT with a 25 ms Hann window (400 samples), 10 ms hop (160),
no centre padding, each frame zero-padded to 512 → 257 bins; power-law compression
``sgn(S)·|S|^0.3`` applied to the real and imaginary parts separately. 6 s → 598 frames.

The STFT is framed by hand (``unfold(400, 160)`` + ``rfft(n=512)``): ``torch.stft`` with
``win_length=400, n_fft=512, center=False`` frames 512 samples and gives 597 frames.

Window: ``hann_periodic`` (default, ``torch.hann_window(400, periodic=True)``, the usual STFT
choice, as TensorFlow's ``tf.signal.stft`` uses) or ``hann_symmetric`` (``periodic=False``).
Compression: ``real_imag`` (the paper) or ``mag_phase`` (``|S|^0.3`` and the phase angle in
radians as the two channels; what two open ports did, kept for comparison only).

    python -m s2f.media.audio some.flac     # prints the spectrogram's shape and range
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import av
import numpy as np
import torch

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioConfig:
    """Every knob of the speech input."""

    sample_rate: int = SAMPLE_RATE
    seconds: float = 6.0
    win_length: int = 400
    hop_length: int = 160
    n_fft: int = 512
    window: Literal["hann_periodic", "hann_symmetric"] = "hann_periodic"
    compression: Literal["real_imag", "mag_phase"] = "real_imag"
    power: float = 0.3

    @property
    def num_samples(self) -> int:
        return round(self.seconds * self.sample_rate)

    @property
    def num_frames(self) -> int:
        return num_frames(self.num_samples, self.win_length, self.hop_length)

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def num_frames(num_samples: int, win_length: int = 400, hop_length: int = 160) -> int:
    """Frames of a signal framed without centre padding: ⌊(N − win)/hop⌋ + 1."""
    if num_samples < win_length:
        raise ValueError(f"{num_samples} samples is shorter than one {win_length}-sample window")
    return (num_samples - win_length) // hop_length + 1


def load_audio(path: str | Path | BinaryIO, sample_rate: int = SAMPLE_RATE,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode any audio file PyAV reads (FLAC from ingestion; or an open binary file, e.g. a
    pack member's bytes in a BytesIO) to float32 mono at `sample_rate`; with `max_seconds`,
    decoding stops there (memory bounded whatever the file's length)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    chunks: list[np.ndarray] = []
    total = 0
    with av.open(path if hasattr(path, "read") else str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                total += chunks[-1].size
            if limit is not None and total >= limit:
                break
        else:
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        raise ValueError(f"{path}: no audio samples decoded")
    wave = np.concatenate(chunks).astype(np.float32, copy=False)
    return wave if limit is None else wave[:limit]


def fix_length(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Repeat a short clip until it is at least `num_samples` long, then cut to exactly that."""
    if wave.size == 0:
        raise ValueError("empty waveform")
    if wave.size < num_samples:
        wave = np.tile(wave, -(-num_samples // wave.size))
    return np.ascontiguousarray(wave[:num_samples], dtype=np.float32)


def load_fixed(path: str | Path, cfg: AudioConfig) -> np.ndarray:
    """`load_audio` then `fix_length` to the configured duration."""
    return fix_length(load_audio(path, cfg.sample_rate), cfg.num_samples)


def crop_fixed(wave: np.ndarray, num_samples: int, where: float | None = None) -> np.ndarray:
    """A `num_samples` window of `wave`: from the start when `where` is None, else starting at
    fraction `where` ∈ [0, 1) of the free range (training's random crops); short clips repeat."""
    if where is not None and wave.size > num_samples:
        off = min(int(where * (wave.size - num_samples + 1)), wave.size - num_samples)
        wave = wave[off:]
    return fix_length(wave, num_samples)


def window(cfg: AudioConfig, device: torch.device | str | None = None) -> torch.Tensor:
    periodic = cfg.window == "hann_periodic"
    return torch.hann_window(cfg.win_length, periodic=periodic, device=device)


def stft(waves: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Complex STFT, B×T×(n_fft/2+1), framed by hand (no centre padding)."""
    if waves.dim() == 1:
        waves = waves.unsqueeze(0)
    frames = waves.float().unfold(-1, cfg.win_length, cfg.hop_length)  # B×T×win
    frames = frames * window(cfg, waves.device)
    return torch.fft.rfft(frames, n=cfg.n_fft, dim=-1)


def compress(spec: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Complex B×T×F → real B×2×T×F with the configured power-law compression."""
    if cfg.compression == "real_imag":
        parts = torch.stack([spec.real, spec.imag], dim=1)
        return torch.sign(parts) * parts.abs().pow(cfg.power)
    if cfg.compression == "mag_phase":
        return torch.stack([spec.abs().pow(cfg.power), torch.angle(spec)], dim=1)
    raise ValueError(f"unknown compression {cfg.compression!r}")


def spectrogram(waves: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Fixed-length waveforms B×N (on any device) → the encoder's input B×2×T×257."""
    return compress(stft(waves, cfg), cfg)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cfg = AudioConfig()
    for p in args:
        spec = spectrogram(torch.from_numpy(load_fixed(p, cfg)), cfg)
        print(p, tuple(spec.shape), float(spec.min()), float(spec.max()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
