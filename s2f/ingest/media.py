"""Find, probe and cut the audio of one clip's source media with PyAV (no ffmpeg binary).

    find_media(media_root, youtube_id) -> Path       <media-root>/<id>.(mp4|webm|mkv), safely
    with open_media(path) as source:                 probe once per file...
        source.probe                                 codecs, size, fps, duration
        source.cut_audio(start_s, end_s, out_path)   ...cut many segments: 16 kHz mono FLAC

Every failure is a `MediaError(status, reason)` whose status is one of
`storage.schemas.CLIP_STATUSES`: missing_media, corrupt_media (empty, truncated or not a
container), no_audio, no_video, video_too_large (frames past `MAX_VIDEO_SIDE` /
`MAX_VIDEO_PIXELS`, from the stream header: nothing is decoded), out_of_range, decode_failed.
The probe records the file's size and mtime, which preprocessing compares (`media_changed`). Video is never re-encoded: the clip
references the source file and its time range. The FLAC is written to a temporary name and
renamed, so a killed run never leaves half a file under the final name.

    python -m s2f.ingest.media MEDIA_FILE [START END OUT.flac]   # probe (and cut)
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from s2f.ingest.manifest import is_valid_youtube_id
from s2f.media.mux import encode_and_mux
from storage.io import atomic_path

MEDIA_EXTENSIONS = ("mp4", "webm", "mkv")
SAMPLE_RATE = 16000
# A segment may end this far past the media's end (AVSpeech times are rounded; containers
# report durations to a frame or two).
END_TOLERANCE_S = 0.1
# Seek this far before the segment: demuxers land on the packet at or after the target.
_SEEK_MARGIN_S = 0.5
_FLAC_FRAME = 4096
# Frames larger than this are refused at ingest (`video_too_large`): one RGB frame of 8192x8192
# is 200 MB and preprocessing holds K frames of 16 clips per worker. AVSpeech is at most 1080p;
# 4K UHD (3840x2160) and DCI 4K (4096x2160) pass, as does a portrait 2160x3840.
MAX_VIDEO_SIDE = 4096
MAX_VIDEO_PIXELS = 4096 * 2160


class MediaError(Exception):
    """A clip that cannot be ingested, with its `clips` status and a human-readable reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def find_media(media_root: Path, youtube_id: str) -> Path:
    """The media file of a video. The id is validated and the resolved path must stay inside
    the media root (a symlink pointing elsewhere is refused), so no id can reach other files."""
    if not is_valid_youtube_id(youtube_id):
        raise MediaError("missing_media", f"not a valid YouTube id: {youtube_id!r}")
    root = Path(media_root).resolve()
    for ext in MEDIA_EXTENSIONS:
        candidate = root / f"{youtube_id}.{ext}"
        if not candidate.exists():
            continue
        resolved = candidate.resolve()
        if not resolved.is_relative_to(root):
            raise MediaError("missing_media", f"{candidate} resolves outside the media root")
        if not resolved.is_file():
            raise MediaError("missing_media", f"{candidate} is not a regular file")
        return resolved
    names = "|".join(MEDIA_EXTENSIONS)
    raise MediaError("missing_media", f"no {root}/{youtube_id}.({names})")


def media_state(media_root: Path, youtube_id: str) -> str:
    """What is on disk for an id (name, size, mtime), to fingerprint a shard's inputs."""
    try:
        path = find_media(media_root, youtube_id)
    except MediaError as exc:
        return f"{youtube_id}:absent:{exc.reason}"
    st = path.stat()
    return f"{youtube_id}:{path.name}:{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class MediaProbe:
    media_path: str
    video_codec: str
    audio_codec: str
    width: int
    height: int
    fps: float | None
    media_duration_s: float | None
    media_size_bytes: int | None = None
    media_mtime_ns: int | None = None

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["video_path"] = self.media_path
        return record


def check_frame_size(path: Path, width: int, height: int) -> None:
    """Raise `video_too_large` for frames past MAX_VIDEO_SIDE or MAX_VIDEO_PIXELS."""
    if max(width, height) > MAX_VIDEO_SIDE or width * height > MAX_VIDEO_PIXELS:
        raise MediaError("video_too_large", f"{path}: frames of {width}x{height} "
                                            f"({width * height:,} pixels) exceed the limit of "
                                            f"{MAX_VIDEO_SIDE} per side and "
                                            f"{MAX_VIDEO_PIXELS:,} pixels")


class MediaSource:
    """An open media file: probed once, then any number of segments cut from it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._used = False  # has a segment been decoded from self.container yet
        # Taken before the file is read: a change during or after ingest shows as a difference.
        self._stat = self.path.stat()
        size = self._stat.st_size
        if size == 0:
            raise MediaError("corrupt_media", f"{self.path} is empty (0 bytes)")
        try:
            self.container = av.open(str(self.path))
        except av.error.FFmpegError as exc:
            raise MediaError("corrupt_media", f"{self.path} is not a readable media container "
                                              f"(truncated or not media): {exc.strerror}") from exc
        try:
            self.probe = self._probe()
        except BaseException:
            self.container.close()
            raise

    def _probe(self) -> MediaProbe:
        videos, audios = self.container.streams.video, self.container.streams.audio
        if not videos and not audios:
            raise MediaError("no_video", f"{self.path} has neither a video nor an audio stream")
        if not videos:
            raise MediaError("no_video", f"{self.path} has no video stream")
        if not audios:
            raise MediaError("no_audio", f"{self.path} has no audio stream")
        video, audio = videos[0], audios[0]
        duration = None
        if self.container.duration is not None:
            duration = self.container.duration / av.time_base
        else:
            durations = [float(s.duration * s.time_base) for s in (video, audio)
                         if s.duration is not None and s.time_base is not None]
            duration = max(durations) if durations else None
        rate = video.average_rate or video.guessed_rate
        check_frame_size(self.path, int(video.width), int(video.height))
        return MediaProbe(
            media_path=str(self.path), video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name, width=int(video.width),
            height=int(video.height), fps=float(rate) if rate else None,
            media_duration_s=duration, media_size_bytes=int(self._stat.st_size),
            media_mtime_ns=int(self._stat.st_mtime_ns))

    def close(self) -> None:
        self.container.close()

    def check_range(self, start_s: float, end_s: float) -> None:
        duration = self.probe.media_duration_s
        if duration is not None and end_s > duration + END_TOLERANCE_S:
            raise MediaError("out_of_range", f"segment {start_s:.3f}-{end_s:.3f} s ends past the "
                                             f"end of the media ({duration:.3f} s)")

    def decode_segment(self, start_s: float, end_s: float) -> np.ndarray:
        """The segment's audio as int16 mono samples at SAMPLE_RATE."""
        self.check_range(start_s, end_s)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        try:
            # Decoders keep state across seeks (AAC's overlap window, Opus's pre-skip): a segment
            # cut after another one came out shifted or different, so a clip's audio depended on
            # which clips shared its shard. A fresh container per segment (the first one is the
            # probe's) makes a cut a function of (file, start, end) alone.
            if self._used:
                self.container.close()
                self.container = av.open(str(self.path))
            self._used = True
            stream = self.container.streams.audio[0]
            target = max(0.0, start_s - _SEEK_MARGIN_S)
            if target > 0:  # a fresh container is already at the start: no seek(0)
                try:
                    self.container.seek(int(target / stream.time_base), stream=stream,
                                        backward=True)
                except av.error.FFmpegError:
                    # A damaged index need not mean damaged audio: read from the start instead.
                    self.container.close()
                    self.container = av.open(str(self.path))
                    stream = self.container.streams.audio[0]
            done = False
            for packet in self.container.demux(stream):
                for frame in packet.decode():
                    if frame.time is None:
                        continue
                    if first_time is None:
                        first_time = float(frame.time)
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                    if frame.time > end_s:
                        done = True
                        break
                if done:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            raise MediaError("decode_failed", f"audio of {self.path} could not be decoded near "
                                              f"{start_s:.3f} s: {exc}") from exc
        if first_time is None or not chunks:
            raise MediaError("decode_failed", f"no audio decoded from {self.path} between "
                                              f"{start_s:.3f} and {end_s:.3f} s")
        samples = np.concatenate(chunks)
        begin = max(0, round((start_s - first_time) * SAMPLE_RATE))
        stop = max(0, round((end_s - first_time) * SAMPLE_RATE))
        segment = samples[begin:stop]
        missing_s = (round((end_s - start_s) * SAMPLE_RATE) - len(segment)) / SAMPLE_RATE
        if missing_s > END_TOLERANCE_S:
            decoded_until = first_time + len(samples) / SAMPLE_RATE
            raise MediaError("corrupt_media", f"truncated: audio of {self.path} ends at "
                                              f"{decoded_until:.3f} s but the segment needs "
                                              f"{start_s:.3f}-{end_s:.3f} s")
        return segment

    def cut_audio(self, start_s: float, end_s: float, out_path: Path) -> int:
        """Write the segment as 16 kHz mono FLAC (atomically); returns the sample count."""
        segment = self.decode_segment(start_s, end_s)
        write_flac_atomic(segment, Path(out_path))
        return int(len(segment))


@contextmanager
def open_media(path: Path) -> Iterator[MediaSource]:
    source = MediaSource(path)
    try:
        yield source
    finally:
        source.close()


def write_flac_atomic(samples: np.ndarray, path: Path, sample_rate: int = SAMPLE_RATE) -> Path:
    """int16 mono samples to FLAC: a temporary file in the same directory, fsynced (the shard's
    Parquet will point at this file), then a rename."""
    with atomic_path(path) as tmp:
        _write_flac(samples, str(tmp), sample_rate)
    return path


def encode_flac(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """int16 mono samples to the bytes of a FLAC file (a pack member, `s2f.media.packs`)."""
    buffer = io.BytesIO()
    _write_flac(samples, buffer, sample_rate)
    return buffer.getvalue()


def _write_flac(samples: np.ndarray, target: str | BinaryIO, sample_rate: int) -> None:
    with av.open(target, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=sample_rate)
        stream.layout = "mono"
        stream.format = "s16"
        pts = 0
        for begin in range(0, len(samples), _FLAC_FRAME):
            block = np.ascontiguousarray(samples[begin:begin + _FLAC_FRAME], dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16",
                                               layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = pts
            pts += len(block)
            encode_and_mux(container, stream, frame)
        encode_and_mux(container, stream)


def read_flac(path: Path | BinaryIO) -> tuple[np.ndarray, int]:
    """Samples (int16 mono) and sample rate of a FLAC written by `write_flac_atomic` (or of an
    open binary file: a pack member's bytes in a BytesIO, `s2f.media.packs.read_encoded`)."""
    with av.open(path if hasattr(path, "read") else str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)), stream.rate


if __name__ == "__main__":
    import json
    import sys

    with open_media(Path(sys.argv[1])) as src:
        print(json.dumps(src.probe.as_record()))
        if len(sys.argv) == 5:
            n = src.cut_audio(float(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
            print(f"wrote {n} samples to {sys.argv[4]}")
