"""Tiny real media for the ingestion tests: 2 s, 64x48, a 220 Hz tone, made with s2f.media.mux,
plus damaged copies (empty, truncated, garbage, garbled audio packets)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import av
import numpy as np

from s2f.ingest.media import read_flac
from s2f.media.mux import write_media
from s2f.media.packs import read_encoded
from storage.layout import DataLayout

SAMPLE_RATE = 16000
DURATION_S = 2.0
TONE_HZ = 220.0


def tone(duration_s: float = DURATION_S, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    # A rising chirp, so a misplaced cut cannot line up with the reference by accident.
    return (0.3 * np.sin(2 * np.pi * (TONE_HZ + 100 * t) * t)).astype(np.float32)


def frames(duration_s: float = DURATION_S, fps: int = 25) -> list[np.ndarray]:
    return [np.full((48, 64, 3), (i * 5) % 256, np.uint8) for i in range(int(duration_s * fps))]


def make_good(path: Path, video_codec: str = "h264", audio_codec: str | None = None) -> Path:
    return write_media(path, frames(), 25, tone(), SAMPLE_RATE, video_codec, audio_codec)


def make_video_only(path: Path) -> Path:
    return write_media(path, frames(), 25, None, SAMPLE_RATE, "h264")


def make_audio_only(path: Path) -> Path:
    return write_media(path, None, 25, tone(), SAMPLE_RATE, None, "flac")


def make_truncated(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return path


def make_garbled_audio(path: Path) -> Path:
    """An .mkv (h264 + AAC) whose AAC packets have their second halves overwritten: the
    container stays readable, the audio decoder rejects the packets."""
    write_media(path, frames(), 25, tone(), SAMPLE_RATE, "h264", "aac")
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        spans = [(p.pos, p.size) for p in container.demux(stream) if p.size and p.pos is not None]
    data = bytearray(path.read_bytes())
    for pos, size in spans:
        data[pos + size - size // 2: pos + size] = b"\xff" * (size // 2)
    path.write_bytes(bytes(data))
    return path


def make_media_set(root: Path) -> dict[str, Path]:
    """One file per case, named by an 11-character id that says what it is."""
    root.mkdir(parents=True, exist_ok=True)
    good_mp4 = make_good(root / "goodmp4____.mp4")
    media = {
        "good_mp4": good_mp4,
        "good_webm": make_good(root / "goodwebm___.webm", "vp9"),
        "video_only": make_video_only(root / "videoonly__.mp4"),
        "audio_only": make_audio_only(root / "audioonly__.mkv"),
        "truncated_mp4": make_truncated(good_mp4, root / "truncmp4___.mp4"),
        "garbage": make_garbage(root / "garbage____.mp4"),
        "garbled_audio": make_garbled_audio(root / "garbledaud_.mkv"),
    }
    webm = media["good_webm"]
    media["truncated_webm"] = make_truncated(webm, root / "truncwebm__.webm")
    empty = root / "empty______.mp4"
    empty.write_bytes(b"")
    media["empty"] = empty
    return media


def copy_media(media: dict[str, Path], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for path in media.values():
        shutil.copy2(path, root / path.name)


def clip_flac(layout: DataLayout, audio_path: str) -> tuple[np.ndarray, int]:
    """int16 samples and rate of one clip's cut audio, by its `audio_path` key (a pack member,
    or a per-clip FLAC of data ingested before packs)."""
    return read_flac(io.BytesIO(read_encoded(layout.resolve(audio_path))))
