"""The face decoder's training set: face feature → (aligned crop, landmarks in crop coordinates).

From `faces` ⋈ `face_features` (one encoder) ⋈ `clips` (split, youtube_id). One face per clip:
the row whose frame time is the clip's median sampled time (preprocessing's representative face
is the middle frame's). Landmarks in the crop: the FACES table stores them in frame pixels; the
crop is the similarity `s2f.faces.align.similarity_to_template(landmarks)` of them, so the same
transform (deterministic from the landmarks) maps them into the 224×224 crop, then to kornia's
normalised [-1, 1] frame.

Memory: crops are decoded once, resized to the decoder's image size and kept as uint8 (64×64:
12 KB a face). Fine for the demo and for ~10^5 faces; beyond that stream it like `data.py`.
Split: `data.select_role`, as the voice pairs (dev manifest, else dev carved from train by
identity); manifest test rows are never used. Faces without a voice (`face_only`: the real pairs
source's distractors of train persons) train the decoder too: it needs no voice.

    python -m s2f.train.face_data DATA_DIR      # prints the set's sizes
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from s2f.faces.align import CROP_SIZE, apply_affine, decode_jpeg, similarity_to_template
from s2f.models.face_decoder import pixels_to_normalized
from s2f.preprocess.clips import PREPROCESSED_STATUSES
from s2f.train.data import Role, select_role
from storage.io import scan, shard_paths
from storage.layout import DataLayout


@dataclass
class FaceSet:
    clip_keys: list[str]
    features: torch.Tensor   # N×D float32
    crops: torch.Tensor      # N×3×S×S uint8
    landmarks: torch.Tensor  # N×68×2 float32, normalised [-1, 1]

    def __len__(self) -> int:
        return len(self.clip_keys)

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        return self.crops[idx].float() / 255.0


def crop_landmarks(frame_landmarks: np.ndarray) -> np.ndarray:
    """(N, 68, 2) frame-pixel landmarks → (N, 68, 2) pixels of the aligned 224×224 crop."""
    lm = torch.from_numpy(np.asarray(frame_landmarks, dtype=np.float32))
    return apply_affine(lm, similarity_to_template(lm)).numpy()


def load_face_set(layout: DataLayout, encoder: str, role: Role, dev_fraction: float,
                  image_size: int) -> FaceSet:
    clips = (scan(layout, "clips")
             .filter(pl.col("status").is_in(PREPROCESSED_STATUSES))
             .select("clip_key", "youtube_id", "split"))
    feats = (pl.scan_parquet([str(p) for p in shard_paths(layout, "face_features")])
             .filter(pl.col("encoder") == encoder).select("clip_key", "feature")
             .unique("clip_key", keep="first"))
    faces = (pl.scan_parquet([str(p) for p in shard_paths(layout, "faces")])
             .select("clip_key", "frame_time_s", "landmarks", "crop_jpeg"))
    df = faces.join(feats, on="clip_key").join(clips, on="clip_key").collect()
    df = select_role(df, role, dev_fraction)
    # one face per clip: the median sampled frame
    df = (df.sort("clip_key", "frame_time_s")
          .with_columns(pl.int_range(pl.len()).over("clip_key").alias("_i"),
                        pl.len().over("clip_key").alias("_n"))
          .filter(pl.col("_i") == pl.col("_n") // 2).drop("_i", "_n"))
    n = df.height
    if n == 0:
        return FaceSet([], torch.zeros(0, 0), torch.zeros(0, 3, image_size, image_size,
                                                          dtype=torch.uint8),
                       torch.zeros(0, 68, 2))
    lm_px = crop_landmarks(np.asarray(df["landmarks"].to_list(), np.float32).reshape(n, 68, 2))
    crops = np.stack([decode_jpeg(b) for b in df["crop_jpeg"].to_list()])
    t = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    if t.shape[-1] != image_size:
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False)
    return FaceSet(
        clip_keys=df["clip_key"].to_list(),
        features=torch.tensor(np.asarray(df["feature"].to_list(), np.float32)),
        crops=t.round().clamp(0, 255).to(torch.uint8),
        landmarks=pixels_to_normalized(torch.from_numpy(lm_px), CROP_SIZE).float())


if __name__ == "__main__":
    lay = DataLayout(Path(sys.argv[1]))
    for r in ("train", "dev", "test"):
        s = load_face_set(lay, "dlib-resnet", r, 0.1, 64)  # type: ignore[arg-type]
        print(r, len(s), tuple(s.crops.shape))
