"""Speech input: framing (598 frames for 6 s), bins, compression, repetition, FLAC round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from s2f.media.audio import AudioConfig, compress, fix_length, load_audio, num_frames, spectrogram


def test_six_seconds_gives_598_by_257() -> None:
    cfg = AudioConfig()
    assert cfg.num_frames == 598 == num_frames(96000)
    spec = spectrogram(torch.zeros(2, cfg.num_samples), cfg)
    assert spec.shape == (2, 2, 598, 257)
    assert AudioConfig(seconds=3.0).num_frames == 298


def test_pure_tone_peaks_at_its_bin() -> None:
    cfg = AudioConfig(compression="mag_phase")
    k = 40  # bin 40 of a 512-point FFT at 16 kHz = 1250 Hz
    t = torch.arange(cfg.num_samples) / cfg.sample_rate
    wave = torch.sin(2 * torch.pi * (k * cfg.sample_rate / cfg.n_fft) * t)
    mag = spectrogram(wave[None], cfg)[0, 0]  # T×257 compressed magnitude
    assert mag.shape == (598, 257)
    assert (mag.argmax(dim=1) == k).all()


def test_window_choice_matters() -> None:
    t = torch.randn(1, 16000)
    a = spectrogram(t, AudioConfig(seconds=1.0, window="hann_periodic"))
    b = spectrogram(t, AudioConfig(seconds=1.0, window="hann_symmetric"))
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_power_law_compression_on_real_and_imaginary_separately() -> None:
    cfg = AudioConfig()
    s = torch.tensor([[[8.0 - 27.0j, -1.0 + 0.0j]]])
    out = compress(s, cfg)
    assert out.shape == (1, 2, 1, 2)
    expected_real = torch.tensor([8.0**0.3, -1.0])
    expected_imag = torch.tensor([-(27.0**0.3), 0.0])
    torch.testing.assert_close(out[0, 0, 0], expected_real)
    torch.testing.assert_close(out[0, 1, 0], expected_imag)


def test_short_audio_is_repeated_then_cut() -> None:
    wave = np.arange(5, dtype=np.float32)
    out = fix_length(wave, 12)
    np.testing.assert_array_equal(out, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(fix_length(np.arange(20, dtype=np.float32), 7), np.arange(7))
    with pytest.raises(ValueError):
        fix_length(np.zeros(0, np.float32), 3)


def test_flac_round_trip(tmp_path: Path) -> None:
    from s2f.train.synthetic import write_flac

    t = np.arange(8000) / 16000
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "a.flac"
    write_flac(path, wave)
    back = load_audio(path)
    assert back.dtype == np.float32 and back.shape == wave.shape
    np.testing.assert_allclose(back, wave, atol=1e-3)
    # resampled on load
    assert load_audio(path, sample_rate=8000).shape[0] == pytest.approx(4000, abs=40)
