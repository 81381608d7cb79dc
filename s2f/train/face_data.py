"""The face decoder's training data: face feature → (aligned crop, landmarks in crop coordinates),
streamed from the Parquet shards with bounded memory.

From `faces` ⋈ `face_features` (one encoder) ⋈ `clips` (split, youtube_id). One face per clip:
the row whose frame time is the clip's median sampled time (preprocessing's representative face
is the middle frame's). Landmarks in the crop: the FACES table stores them in frame pixels; the
crop is the similarity `s2f.faces.align.similarity_to_template(landmarks)` of them, so the same
transform (deterministic from the landmarks) maps them into the 224×224 crop, then to kornia's
normalised [-1, 1] frame.

Index (`face_index`): small columns only, one row per face, sorted by clip key: clip_key and
where its crop (faces shard, row) and its feature (face_features shard, row) are. Crops,
landmarks and features stay in their shards until a batch needs them.

An epoch (`FaceStream.plan`): the faces shards in an order drawn from (seed, epoch), cut into
consecutive *windows* of whole shards holding at most `shuffle_rows` faces (a shard larger than
that is a window alone); the faces of each window are shuffled together (the shuffle buffer,
filled and drained one window at a time), the windows' orders concatenated and cut into batches
(the last incomplete batch dropped). So a batch's faces come from the window at hand (or two,
at a boundary), and a loader keeps only those shards' rows (`ShardRowCache`: compressed JPEG
bytes, crop landmarks and features of this role's faces, at most `2 × shuffle_rows` rows beside the
shard just read). A batch's crops are decoded and resized when it is loaded (in the prefetching
loader's workers when it has them: `s2f.train.prefetch`), never the whole set. A role with at
most `shuffle_rows` faces is one window: its order is then a seeded permutation of all of it,
the permutation the in-memory loader before issue 26 drew ((seed, epoch) alone), batch for batch.

Determinism: the plan of epoch e depends only on (seed, e) and the index, so a run resumed from
(epoch, batch) loads exactly the batches an uninterrupted run would, whichever loader loads them.

Validation (`resident_faces`): the dev faces stay in memory, decoded once, capped at
`DEV_FACES_MAX` faces spread evenly over the dev index (all of them below the cap).

Split: `data.select_role`, as the voice pairs (dev manifest, else dev carved from train by
identity); manifest test rows are never used. Faces without a voice (`face_only`: the real pairs
source's distractors of train persons) train the decoder too: it needs no voice.

    python -m s2f.train.face_data DATA_DIR      # prints the set's sizes
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from s2f.faces.align import CROP_SIZE, apply_affine, decode_jpeg, similarity_to_template
from s2f.models.face_decoder import pixels_to_normalized
from s2f.preprocess.clips import PREPROCESSED_STATUSES
from s2f.train.data import Role, select_role
from storage.io import read_table_verified, scan, shard_paths
from storage.layout import DataLayout

# Faces shuffled together in one window. 2,048 mixes ~8 shards of the default 256 clips (a
# batch draws from many videos, not one shard's ~50 consecutive manifest lines) while a
# loader's cache of two windows stays under ~65 MB (224² crops: 7 KB in the demo, 15 KB with
# photographic noise; 4,096 × 16 KB, benchmarks/face_stream.py); the demo's 240 training faces
# are one window (the order of the in-memory loader it replaced).
FACE_SHUFFLE_ROWS = 2048
# Dev faces kept decoded for validation. 512 at 224² are 77 MB as uint8 (6 MB at the small
# preset's 64²); the mean of 512 faces' losses is as stable as selection needs, and a run's
# validation stays a few seconds however large dev grows. Below the cap, every dev face.
DEV_FACES_MAX = 512
SHARD_ORDER_KEY = 1  # the shard order's random stream: (seed, epoch, 1); windows use (seed, epoch)


@dataclass
class FaceBatch:
    """Faces, in the order asked for: the decoder's inputs and targets."""

    clip_keys: list[str]
    crops: torch.Tensor      # B×3×S×S uint8
    landmarks: torch.Tensor  # B×68×2 float32, normalised [-1, 1]
    features: torch.Tensor   # B×D float32

    def __len__(self) -> int:
        return len(self.clip_keys)

    def images(self) -> torch.Tensor:
        return self.crops.float() / 255.0

    def take(self, rows: slice) -> FaceBatch:
        return FaceBatch(self.clip_keys[rows], self.crops[rows], self.landmarks[rows],
                         self.features[rows])

    def pin_memory(self) -> FaceBatch:
        """A copy in pinned memory (the DataLoader's pin thread calls this)."""
        return FaceBatch(self.clip_keys, self.crops.pin_memory(), self.landmarks.pin_memory(),
                         self.features.pin_memory())


def crop_landmarks(frame_landmarks: np.ndarray) -> np.ndarray:
    """(N, 68, 2) frame-pixel landmarks → (N, 68, 2) pixels of the aligned 224×224 crop."""
    lm = torch.from_numpy(np.asarray(frame_landmarks, dtype=np.float32))
    return apply_affine(lm, similarity_to_template(lm)).numpy()


def normalized_crop_landmarks(frame_landmarks: np.ndarray) -> torch.Tensor:
    """(N, 136) frame-pixel landmarks → (N, 68, 2) float32 in the crop's [-1, 1] frame."""
    lm_px = crop_landmarks(frame_landmarks.reshape(-1, 68, 2))
    return pixels_to_normalized(torch.from_numpy(lm_px), CROP_SIZE).float()


def decode_crops(jpegs: list[bytes], image_size: int) -> torch.Tensor:
    """JPEG (or PNG) crops → B×3×S×S uint8 at `image_size` (antialiased bilinear)."""
    t = torch.from_numpy(np.stack([decode_jpeg(b) for b in jpegs])).permute(0, 3, 1, 2).float()
    if t.shape[-1] != image_size:
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8)


def _median_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The row of each clip's median sampled frame (by frame time) among `df`'s rows."""
    return (df.sort("clip_key", "frame_time_s", "row")
            .with_columns(pl.int_range(pl.len()).over("clip_key").alias("_i"),
                          pl.len().over("clip_key").alias("_n"))
            .filter(pl.col("_i") == pl.col("_n") // 2).drop("_i", "_n"))


def _shard_rows(paths: list[Path], columns: list[str], where: pl.Expr | None = None,
                median_frame: bool = False) -> pl.DataFrame:
    """clip_key, shard, row of the shards' rows (read as `columns`, filtered by `where`; with
    `median_frame` only each clip's median frame), the first in shard order of each key. Small
    columns only, reduced shard by shard: the index never holds every frame of the table."""
    parts = []
    for i, p in enumerate(paths):
        df = pl.read_parquet(p, columns=columns).with_row_index("row")
        if where is not None:
            df = df.filter(where)
        if median_frame:
            df = _median_frame(df)
        parts.append(df.select("clip_key", pl.lit(i, dtype=pl.Int64).alias("shard"),
                               pl.col("row").cast(pl.Int64)))
    if not parts:
        return pl.DataFrame(schema={"clip_key": pl.String, "shard": pl.Int64, "row": pl.Int64})
    return pl.concat(parts).unique("clip_key", keep="first", maintain_order=True)


def face_index(layout: DataLayout, encoder: str, role: Role, dev_fraction: float) -> pl.DataFrame:
    """clip_key, face_shard, face_row, feat_shard, feat_row: one row per face of `role` (its
    clip's median sampled frame), sorted by clip key. Of a key in several shards (data dirs
    ingested before issue 24), the first shard's frames and feature; of its clips rows, the
    first preprocessed one."""
    clips = (scan(layout, "clips").filter(pl.col("status").is_in(PREPROCESSED_STATUSES))
             .select("clip_key", "youtube_id", "split").collect()
             .unique("clip_key", keep="first", maintain_order=True))
    feats = _shard_rows(shard_paths(layout, "face_features"), ["clip_key", "encoder"],
                        where=pl.col("encoder") == encoder)
    faces = _shard_rows(shard_paths(layout, "faces"), ["clip_key", "frame_time_s"],
                        median_frame=True)
    df = (faces.rename({"shard": "face_shard", "row": "face_row"})
          .join(feats.rename({"shard": "feat_shard", "row": "feat_row"}), on="clip_key")
          .join(clips, on="clip_key"))
    return (select_role(df, role, dev_fraction).sort("clip_key")
            .select("clip_key", "face_shard", "face_row", "feat_shard", "feat_row"))


@dataclass
class ShardRows:
    """One faces shard's faces of a role: positions (into the index, sorted) and their data."""

    positions: np.ndarray
    jpegs: list[bytes]
    landmarks: torch.Tensor  # k×68×2 float32, normalised crop coordinates
    features: np.ndarray   # k×D float32

    def __len__(self) -> int:
        return len(self.positions)

    def where(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.positions, positions)


class ShardRowCache:
    """The most recently used shards' rows, at most `max_rows` faces beside the one last read
    (a shard is never evicted by its own arrival)."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._shards: OrderedDict[int, ShardRows] = OrderedDict()
        self.reads = 0  # shards read so far (a test's and a benchmark's measure of re-reads)

    def rows(self) -> int:
        return sum(len(s) for s in self._shards.values())

    def get(self, shard: int, read: Callable[[int], ShardRows]) -> ShardRows:
        if shard in self._shards:
            self._shards.move_to_end(shard)
            return self._shards[shard]
        rows = read(shard)
        self.reads += 1
        self._shards[shard] = rows
        while len(self._shards) > 1 and self.rows() > self.max_rows:
            self._shards.popitem(last=False)
        return rows


def _fixed_rows(column: pa.ChunkedArray, what: str, path: Path) -> np.ndarray:
    """A list column's rows as an N×K float32 array; a clear error on nulls or ragged rows."""
    col = column.combine_chunks()
    if col.null_count:
        raise ValueError(f"{path}: {col.null_count} null {what} rows among the faces trained on")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValueError(f"{path}: {what} rows of different lengths ({sorted(set(lengths))})")
    values = np.array(pc.list_flatten(col).to_numpy(zero_copy_only=False), np.float32)  # writable
    return values.reshape(len(col), int(lengths[0]) if len(lengths) else 0)


class FaceStream:
    """Seeded, resumable batches of faces of one role, read from the shards (module docstring)."""

    def __init__(self, layout: DataLayout, encoder: str, role: Role, dev_fraction: float,
                 image_size: int, batch_size: int, seed: int = 0,
                 shuffle_rows: int = FACE_SHUFFLE_ROWS) -> None:
        if shuffle_rows < 1 or batch_size < 1:
            raise ValueError(f"shuffle_rows ({shuffle_rows}) and batch_size ({batch_size}) "
                             "must be >= 1")
        self.image_size, self.batch_size = image_size, batch_size
        self.seed, self.shuffle_rows = seed, shuffle_rows
        self.index = face_index(layout, encoder, role, dev_fraction)
        self._face_paths = shard_paths(layout, "faces")
        self._feat_paths = shard_paths(layout, "face_features")
        self._keys = self.index["clip_key"]  # a polars Series: no Python string per face
        self._face_shard = self.index["face_shard"].to_numpy()
        self._face_row = self.index["face_row"].to_numpy()
        self._feat_shard = self.index["feat_shard"].to_numpy()
        self._feat_row = self.index["feat_row"].to_numpy()
        self._by_shard = {int(s): np.flatnonzero(self._face_shard == s)
                          for s in np.unique(self._face_shard)}
        self.cache = ShardRowCache(2 * shuffle_rows)  # the window at hand and the one before

    @property
    def faces(self) -> int:
        return len(self._keys)

    def faces_per_shard(self) -> dict[int, int]:
        """faces shard → this role's faces in it (the shards that hold any)."""
        return {s: len(p) for s, p in self._by_shard.items()}

    def __len__(self) -> int:
        """Batches per epoch (one batch of every face when there are fewer than a batch)."""
        n = self.faces
        return n // self.batch_size if n >= self.batch_size else int(n > 0)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)  # a loader worker starts with an empty cache
        state["cache"] = ShardRowCache(self.cache.max_rows)
        return state

    # -- the order ----------------------------------------------------------------------------
    def windows(self, epoch: int) -> list[np.ndarray]:
        """The positions (sorted) of each window of `epoch`, in the epoch's order."""
        rng = np.random.default_rng([self.seed, epoch, SHARD_ORDER_KEY])
        shards = rng.permutation(np.array(sorted(self._by_shard), dtype=np.int64))
        groups: list[list[int]] = [[]]
        rows = 0
        for s in shards.tolist():
            k = len(self._by_shard[s])
            if groups[-1] and rows + k > self.shuffle_rows:
                groups.append([])
                rows = 0
            groups[-1].append(s)
            rows += k
        return [np.sort(np.concatenate([self._by_shard[s] for s in g])) for g in groups if g]

    def plan(self, epoch: int) -> list[np.ndarray]:
        """Positions of every batch of `epoch`: each window shuffled, windows in order."""
        n = self.faces
        if n == 0:
            return []
        rng = np.random.default_rng([self.seed, epoch])
        order = np.concatenate([w[rng.permutation(len(w))] for w in self.windows(epoch)])
        b = self.batch_size
        return [order[i:i + b] for i in range(0, n - b + 1, b)] or [order]

    def tasks(self, epoch: int, start: int = 0,
              forever: bool = False) -> Iterator[tuple[int, int, np.ndarray]]:
        """(epoch, batch number, positions) from (epoch, start) on: one epoch, or `forever`."""
        while True:
            for i, positions in enumerate(self.plan(epoch)):
                if i >= start:
                    yield epoch, i, positions
            if not forever:
                return
            epoch, start = epoch + 1, 0

    # -- reading ------------------------------------------------------------------------------
    def _read_shard(self, shard: int, positions: np.ndarray | None = None) -> ShardRows:
        """The rows of `positions` (default: all of this role's) of one faces shard, with
        their features. Verified reads: a flipped bit is an error, never a wrong target."""
        pos = self._by_shard[shard] if positions is None else np.sort(positions)
        path = self._face_paths[shard]
        faces = read_table_verified(path, ["crop_jpeg", "landmarks"]).take(
            pa.array(self._face_row[pos]))
        jpegs = faces.column("crop_jpeg").to_pylist()
        if any(j is None for j in jpegs):
            raise ValueError(f"{path}: a face trained on has no crop_jpeg")
        # into crop coordinates once per shard read, not per batch
        landmarks = normalized_crop_landmarks(_fixed_rows(faces.column("landmarks"),
                                                          "landmarks", path))
        features: np.ndarray | None = None
        for f in np.unique(self._feat_shard[pos]).tolist():
            mine = np.flatnonzero(self._feat_shard[pos] == f)
            fpath = self._feat_paths[f]
            col = read_table_verified(fpath, ["feature"]).column("feature").take(
                pa.array(self._feat_row[pos[mine]]))
            rows = _fixed_rows(col, "feature", fpath)
            if features is None:
                features = np.empty((len(pos), rows.shape[1]), np.float32)
            features[mine] = rows
        assert features is not None
        return ShardRows(pos, jpegs, landmarks, features)

    def _gather(self, positions: np.ndarray, cached: bool) -> FaceBatch:
        """The faces at `positions`, in that order: shard by shard, decoded here."""
        n = len(positions)
        jpegs: list[bytes] = [b""] * n
        landmarks = torch.empty((n, 68, 2), dtype=torch.float32)
        features: np.ndarray | None = None
        shards = self._face_shard[positions]
        for s in np.unique(shards).tolist():
            slots = np.flatnonzero(shards == s)
            rows = (self.cache.get(s, self._read_shard) if cached
                    else self._read_shard(s, positions[slots]))
            at = rows.where(positions[slots])
            for slot, j in zip(slots.tolist(), at.tolist(), strict=True):
                jpegs[slot] = rows.jpegs[j]
            landmarks[torch.from_numpy(slots)] = rows.landmarks[torch.from_numpy(at)]
            if features is None:
                features = np.empty((n, rows.features.shape[1]), np.float32)
            features[slots] = rows.features[at]
        assert features is not None
        return FaceBatch(self._keys.gather(positions).to_list(),
                         decode_crops(jpegs, self.image_size),
                         landmarks, torch.from_numpy(features))

    def load(self, positions: np.ndarray, epoch: int | None = None) -> FaceBatch:
        """A training batch (`epoch` given: through the window cache) or any faces (None: read
        from their shards, nothing kept)."""
        if len(positions) == 0:
            raise ValueError("no faces to load")
        return self._gather(np.asarray(positions, np.int64), cached=epoch is not None)

    def mean_landmarks(self) -> torch.Tensor:
        """68×2 mean of every face's normalised crop landmarks (float64 sums, shard by shard)."""
        if self.faces == 0:
            raise ValueError("no faces: their mean shape is undefined")
        total = np.zeros((68, 2), np.float64)
        for s, pos in self._by_shard.items():
            path = self._face_paths[s]
            col = read_table_verified(path, ["landmarks"]).column("landmarks").take(
                pa.array(self._face_row[pos]))
            lm = normalized_crop_landmarks(_fixed_rows(col, "landmarks", path))
            total += lm.double().sum(dim=0).numpy()
        return torch.from_numpy(total / self.faces).float()


def resident_faces(stream: FaceStream, limit: int = DEV_FACES_MAX) -> FaceBatch | None:
    """Up to `limit` faces of `stream`, evenly spread over its index, decoded and kept (every
    face when there are at most `limit`); None when it has none."""
    n = stream.faces
    if n == 0:
        return None
    positions = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64))
    return stream.load(positions)


if __name__ == "__main__":
    lay = DataLayout(Path(sys.argv[1]))
    for r in ("train", "dev", "test"):
        s = FaceStream(lay, "dlib-resnet", r, 0.1, 64, 16)  # type: ignore[arg-type]
        print(r, s.faces, "faces in", len(s.windows(0)) if s.faces else 0, "windows")
