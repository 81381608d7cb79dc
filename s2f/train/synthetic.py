"""A tiny synthetic corpus for tests and benchmarks: the voice carries the face feature.

Each identity (one YouTube id) has a latent z ∈ [-1, 1]^3. Its voice is a sum of three tones
whose pitches are affine functions of z (plus a little noise, and a per-clip phase), so the
feature is learnable from the spectrogram; its face feature is W·z + small noise (dim D, W a
fixed seeded matrix); its face crop is a 224×224 image whose colour encodes z and whose jaw
and mouth landmarks move with z. Written exactly as ingestion and preprocessing would: clips
(16 kHz mono FLAC via PyAV, one pack per clips shard as ingest writes them, `s2f.media.packs`;
`packed=False`: one FLAC per clip, as data ingested before packs), faces (crop JPEG + landmarks
in frame pixels) and face_features.

    python -m s2f.train.synthetic OUT_DIR [IDENTITIES] [CLIPS_PER_IDENTITY]
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from storage.io import rows_to_table, write_table_atomic
from storage.layout import DataLayout, clip_key
from storage.schemas import CLIPS, FACES, face_features_schema

SR = 16000


@dataclass(frozen=True)
class SyntheticCorpus:
    identities: int = 24
    clips_per_identity: int = 2
    test_identities: int = 2
    dim: int = 16
    seconds: float = 2.0           # shorter than the model's input: exercises repetition
    encoder: str = "dlib-resnet"
    seed: int = 0
    faces: bool = True
    shard_size: int = 16           # clips per Parquet shard (several shards: exercises streaming)
    packed: bool = True            # audio in one pack per clips shard (False: a FLAC per clip)


def write_flac(path: Path | BinaryIO, wave: np.ndarray, sample_rate: int = SR) -> None:
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(wave * 32767, -32768, 32767).astype(np.int16)
    with av.open(str(path) if isinstance(path, Path) else path, mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def voice(z: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    base = (300.0, 1200.0, 3000.0)
    wave = sum(np.sin(2 * np.pi * (b + 200.0 * zi) * t + rng.uniform(0, 2 * np.pi))
               for b, zi in zip(base, z, strict=True))
    wave = wave / 3.5 + 0.02 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def face(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(224×224×3 uint8 crop, 68×2 landmarks in crop pixels)."""
    from s2f.faces.align import ALIGN_POINTS, template_pixels

    lm = template_pixels().astype(np.float32).copy()
    others = [i for i in range(68) if i not in ALIGN_POINTS]
    lm[others, 1] += 6.0 * z[0]
    lm[others, 0] += 4.0 * z[1] * np.sign(lm[others, 0] - 112.0)
    yy, xx = np.mgrid[0:224, 0:224]
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
    inside = ((xx - cx) / 70.0) ** 2 + ((yy - cy) / (95.0 + 6.0 * z[0])) ** 2 < 1.0
    img = np.zeros((224, 224, 3), np.float32) + 30.0
    colour = 128.0 + 100.0 * np.array([z[0], z[1], z[2]], np.float32)
    img[inside] = colour
    return np.clip(img, 0, 255).astype(np.uint8), lm


def build(layout: DataLayout, cfg: SyntheticCorpus = SyntheticCorpus()) -> dict[str, int]:
    """Write the corpus's tables and audio under `layout`; returns counts."""
    from s2f.faces.align import encode_jpeg

    rng = np.random.default_rng(cfg.seed)
    w = rng.standard_normal((cfg.dim, 3)).astype(np.float32)
    clips, faces, feats, waves = [], [], [], []
    for i in range(cfg.identities):
        yid = f"syn{i:04d}{cfg.seed:04d}"[:11].ljust(11, "x")
        z = rng.uniform(-1, 1, 3).astype(np.float32)
        split = "test" if i >= cfg.identities - cfg.test_identities else "train"
        for c in range(cfg.clips_per_identity):
            start, end = 10.0 * c, 10.0 * c + cfg.seconds
            key = clip_key(yid, start, end)
            waves.append(voice(z, cfg.seconds, rng))
            clips.append({"clip_key": key, "manifest": "synthetic", "split": split,
                          "line_no": len(clips) + 1, "youtube_id": yid, "start_s": start,
                          "end_s": end, "status": "ok",
                          "audio_samples": round(cfg.seconds * SR)})
            feature = w @ z + 0.05 * rng.standard_normal(cfg.dim).astype(np.float32)
            feats.append({"clip_key": key, "encoder": cfg.encoder,
                          "feature": feature.astype(np.float32).tolist(),
                          "l2_norm": float(np.linalg.norm(feature))})
            if cfg.faces:
                crop, lm = face(z)
                faces.append({"clip_key": key, "frame_time_s": start + 1.0,
                              "bbox": [40.0, 40.0, 184.0, 184.0],
                              "landmarks": lm.reshape(-1).tolist(), "det_score": 1.0,
                              "crop_jpeg": encode_jpeg(crop)})
            if len(clips) % cfg.shard_size == 0:  # a full shard: its audio out of memory
                _write_audio(layout, cfg, clips[-cfg.shard_size:], waves)
    _write_audio(layout, cfg, clips[len(clips) - len(waves):], waves)
    n = cfg.shard_size
    for s in range(0, len(clips), n):
        write_table_atomic(rows_to_table(clips[s:s + n], CLIPS),
                           layout.shard_path("clips", "synthetic", s // n))
        write_table_atomic(rows_to_table(feats[s:s + n], face_features_schema(cfg.dim)),
                           layout.shard_path("face_features", "synthetic", s // n))
        if faces:
            write_table_atomic(rows_to_table(faces[s:s + n], FACES),
                               layout.shard_path("faces", "synthetic", s // n))
    return {"clips": len(clips), "faces": len(faces), "features": len(feats)}


def _write_audio(layout: DataLayout, cfg: SyntheticCorpus, rows: list[dict[str, Any]],
                 waves: list[np.ndarray]) -> None:
    """The FLACs of `rows` (one clips shard's, whose `waves` these are: emptied here): one pack
    (`cfg.packed`), or a file per clip; sets each row's `audio_path`."""
    from s2f.media.packs import PackWriter

    if not rows:
        return
    index = (int(rows[0]["line_no"]) - 1) // cfg.shard_size
    with PackWriter(layout.pack_path(layout.shard_path("clips", "synthetic", index),
                                     "synthetic"), layout) as pack:
        for row, wave in zip(rows, waves, strict=True):
            if cfg.packed:
                buffer = io.BytesIO()
                write_flac(buffer, wave)
                row["audio_path"] = pack.add(row["clip_key"], buffer.getvalue())
            else:
                path = layout.audio_path(row["youtube_id"], row["clip_key"])
                write_flac(path, wave)
                row["audio_path"] = layout.relative(path)
    waves.clear()


if __name__ == "__main__":
    lay = DataLayout(Path(sys.argv[1])).ensure()
    ids = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    per = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    print(build(lay, SyntheticCorpus(identities=ids, clips_per_identity=per)))
