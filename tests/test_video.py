"""Frame decoding: DALI vs PyAV on the same VP9 clip, per-codec routing, bad media.

    pytest tests/test_video.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from s2f.media.dali_audio import dali_available
from s2f.media.synthetic_clips import write_face_clip
from s2f.media.video import (
    ClipRequest,
    DaliFrameDecoder,
    DecodedClip,
    DecodeError,
    choose_decoder,
    decode_clips,
    frame_indices,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("video")
    broken = d / "broken.webm"
    broken.write_bytes(b"\x1aE\xdf\xa3 this is not a webm file" * 10)
    return {"vp9": write_face_clip(d / "face.webm", "vp9", seconds=2.0),
            "h264": write_face_clip(d / "face.mp4", "h264", seconds=2.0),
            "broken": broken}


def _request(path: Path, codec: str, key: str = "k", start: float = 0.3, end: float = 1.7
             ) -> ClipRequest:
    return ClipRequest(key, str(path), start, end, 25.0, codec)


def test_frame_indices_spread_over_the_segment() -> None:
    assert frame_indices(1.0, 3.0, 25.0, 3) == [37, 50, 62]  # 1.5 s, 2.0 s, 2.5 s
    assert frame_indices(0.0, 1.0, 30.0, 1) == [15]
    with pytest.raises(ValueError):
        frame_indices(2.0, 1.0, 25.0, 3)


def test_dali_and_pyav_agree_on_the_same_vp9_clip(clips: dict[str, Path]) -> None:
    (dali,) = decode_clips([_request(clips["vp9"], "vp9")], 3, gpu=False, force_decoder="dali")
    (pyav,) = decode_clips([_request(clips["vp9"], "vp9")], 3, gpu=False, force_decoder="pyav")
    assert isinstance(dali, DecodedClip) and isinstance(pyav, DecodedClip)
    assert (dali.decoder, pyav.decoder) == ("dali-cpu", "pyav")
    assert dali.frames.shape == pyav.frames.shape == (3, 360, 640, 3)
    assert dali.frames.dtype == pyav.frames.dtype == np.uint8
    np.testing.assert_allclose(dali.times_s, pyav.times_s, atol=1e-3)
    np.testing.assert_allclose(dali.times_s, [0.64, 1.0, 1.32], atol=1e-6)
    diffs = np.abs(dali.frames.astype(np.int16) - pyav.frames.astype(np.int16)).mean(axis=(1, 2, 3))
    # Only colour-conversion rounding differs (measured 1.4 grey levels); a frame off by one
    # in time would differ more where the face moves.
    assert diffs.max() < 2.0, diffs
    (shifted,) = decode_clips([_request(clips["vp9"], "vp9", start=0.34, end=1.74)], 3,
                              gpu=False, force_decoder="pyav")
    off_by_one = np.abs(dali.frames[0].astype(np.int16) - shifted.frames[0]).mean()
    assert shifted.times_s[0] == pytest.approx(0.68) and off_by_one > diffs[0]


def test_frames_above_the_working_size_come_out_at_it_from_both_decoders(
        tmp_path: Path) -> None:
    """A 1440p clip: DALI (CPU) and PyAV both hand over 1920x1080 frames (MAX_FRAME_SIDE),
    alike up to resampling; 1080p and below are untouched (the test above)."""
    from s2f.media.video import MAX_FRAME_SIDE, working_size

    assert working_size(1920, 1080) == (1920, 1080)
    assert working_size(2560, 1440) == (1920, 1080) and working_size(1440, 2560) == (1080, 1920)
    assert MAX_FRAME_SIDE == 1920
    clip = write_face_clip(tmp_path / "face1440.webm", "vp9", seconds=0.6, height=1440,
                           width=2560, face_px=440)
    request = _request(clip, "vp9", start=0.1, end=0.5)
    (dali,) = decode_clips([request], 2, gpu=False, force_decoder="dali")
    (pyav,) = decode_clips([request], 2, gpu=False, force_decoder="pyav")
    assert isinstance(dali, DecodedClip) and isinstance(pyav, DecodedClip), (dali, pyav)
    assert dali.frames.shape == pyav.frames.shape == (2, 1080, 1920, 3)
    assert dali.frames.dtype == np.uint8
    diff = np.abs(dali.frames.astype(np.int16) - pyav.frames.astype(np.int16)).mean()
    print(f"DALI vs PyAV at the working size: {diff:.2f} grey levels")
    assert diff < 3.0, diff  # two resamplers and two colour conversions, same picture


def test_codec_routing_h264_goes_to_pyav_on_cpu(clips: dict[str, Path]) -> None:
    assert choose_decoder("h264", gpu=False) == "pyav"
    assert choose_decoder("vp9", gpu=False) == "dali-cpu"
    assert choose_decoder("h264", gpu=True) == "dali-gpu"
    assert choose_decoder("prores", gpu=True) == "pyav"
    vp9, h264 = decode_clips([_request(clips["vp9"], "vp9", "a"), _request(clips["h264"], "h264", "b")],
                             3, gpu=False)
    assert isinstance(vp9, DecodedClip) and isinstance(h264, DecodedClip)
    assert (vp9.decoder, h264.decoder) == ("dali-cpu", "pyav")
    assert vp9.frames.shape == h264.frames.shape and vp9.times_s == h264.times_s
    # Same picture through two codecs: lossy but close.
    assert np.abs(vp9.frames.astype(np.int16) - h264.frames).mean() < 6


def test_bad_media_is_recorded_and_the_pipeline_rebuilt(clips: dict[str, Path]) -> None:
    decoder = DaliFrameDecoder(gpu=False, batch_size=4)
    requests = [_request(clips["vp9"], "vp9", "good1"), _request(clips["broken"], "vp9", "bad"),
                _request(clips["vp9"], "vp9", "good2"),
                _request(clips["vp9"].with_name("missing.webm"), "vp9", "missing")]
    results = decode_clips(requests, 3, gpu=False, dali=decoder)
    assert [type(r) for r in results] == [DecodedClip, DecodeError, DecodedClip, DecodeError]
    assert "decoder" in results[1].message and "no such media" in results[3].message
    # The decoder object still works for the next batch (its dead pipeline was replaced).
    (again,) = decode_clips([_request(clips["vp9"], "vp9")], 3, gpu=False, dali=decoder)
    assert isinstance(again, DecodedClip)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (NVDEC)")
@pytest.mark.skipif(not dali_available(), reason="needs NVIDIA DALI for NVDEC (not installed)")
def test_gpu_nvdec_frames_stay_on_the_gpu_and_match_pyav(clips: dict[str, Path]) -> None:
    for codec in ("h264", "vp9"):
        (gpu,) = decode_clips([_request(clips[codec], codec)], 3, gpu=True)
        (cpu,) = decode_clips([_request(clips[codec], codec)], 3, gpu=False, force_decoder="pyav")
        assert isinstance(gpu, DecodedClip) and gpu.decoder == "dali-gpu"
        assert isinstance(gpu.frames, torch.Tensor) and gpu.frames.is_cuda
        assert gpu.frames.dtype == torch.uint8 and tuple(gpu.frames.shape) == cpu.frames.shape
        np.testing.assert_allclose(gpu.times_s, cpu.times_s, atol=1e-3)
        assert np.abs(gpu.frames.cpu().numpy().astype(np.int16) - cpu.frames).mean() < 2.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (NVDEC)")
@pytest.mark.skipif(not dali_available(), reason="needs NVIDIA DALI for NVDEC (not installed)")
def test_gpu_frames_above_the_working_size_are_scaled_on_the_gpu(tmp_path: Path) -> None:
    """The NVDEC path scales a 1440p clip to 1920x1080 on the device, as PyAV does."""
    clip = write_face_clip(tmp_path / "face1440.mp4", "h264", seconds=0.6, height=1440,
                           width=2560, face_px=440)
    request = _request(clip, "h264", start=0.1, end=0.5)
    (gpu,) = decode_clips([request], 2, gpu=True)
    (cpu,) = decode_clips([request], 2, gpu=False, force_decoder="pyav")
    assert isinstance(gpu, DecodedClip) and gpu.decoder == "dali-gpu", gpu
    assert isinstance(gpu.frames, torch.Tensor) and gpu.frames.is_cuda
    assert tuple(gpu.frames.shape) == cpu.frames.shape == (2, 1080, 1920, 3)
    assert np.abs(gpu.frames.cpu().numpy().astype(np.int16) - cpu.frames).mean() < 3.0
