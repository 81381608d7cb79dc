"""Preprocess clips: decode K frames, detect + landmark + align faces, compute face features.

The library behind `s2f preprocess` (flows/preprocess.py adds only orchestration):

    from s2f.preprocess.clips import PreprocessConfig, preprocess_clips
    tables = preprocess_clips(rows, PreprocessConfig(frames=3))   # rows: dicts of the clips table
    tables.preprocess, tables.faces, tables.face_features          # pyarrow Tables

Per clip (only clips whose ingestion status is "ok", or "face_only": a still face image without
audio, `PREPROCESSED_STATUSES`): K frames at 25/50/75 % of the segment
(`s2f.media.video`), the face nearest the manifest hint in each frame (`s2f.faces.detect`; found
coarse-first on the middle frame and tracked on the others, `s2f.faces.search`), a
similarity alignment to the 68-point template and a 224x224 crop (`s2f.faces.align`, on the
GPU when there is one), and one face feature (`s2f.faces.features`) from the clip's representative
face: the middle sampled frame's face when it has one (the paper uses one representative
frame), else the highest-scored face. The feature is computed from the crop before JPEG.

A shard's driver (read, spread over processes, write three shards) is `s2f.preprocess.shards`.

Statuses: ok, no_face (no face in any sampled frame; the reason names the frames, the hint and
the best detector score), decode_failed, media_changed (the media file's size or mtime is not
what ingest recorded, or it is gone: its audio came from another file; nothing is decoded),
error (message kept). A bad
clip never stops the shard. Clips are processed in chunks of `chunk_clips`, so memory stays flat
in the shard size.

Tests: `pytest tests/test_preprocess_flow.py`; timing per stage: `python benchmarks/preprocess.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from s2f.faces.align import (
    CROP_PADDING,
    CROP_SIZE,
    encode_jpeg,
    similarity_to_template,
    to_uint8_hwc,
    warp_faces_from_frames,
)
from s2f.faces.detect import NEAR_MISS_FLOOR, Face, FaceDetector
from s2f.faces.features import FaceEncoder, encoder_for_this_thread
from s2f.faces.search import clip_faces
from s2f.media.image import IMAGE_DECODER, array_clip, decode_image
from s2f.media.video import ClipRequest, DaliFrameDecoder, DecodedClip, DecodeError, decode_clips
from storage.io import rows_to_table
from storage.schemas import FACES, PREPROCESS, face_features_schema

log = logging.getLogger(__name__)

FACE_SEARCHES = ("track", "full")
# Clips statuses whose faces are preprocessed: `face_only` is a face image without audio (a
# retrieval distractor of the real pairs source, `s2f.ingest.pairs`).
PREPROCESSED_STATUSES = ("ok", "face_only")
CODE_VERSION = 1  # bump when outputs change for the same inputs: finished shards are redone


@dataclass(frozen=True)
class PreprocessConfig:
    frames: int = 3
    detector: str = "hog"
    encoder: str = "dlib-resnet"
    vggface_weights: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    chunk_clips: int = 16  # decoded frames held at once: 16 x 3 x 1080p = 300 MB
    dali_batch: int = 8
    # "track": coarse search on the middle frame, tracking on the others (s2f.faces.search,
    # ~9x faster face search in benchmarks/run.py); "full": dlib's full search on every frame.
    face_search: str = "track"
    workers: int = 0  # processes per shard in preprocess_shard (0: one per CPU core)

    def __post_init__(self) -> None:
        if self.face_search not in FACE_SEARCHES:
            raise ValueError(f"face_search must be one of {FACE_SEARCHES}, not {self.face_search!r}")

    @property
    def gpu(self) -> bool:
        if self.device == "auto":
            return torch.cuda.is_available()
        return self.device == "cuda"

    def fingerprint(self) -> dict[str, Any]:
        """What the outputs depend on (resumability): everything except chunking."""
        weights = None
        if self.vggface_weights and self.encoder == "vggface":
            p = Path(self.vggface_weights)
            weights = {"path": str(p.resolve()), "size": p.stat().st_size if p.exists() else None}
        return {"frames": self.frames, "detector": self.detector, "encoder": self.encoder,
                "vggface_weights": weights, "crop": [CROP_SIZE, CROP_PADDING],
                "face_search": self.face_search, "code_version": CODE_VERSION}


@dataclass
class PreprocessTables:
    preprocess: pa.Table
    faces: pa.Table
    face_features: pa.Table

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.preprocess.column("status").to_pylist():
            counts[s] = counts.get(s, 0) + 1
        return counts


def _request(row: Mapping[str, Any]) -> ClipRequest:
    return ClipRequest(str(row["clip_key"]), str(row.get("video_path") or row.get("media_path")),
                       float(row["start_s"]), float(row["end_s"]),
                       float(row["fps"]) if row.get("fps") else None, row.get("video_codec"))


def _hint(row: Mapping[str, Any]) -> tuple[float, float] | None:
    x, y = row.get("hint_x"), row.get("hint_y")
    return None if x is None or y is None else (float(x), float(y))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for at in range(0, len(items), size):
        yield items[at:at + size]


def _frames_bhwc(decoded: DecodedClip, keep: list[int], device: torch.device) -> torch.Tensor:
    frames = decoded.frames
    tensor = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
    return tensor[keep].to(device)


def _frames_numpy(decoded: DecodedClip) -> np.ndarray:
    frames = decoded.frames
    return frames.cpu().numpy() if isinstance(frames, torch.Tensor) else frames


def _representative(faces: list[tuple[int, Face]], frames: int) -> int:
    """Index into `faces` of the clip's representative face: the middle frame's, else the best."""
    middle = frames // 2
    for n, (k, _) in enumerate(faces):
        if k == middle:
            return n
    return max(range(len(faces)), key=lambda n: faces[n][1].score)


def preprocess_clips(rows: Sequence[Mapping[str, Any]], config: PreprocessConfig | None = None, *,
                     encoder: FaceEncoder | None = None, detector: FaceDetector | None = None,
                     dali: DaliFrameDecoder | None = None,
                     progress: bool = True, desc: str = "preprocess") -> PreprocessTables:
    """Preprocess clips-table rows (only `PREPROCESSED_STATUSES` rows are taken); a row with a
    `face_image_path` is that one still image (the real pairs source). Never raises per clip."""
    from tqdm import tqdm

    config = config or PreprocessConfig()
    gpu = config.gpu
    device = torch.device("cuda" if gpu else "cpu")
    detector = detector or FaceDetector.for_this_thread(config.detector)
    encoder = encoder or encoder_for_this_thread(config.encoder,
                                                 vggface_weights=config.vggface_weights,
                                                 device=str(device))
    dali = dali or DaliFrameDecoder(gpu=gpu, batch_size=config.dali_batch)
    ok_rows = [r for r in rows if r.get("status") in PREPROCESSED_STATUSES and r.get("clip_key")]
    status_rows: list[dict[str, Any]] = []
    face_rows: list[dict[str, Any]] = []
    feature_rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(ok_rows), desc=desc, unit="clip", disable=not progress, leave=False)
    for chunk in _chunks(ok_rows, config.chunk_clips):
        taken = len(chunk)
        chunk = _unchanged_media(chunk, status_rows)
        decoded = _decode_chunk(chunk, config.frames, gpu, dali)
        reps: list[tuple[str, np.ndarray]] = []
        for row, result in zip(chunk, decoded, strict=True):
            key = str(row["clip_key"])
            if isinstance(result, DecodeError):
                status_rows.append({"clip_key": key, "status": "decode_failed",
                                    "error": result.message, "video_decoder": result.decoder,
                                    "frames_sampled": 0, "faces_found": 0})
                continue
            try:
                faces, crops = _faces_of_clip(result, _hint(row), detector, device,
                                              config.face_search)
            except Exception as exc:  # noqa: BLE001 - recorded, the shard goes on
                log.exception("clip %s: face step failed", key)
                status_rows.append({"clip_key": key, "status": "error",
                                    "error": f"{type(exc).__name__}: {exc}"[:500],
                                    "video_decoder": result.decoder,
                                    "frames_sampled": len(result.times_s), "faces_found": 0})
                continue
            for (k, face), crop in zip(faces, crops, strict=True):
                face_rows.append({
                    "clip_key": key, "frame_time_s": float(result.times_s[k]),
                    "bbox": [float(v) for v in face.box],
                    "landmarks": face.landmarks.reshape(-1).astype(float).tolist(),
                    "det_score": float(face.score), "crop_jpeg": encode_jpeg(crop),
                })
            status = {"clip_key": key, "status": "ok" if faces else "no_face",
                      "error": None if faces else _no_face_reason(result, _hint(row), detector,
                                                                  config.face_search),
                      "video_decoder": result.decoder, "frames_sampled": len(result.times_s),
                      "faces_found": len(faces)}
            status_rows.append(status)
            if faces:
                reps.append((key, crops[_representative(faces, len(result.times_s))]))
        _encode(reps, encoder, status_rows, feature_rows)
        bar.update(taken)
    bar.close()
    return PreprocessTables(rows_to_table(status_rows, PREPROCESS), rows_to_table(face_rows, FACES),
                            rows_to_table(feature_rows, face_features_schema(encoder.dim)))


def media_change(row: Mapping[str, Any]) -> str | None:
    """Why a clip's media file is not the one ingest probed (size or mtime differ, or it is
    gone), or None. Rows with nothing recorded (ingested before the columns; still images)
    pass: there is nothing to compare."""
    size, mtime = row.get("media_size_bytes"), row.get("media_mtime_ns")
    if size is None or mtime is None or row.get("face_image_path"):
        return None
    path = Path(str(row.get("video_path") or row.get("media_path")))
    try:
        st = path.stat()
    except OSError as exc:
        return f"{path} is gone since ingest ({exc.strerror}); re-run s2f ingest"
    if (st.st_size, st.st_mtime_ns) == (size, mtime):
        return None
    return (f"{path} changed after ingest: {size} -> {st.st_size} bytes, mtime {mtime} -> "
            f"{st.st_mtime_ns} ns; its audio was cut from the old file: re-run s2f ingest")


def _unchanged_media(chunk: Sequence[Mapping[str, Any]], status_rows: list[dict[str, Any]]
                     ) -> list[Mapping[str, Any]]:
    """The rows whose media is as ingested; the others get `media_changed` in `status_rows`."""
    kept = []
    for row in chunk:
        reason = media_change(row)
        if reason is None:
            kept.append(row)
            continue
        status_rows.append({"clip_key": str(row["clip_key"]), "status": "media_changed",
                            "error": reason, "video_decoder": None, "frames_sampled": 0,
                            "faces_found": 0})
    return kept


def _decode_chunk(chunk: Sequence[Mapping[str, Any]], frames: int, gpu: bool,
                  dali: DaliFrameDecoder) -> list[DecodedClip | DecodeError]:
    """Each row's frames, in order: a video's K frames (`decode_clips`), or the one frame of a
    row that has a still face image (`face_image_path`: the real pairs source)."""
    videos = [r for r in chunk if not r.get("face_image_path")]
    decoded = iter(decode_clips([_request(r) for r in videos], frames, gpu=gpu, dali=dali)
                   if videos else [])
    return [decode_image(str(r["clip_key"]), str(r["face_image_path"]))
            if r.get("face_image_path") else next(decoded) for r in chunk]


@dataclass
class ImageFeatures:
    """Face features of a list of images through the preprocessing path: `features` N×D
    (NaN rows where no face was found), `found` per image, `reasons` (None where found)."""

    features: np.ndarray
    found: np.ndarray
    reasons: list[str | None]


def embed_images(images: Sequence[np.ndarray], config: PreprocessConfig | None = None, *,
                 encoder: FaceEncoder | None = None, detector: FaceDetector | None = None
                 ) -> ImageFeatures:
    """Detect, align and embed the face of each H×W×3 uint8 image (a reconstruction, a face
    image) exactly as preprocessing does a video frame; hint: the image centre."""
    config = config or PreprocessConfig()
    device = torch.device("cuda" if config.gpu else "cpu")
    detector = detector or FaceDetector.for_this_thread(config.detector)
    encoder = encoder or encoder_for_this_thread(config.encoder,
                                                 vggface_weights=config.vggface_weights,
                                                 device=str(device))
    crops: list[np.ndarray] = []
    found = np.zeros(len(images), bool)
    reasons: list[str | None] = []
    for n, image in enumerate(images):
        clip = array_clip(str(n), image)
        faces, crop = _faces_of_clip(clip, (0.5, 0.5), detector, device, config.face_search)
        found[n] = bool(faces)
        reasons.append(None if faces else _no_face_reason(clip, (0.5, 0.5), detector,
                                                          config.face_search))
        if faces:
            crops.append(crop[0])
    features = np.full((len(images), encoder.dim), np.nan, np.float32)
    if crops:
        features[found] = np.asarray(encoder.encode(np.stack(crops)), np.float32)
    return ImageFeatures(features, found, reasons)


def _faces_of_clip(decoded: DecodedClip, hint: tuple[float, float] | None,
                   detector: FaceDetector, device: torch.device, search: str
                   ) -> tuple[list[tuple[int, Face]], np.ndarray]:
    """The chosen face of each sampled frame (frame index, Face) and their aligned crops."""
    frames = _frames_numpy(decoded)  # dlib works on host memory
    if search == "track":
        found = clip_faces(detector, frames, hint)
    elif search == "full":
        found = [detector.best_face(frame, hint) for frame in frames]
    else:
        raise ValueError(f"unknown face_search {search!r}: track or full")
    faces = [(k, f) for k, f in enumerate(found) if f is not None]
    if not faces:
        return [], np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    landmarks = torch.from_numpy(np.stack([f.landmarks for _, f in faces])).to(device)
    m = similarity_to_template(landmarks)
    crops = warp_faces_from_frames(_frames_bhwc(decoded, [k for k, _ in faces], device), m)
    return faces, to_uint8_hwc(crops)


def _no_face_reason(decoded: DecodedClip, hint: tuple[float, float] | None,
                    detector: FaceDetector, search: str) -> str:
    """What a `no_face` clip's search covered (frames, hint) and how near it came: the best
    detector score of its frames, which a face must have above 0."""
    times = ", ".join(f"{t:.2f}" for t in decoded.times_s)
    where = f"hint x={hint[0]:.3f} y={hint[1]:.3f}" if hint else "no hint"
    what = ("the image" if decoded.decoder == IMAGE_DECODER
            else f"{len(decoded.times_s)} frames at {times} s")
    scores = [s for frame in _frames_numpy(decoded) if (s := detector.best_score(frame)) is not None]
    if scores:
        best = f"best {detector.kind} score {max(scores):.3f} (a face needs > 0)"
    elif detector.kind == "hog":
        best = f"no hog window scored above {NEAR_MISS_FLOOR:g} (a face needs > 0)"
    else:
        best = f"no {detector.kind} detection at any score"
    return (f"no face in {what} ({search} search, {where}); "
            f"{best}")


def _encode(reps: list[tuple[str, np.ndarray]], encoder: FaceEncoder,
            status_rows: list[dict[str, Any]], feature_rows: list[dict[str, Any]]) -> None:
    if not reps:
        return
    try:
        features = encoder.encode(np.stack([c for _, c in reps]))
    except Exception as exc:  # noqa: BLE001 - the whole chunk's features failed: say so per clip
        log.exception("face encoder %s failed", encoder.name)
        failed = {k for k, _ in reps}
        for row in status_rows:
            if row["clip_key"] in failed and row["status"] == "ok":
                row.update(status="error", error=f"encoder {encoder.name}: {exc}"[:500])
        return
    for (key, _), feature in zip(reps, features, strict=True):
        feature_rows.append({"clip_key": key, "encoder": encoder.name,
                             "feature": feature.astype(np.float32).tolist(),
                             "l2_norm": float(np.linalg.norm(feature))})
