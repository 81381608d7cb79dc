"""Write video and audio into a container with PyAV (libx264/AAC .mp4, libvpx-vp9/Opus .webm).

Used by the demo corpus and by tests that need real media. No ffmpeg binary is required: PyAV's
wheel bundles the libraries.

    from s2f.media.mux import write_media
    write_media("clip.webm", frames, fps=25, audio=wave, sample_rate=16000, video_codec="vp9")
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VIDEO_ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9", "mjpeg": "mjpeg"}
AUDIO_ENCODERS = {"aac": ("aac", 48000), "opus": ("libopus", 48000), "flac": ("flac", None),
                  "pcm": ("pcm_s16le", None), "mp3": ("libmp3lame", 44100)}


def _resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr_in, sr_out)
    return resample_poly(audio, sr_out // g, sr_in // g, axis=0).astype(np.float32)


def write_media(
    path: str | Path,
    frames: Iterable[np.ndarray] | None,
    fps: int = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    video_codec: str | None = "h264",
    audio_codec: str | None = None,
    crf: int = 28,
    threads: int = 1,
) -> Path:
    """Write RGB uint8 frames (H×W×3, even H and W) and float audio in [-1, 1] (samples or
    samples×channels) to `path`. Either stream may be absent. `threads=1` keeps the output
    byte-identical from run to run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if audio_codec is None and audio is not None:
        audio_codec = "opus" if path.suffix == ".webm" else "aac"
    with av.open(str(path), mode="w") as container:
        # Bit-exact muxing: no random Matroska segment UID, no library version strings.
        container.flags |= av.container.Flags.bitexact.value
        vstream = astream = None
        frame_iter = iter(frames) if frames is not None and video_codec else None
        first = next(frame_iter, None) if frame_iter is not None else None
        if first is not None:
            vstream = container.add_stream(VIDEO_ENCODERS[video_codec], rate=fps)
            vstream.height, vstream.width = first.shape[:2]
            vstream.pix_fmt = "yuvj420p" if video_codec == "mjpeg" else "yuv420p"
            vstream.thread_count = threads
            if video_codec == "h264":
                # mbtree=0: with macroblock-tree rate control and B-frames, x264 (core 165) output
                # depends on the process's heap history even single-threaded (an uninitialised
                # read); without it the bytes are reproducible.
                vstream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
            elif video_codec == "vp9":
                vstream.options = {"crf": str(crf + 6), "b": "0", "deadline": "realtime",
                                   "cpu-used": "8", "row-mt": "0"}
        wave = None
        if audio is not None and audio_codec:
            name, rate = AUDIO_ENCODERS[audio_codec]
            rate = rate or sample_rate
            wave = np.asarray(audio, dtype=np.float32)
            wave = wave[:, None] if wave.ndim == 1 else wave
            wave = _resample(wave, sample_rate, rate)
            astream = container.add_stream(name, rate=rate)
            layout = "mono" if wave.shape[1] == 1 else ("stereo" if wave.shape[1] == 2 else "5.1")
            astream.layout = layout
        if vstream is not None:
            assert frame_iter is not None and first is not None
            for i, img in _chain(first, frame_iter):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img, dtype=np.uint8), format="rgb24")
                vf.pts = i
                vf.time_base = Fraction(1, fps)
                encode_and_mux(container, vstream, vf)
            encode_and_mux(container, vstream)
        if astream is not None and wave is not None:
            _encode_audio(container, astream, wave)
    return path


def encode_and_mux(container: av.container.OutputContainer, stream: av.stream.Stream,
                   frame: av.frame.Frame | None = None) -> None:
    """Encode one frame on `stream` (None flushes the encoder) and mux the packets it gives."""
    for packet in stream.encode(frame):
        container.mux(packet)


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[tuple[int, np.ndarray]]:
    yield 0, first
    yield from enumerate(rest, start=1)


def _encode_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                  wave: np.ndarray) -> None:
    rate = stream.rate
    codec_frame = stream.codec_context.frame_size or 1024
    fmt = "s16" if stream.codec_context.name in ("pcm_s16le", "flac") else "fltp"
    pcm = np.clip(wave, -1.0, 1.0)
    for start in range(0, len(pcm), codec_frame):
        chunk = pcm[start:start + codec_frame]
        if fmt == "s16":
            data = (chunk * 32767).astype(np.int16).reshape(1, -1)  # packed: interleaved
        else:
            data = np.ascontiguousarray(chunk.T.astype(np.float32))
            if len(chunk) < codec_frame and stream.codec_context.name != "flac":
                pad = np.zeros((data.shape[0], codec_frame - len(chunk)), np.float32)
                data = np.concatenate([data, pad], axis=1)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=stream.layout.name)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        encode_and_mux(container, stream, frame)
    encode_and_mux(container, stream)
