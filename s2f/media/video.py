"""Decode K frames of each clip's segment with NVIDIA DALI (PyAV where DALI cannot).

One DALI pipeline definition (`frame_sampling_pipeline`) takes the encoded file bytes and the
frame indices of each clip through `fn.external_source` and decodes exactly those frames with
`fn.decoders.video(frames=...)`. With CUDA the decoder is `mixed` (NVDEC)
and frames stay on the GPU as torch tensors (dlpack); without CUDA the same definition runs CPU
operators (`device_id=None`). DALI's CPU decoder reads VP8/VP9/MJPEG only, so on a CPU machine
H.264 (and other) clips are decoded by PyAV, chosen per clip from its `video_codec` and logged.

Both paths return `DecodedClip`: uint8 RGB frames (K, H, W, 3) and the frames' times in seconds.
Frames whose longer side exceeds `MAX_FRAME_SIDE` (the working size: 1080p passes untouched)
are scaled down to it, keeping the aspect ratio; PyAV converts to RGB at the smaller size, so
a full-size RGB frame is never held. Face boxes and landmarks are in these frames' pixels.
DALI takes the whole encoded file in memory (`fn.decoders.video` reads from a buffer), so clips
of one video are batched together and share one read; it then seeks through its keyframe index
(`build_index`), so only the GOPs around the wanted frames are decoded. PyAV seeks likewise.
A DALI run error kills the pipeline object: the decoder rebuilds it, retries the batch clip by
clip and reports the failing clip as a `DecodeError`; the shard goes on.

    from s2f.media.video import ClipRequest, decode_clips
    results = decode_clips([ClipRequest("k", "/m/x.webm", 1.0, 3.0, 25.0, "vp9")], frames=3)

Frame times: frame i of a constant-rate stream is at i / fps. AVSpeech segments are given in
seconds, so frame indices are floor(t * fps) for t at 25/50/75 % of the segment (K = 3). DALI's
times are those i / fps; PyAV's are the decoded frames' own timestamps (equal on CFR media).

Tests: `pytest tests/test_video.py` (the NVDEC test runs only where CUDA is present).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import floor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Codecs each DALI backend decodes (DALI 2.4 docs of fn.decoders.video).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = frozenset({"vp8", "vp9", "mjpeg", "av1", "mpeg4", "h264", "hevc"})
# The working size: the longer side of a frame handed to face search (AVSpeech is <= 1080p).
# Ingest refuses frames past s2f.ingest.media.MAX_VIDEO_SIDE; this bounds what is held.
MAX_FRAME_SIDE = 1920


def working_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most MAX_FRAME_SIDE (even sizes)."""
    scale = MAX_FRAME_SIDE / max(width, height)
    if scale >= 1:
        return width, height
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


@dataclass(frozen=True)
class ClipRequest:
    """Which frames of which media to decode. `video_codec` picks the decoder."""

    clip_key: str
    video_path: str
    start_s: float
    end_s: float
    fps: float | None
    video_codec: str | None


@dataclass
class DecodedClip:
    """K frames of one clip. `frames` is a numpy uint8 array (K, H, W, 3) on the CPU path and a
    torch uint8 CUDA tensor of the same shape on the GPU path."""

    clip_key: str
    frames: Any
    times_s: list[float]
    decoder: str  # dali-gpu | dali-cpu | pyav


@dataclass
class DecodeError:
    clip_key: str
    decoder: str
    message: str


@dataclass
class _Job:
    request: ClipRequest
    indices: list[int] = field(default_factory=list)
    fps: float = 0.0


def segment_fractions(frames: int) -> list[float]:
    """Where in the segment to sample: K evenly spaced interior points (3 -> 25/50/75 %)."""
    if frames < 1:
        raise ValueError("frames must be >= 1")
    return [(i + 1) / (frames + 1) for i in range(frames)]


def frame_indices(start_s: float, end_s: float, fps: float, frames: int) -> list[int]:
    """Indices of the K sampled frames of [start_s, end_s] in a stream of `fps` frames/s."""
    if not (fps > 0) or end_s <= start_s:
        raise ValueError(f"bad segment or frame rate: [{start_s}, {end_s}] at {fps} fps")
    return [int(floor((start_s + q * (end_s - start_s)) * fps + 1e-6))
            for q in segment_fractions(frames)]


def probe_fps(path: str) -> float:
    import av

    with av.open(path) as container:
        rate = container.streams.video[0].average_rate
        if not rate:
            raise ValueError(f"{path}: the video stream has no frame rate")
        return float(rate)


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def _plan(request: ClipRequest, frames: int) -> _Job:
    fps = float(request.fps) if request.fps and request.fps > 0 else probe_fps(request.video_path)
    return _Job(request, frame_indices(request.start_s, request.end_s, fps, frames), fps)


# -- PyAV ----------------------------------------------------------------------------------------

def decode_frames_pyav(path: str, indices: Sequence[int], fps: float) -> tuple[np.ndarray, list[float]]:
    """Decode frames `indices` (frame i at i / fps) by seeking to each and decoding forward.

    Returns uint8 RGB (K, H, W, 3) and each decoded frame's own presentation time."""
    import av

    out: list[np.ndarray] = []
    times: list[float] = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = float(stream.time_base)
        for index in indices:
            target = index / fps
            # Seek to the keyframe before the target, then decode forward to the frame that is
            # shown at the target time (half a frame of slack for rounded timestamps).
            container.seek(max(0, int(target / time_base)), stream=stream, backward=True)
            picked = None
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                picked = frame
                if frame.time >= target - 0.5 / fps:
                    break
            if picked is None:
                raise ValueError(f"{path}: no frame at {target:.3f} s")
            width, height = working_size(picked.width, picked.height)
            out.append(picked.to_ndarray(format="rgb24", width=width, height=height))
            times.append(float(picked.time))
    return np.stack(out), times


# -- DALI ----------------------------------------------------------------------------------------

def frame_sampling_pipeline(device: str, batch_size: int, num_threads: int = 2,
                            device_id: int | None = None) -> Any:
    """The one DALI pipeline: encoded bytes + frame indices in, selected frames (FHWC) out.

    device="mixed" decodes with NVDEC (needs CUDA and a device_id); device="cpu" with
    libavcodec, device_id=None."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                  prefetch_queue_depth=1)
    def sample_frames() -> Any:
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        indices = fn.external_source(name="indices", dtype=types.INT32, ndim=1)
        return fn.decoders.video(encoded, device=device, frames=indices)

    pipe = sample_frames()
    pipe.build()
    return pipe


class DaliFrameDecoder:
    """Decodes batches of clips with `frame_sampling_pipeline`, rebuilding it after errors.

    `device_id`: the GPU of the NVDEC pipeline (a pool worker's own, `s2f.devices.
    worker_device`); None: the process's current CUDA device when the pipeline is built."""

    def __init__(self, gpu: bool, batch_size: int = 8, num_threads: int = 2,
                 device_id: int | None = None) -> None:
        self.gpu = gpu
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.device_id = device_id
        self.name = "dali-gpu" if gpu else "dali-cpu"
        self._pipe: Any = None

    def _pipeline(self) -> Any:
        if self._pipe is None:
            if self.gpu:
                import torch

                device_id = (torch.cuda.current_device() if self.device_id is None
                             else self.device_id)
                self._pipe = frame_sampling_pipeline("mixed", self.batch_size, self.num_threads,
                                                     device_id)
            else:
                self._pipe = frame_sampling_pipeline("cpu", self.batch_size, self.num_threads)
        return self._pipe

    def _run(self, jobs: Sequence[_Job]) -> list[Any]:
        pipe = self._pipeline()
        cache: dict[str, np.ndarray] = {}  # several clips of one video share one read
        encoded = []
        for job in jobs:
            path = job.request.video_path
            if path not in cache:
                cache[path] = np.fromfile(path, dtype=np.uint8)
            encoded.append(cache[path])
        pipe.feed_input("encoded", encoded)
        pipe.feed_input("indices", [np.asarray(j.indices, dtype=np.int32) for j in jobs])
        (out,) = pipe.run()
        frames: list[Any] = []
        for i in range(len(jobs)):
            if self.gpu:
                import torch

                # Clone: DALI reuses the output buffer on the next run.
                frames.append(torch.from_dlpack(out[i]).clone())
            else:
                frames.append(np.array(out[i]))
        return frames

    def decode(self, jobs: Sequence[_Job]) -> list[DecodedClip | DecodeError]:
        results: list[DecodedClip | DecodeError] = []
        for at in range(0, len(jobs), self.batch_size):
            batch = list(jobs[at:at + self.batch_size])
            try:
                frames = self._run(batch)
                results += [self._decoded(j, f) for j, f in zip(batch, frames, strict=True)]
                continue
            except Exception as exc:  # noqa: BLE001 - any run error kills the pipeline
                log.warning("DALI batch failed (%s); rebuilding and retrying clip by clip",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self._pipe = None
            for job in batch:
                try:
                    results.append(self._decoded(job, self._run([job])[0]))
                except Exception as exc:  # noqa: BLE001
                    self._pipe = None  # dead after an error: the next call builds a new one
                    results.append(DecodeError(job.request.clip_key, self.name, _first_error(exc)))
        return results

    def _decoded(self, job: _Job, frames: Any) -> DecodedClip | DecodeError:
        if tuple(frames.shape[:1]) != (len(job.indices),) or frames.shape[-1] != 3:
            return DecodeError(job.request.clip_key, self.name,
                               f"DALI returned frames of shape {tuple(frames.shape)}")
        return DecodedClip(job.request.clip_key, _to_working_size(frames),
                           [i / job.fps for i in job.indices], self.name)


def _to_working_size(frames: Any) -> Any:
    """DALI's (K, H, W, 3) uint8 frames (numpy or a CUDA tensor) scaled down to the working
    size, as the PyAV path does; unchanged when they fit."""
    height, width = int(frames.shape[1]), int(frames.shape[2])
    new_width, new_height = working_size(width, height)
    if (new_width, new_height) == (width, height):
        return frames
    import torch

    tensor = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
    small = torch.nn.functional.interpolate(tensor.permute(0, 3, 1, 2).float(),
                                            size=(new_height, new_width), mode="bilinear",
                                            antialias=True, align_corners=False)
    small = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return small if isinstance(frames, torch.Tensor) else small.numpy()


def _first_error(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # DALI wraps the cause in boilerplate; keep the assertion/cause line.
    causes = [ln for ln in lines if ln.startswith(("Assert", "Error", "[/"))
              and "Error in CPU operator" not in ln and "Error in MIXED operator" not in ln]
    detail = causes[0] if causes else (lines[-1] if lines else type(exc).__name__)
    return f"{type(exc).__name__}: {detail}"[:500]


def choose_decoder(video_codec: str | None, gpu: bool) -> str:
    """dali-gpu / dali-cpu where DALI reads the codec on this machine, else pyav."""
    codec = (video_codec or "").lower()
    if gpu:
        return "dali-gpu" if codec in DALI_GPU_CODECS else "pyav"
    return "dali-cpu" if codec in DALI_CPU_CODECS else "pyav"


def decode_clips(requests: Sequence[ClipRequest], frames: int = 3, gpu: bool | None = None,
                 dali: DaliFrameDecoder | None = None,
                 force_decoder: str | None = None) -> list[DecodedClip | DecodeError]:
    """Decode `frames` frames of every clip, in request order; failures come back as
    `DecodeError` (never raised). `gpu=None` uses CUDA when present. `force_decoder`
    ("dali" | "pyav") overrides the per-codec choice (benchmarks, tests)."""
    gpu = cuda_available() if gpu is None else gpu
    results: dict[int, DecodedClip | DecodeError] = {}
    dali_jobs: list[tuple[int, _Job]] = []
    for n, request in enumerate(requests):
        decoder = choose_decoder(request.video_codec, gpu)
        if force_decoder == "pyav":
            decoder = "pyav"
        elif force_decoder == "dali":
            decoder = "dali-gpu" if gpu else "dali-cpu"
        try:
            if not Path(request.video_path).is_file():
                raise FileNotFoundError(f"no such media file: {request.video_path}")
            job = _plan(request, frames)
        except Exception as exc:  # noqa: BLE001 - recorded per clip
            results[n] = DecodeError(request.clip_key, decoder, _first_error(exc))
            continue
        if decoder == "pyav":
            if force_decoder is None:
                log.info("clip %s: codec %s is not decoded by DALI on %s; using PyAV",
                         request.clip_key, request.video_codec, "GPU" if gpu else "CPU")
            try:
                array, times = decode_frames_pyav(request.video_path, job.indices, job.fps)
                results[n] = DecodedClip(request.clip_key, array, times, "pyav")
            except Exception as exc:  # noqa: BLE001
                results[n] = DecodeError(request.clip_key, "pyav", _first_error(exc))
        else:
            dali_jobs.append((n, job))
    if dali_jobs:
        # Clips of one video in one batch share a single read of the file.
        dali_jobs.sort(key=lambda nj: nj[1].request.video_path)
        decoder_obj = dali or DaliFrameDecoder(gpu=gpu)
        for (n, _), result in zip(dali_jobs, decoder_obj.decode([j for _, j in dali_jobs]),
                                  strict=True):
            results[n] = result
    return [results[n] for n in range(len(requests))]
