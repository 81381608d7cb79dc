"""The evaluation data: the identity-disjoint dev or test split and what it is compared against.

Evaluation set of a role: `clips` rows with status ok of that role joined with `face_features`
(one face encoder) on clip_key. The roles are `s2f.train.data.select_role`'s, the one place that
says which rows are train, dev and test: test is the manifest's test split (never trained on,
never read by a decision), dev is the part of the training split that validation reads (the
promotion gate reads dev too).

Identity: the clips table's `person_id` where it has one (the real pairs source: a VoxCeleb
name, an AVSpeech video), else the YouTube video id (AVSpeech has no speaker labels), or, when
the demo corpus's `identities.parquet` is available, the corpus identity that owns the video
(several videos may show one identity). `EvalSet.identity_source` records which one was used.

Distractors: faces without a voice (`face_only` clips: the real pairs source's extra faces) of
the scored role join its retrieval pools (`distractor_features`); the pairs source puts a
distractor in test only when its person is in no other split.

Snapshot id: sha256 of the sorted test clip keys (first 16 hex digits). Two evaluations are
comparable only when their snapshot ids are equal; the hash of the feature bytes is kept
beside it (`features_hash`) so re-extracted features show up too.

    python -m s2f.evaluation.data DATA_DIR [ENCODER]     # prints the test set's size and ids
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import polars as pl

from storage.io import scan, shard_paths
from storage.layout import DataLayout

EvalRole = Literal["dev", "test"]
DEFAULT_DEV_FRACTION = 0.1  # TrainConfig.dev_fraction's default; a model's run param wins

IDENTITY_COLUMNS = ("identity_id", "identity", "identity_key", "speaker_id")


class EvaluationDataError(ValueError):
    """The data directory cannot be evaluated (no test clips, no features, bad identities)."""


class EmptySplitError(EvaluationDataError):
    """The role has no ok clips (e.g. a corpus too small to hold dev identities)."""


@dataclass
class EvalSet:
    clip_keys: list[str]
    youtube_ids: list[str]
    identities: list[str]
    audio_paths: list[Path]
    features: np.ndarray          # N×D true face features
    encoder: str
    identity_source: str          # "youtube_id" or the identities.parquet path
    split_snapshot_id: str
    features_hash: str
    role: str = "test"

    def __len__(self) -> int:
        return len(self.clip_keys)

    def identity_pool(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Per-identity averaged true features (the retrieval pool, as in SF2F) and, for each
        clip, the index of its identity in the pool."""
        names = sorted(set(self.identities))
        index = {n: i for i, n in enumerate(names)}
        target = np.array([index[n] for n in self.identities], dtype=np.int64)
        return names, group_means(self.features, target, len(names)), target


# Numbers divided at once by `group_means`: 1 M float64 = 8 MB of temporary.
GROUP_BLOCK_NUMBERS = 1 << 20


def group_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean row of `values` per group (`groups[i]` in 0..n_groups-1; every group non-empty),
    in one pass: equal, bit for bit, to `values[groups == g].mean(axis=0)` for each g (rows
    summed in order, in the values' dtype, then divided as numpy's mean divides) without a
    scan of all rows per group."""
    values = np.asarray(values)
    counts = np.bincount(groups, minlength=n_groups)
    if len(counts) != n_groups or (counts == 0).any():
        raise ValueError(f"group_means: {int((counts[:n_groups] == 0).sum())} empty groups or "
                         f"group ids beyond {n_groups - 1}")
    sums = np.zeros((n_groups, *values.shape[1:]), values.dtype)
    np.add.at(sums, groups, values)
    # divided in place, a slice of groups at a time: the float64 quotient of one slice is the
    # only temporary (the result is the sums' own memory)
    shape = (-1,) + (1,) * (values.ndim - 1)
    step = max(1, GROUP_BLOCK_NUMBERS // max(int(np.prod(values.shape[1:])), 1))
    for i in range(0, n_groups, step):
        sums[i:i + step] = sums[i:i + step] / counts[i:i + step].reshape(shape).astype(np.intp)
    return sums


def split_snapshot_id(clip_keys: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(clip_keys)).encode()).hexdigest()
    return digest[:16]


def _features_hash(keys: list[str], features: np.ndarray) -> str:
    order = np.argsort(np.asarray(keys))
    return hashlib.sha256(np.ascontiguousarray(features[order], np.float32).tobytes()).hexdigest()[:16]


def _ok_clips(layout: DataLayout) -> pl.DataFrame:
    from s2f.train.data import ok_clips

    if not shard_paths(layout, "clips"):
        raise EvaluationDataError(f"{layout.root}: no clips table; run `s2f ingest` first")
    return ok_clips(layout).unique("clip_key", keep="first", maintain_order=True).collect()


# What the real pairs source (`s2f.ingest.pairs`) adds to a clip: its true face image, the
# paper's reconstructions and the page's demographic labels. Null for video clips.
PAIR_COLUMNS = ("face_image_path", "paper_s2f_path", "paper_f2f_path", "gender", "age_band",
                "ethnicity")


def clip_details(layout: DataLayout, clip_keys: list[str]) -> pl.DataFrame:
    """clip_key + `PAIR_COLUMNS` of `clip_keys`, in that order (nulls where a clip has none)."""
    found = (scan(layout, "clips").filter(pl.col("clip_key").is_in(pl.Series(clip_keys).implode()))
             .select("clip_key", *PAIR_COLUMNS).unique("clip_key", keep="first").collect())
    return pl.DataFrame({"clip_key": clip_keys}).join(found, on="clip_key", how="left",
                                                      maintain_order="left")


def distractor_features(layout: DataLayout, encoder: str, role: str
                        ) -> tuple[list[str], np.ndarray]:
    """(clip keys, K×D features) of the faces without a voice (`face_only` clips) of `role`'s
    split: extra entries of the role's retrieval pools. Empty when there are none."""
    rows = (scan(layout, "clips").filter((pl.col("status") == "face_only") & (pl.col("split") == role))
            .select("clip_key").unique().collect())
    if rows.height == 0 or not shard_paths(layout, "face_features"):
        return [], np.zeros((0, 0), np.float32)
    feats = _features(layout, encoder, rows["clip_key"]).sort("clip_key")
    if feats.height == 0:
        return [], np.zeros((0, 0), np.float32)
    return feats["clip_key"].to_list(), _to_matrix(feats["feature"])


def _features(layout: DataLayout, encoder: str, keys: pl.Series | None = None) -> pl.DataFrame:
    paths = shard_paths(layout, "face_features")
    if not paths:
        raise EvaluationDataError(f"{layout.root}: no face_features table; run `s2f preprocess`")
    lf = (pl.scan_parquet([str(p) for p in paths])
          .filter(pl.col("encoder") == encoder).select("clip_key", "feature"))
    if keys is not None:
        lf = lf.filter(pl.col("clip_key").is_in(keys.implode()))
    return lf.unique("clip_key", keep="first", maintain_order=True).collect()


def _to_matrix(col: pl.Series) -> np.ndarray:
    if col.dtype == pl.Array:
        return col.to_numpy().astype(np.float32)
    return np.asarray(col.to_list(), dtype=np.float32)


def load_identities(path: Path) -> pl.DataFrame:
    """identities.parquet → one row per youtube_id with `identity` and the voice parameters.
    Accepts one row per video (`youtube_id`) or one row per identity with a `youtube_ids` list."""
    df = pl.read_parquet(path)
    id_col = next((c for c in IDENTITY_COLUMNS if c in df.columns), None)
    if id_col is None:
        raise EvaluationDataError(f"{path}: no identity column (one of {IDENTITY_COLUMNS})")
    if "youtube_ids" in df.columns and "youtube_id" not in df.columns:
        df = df.explode("youtube_ids").rename({"youtube_ids": "youtube_id"})
    if "youtube_id" not in df.columns:
        raise EvaluationDataError(f"{path}: no youtube_id or youtube_ids column")
    df = df.with_columns(pl.col(id_col).cast(pl.String).alias("identity"))
    if id_col != "identity":
        df = df.drop(id_col)
    return df.unique("youtube_id", keep="first", maintain_order=True)


def default_identities_path(layout: DataLayout) -> Path | None:
    p = layout.demo_corpus_dir / "identities.parquet"
    return p if p.exists() else None


def role_clips(layout: DataLayout, role: str, dev_fraction: float = DEFAULT_DEV_FRACTION
               ) -> pl.DataFrame:
    """The ok clips of one role (train, dev or test), by `s2f.train.data.select_role`."""
    from s2f.train.data import select_role

    if role not in ("train", "dev", "test"):
        raise ValueError(f"unknown role {role!r}: train, dev or test")
    return select_role(_ok_clips(layout), role, dev_fraction)  # type: ignore[arg-type]


def load_eval_set(layout: DataLayout, encoder: str, identities_path: Path | None = None,
                  role: EvalRole = "test", dev_fraction: float = DEFAULT_DEV_FRACTION) -> EvalSet:
    """The dev or test split with its true features; identities from `identities_path`."""
    clips = role_clips(layout, role, dev_fraction)
    if clips.height == 0:
        raise EmptySplitError(f"{layout.root}: no ok clips of role {role!r}")
    feats = _features(layout, encoder, clips["clip_key"])
    df = clips.join(feats, on="clip_key", how="inner").sort("clip_key")
    if df.height == 0:
        raise EvaluationDataError(
            f"{layout.root}: no face_features rows of encoder {encoder!r} for the "
            f"{clips.height} {role} clips")
    source = "youtube_id"
    identities = df["youtube_id"].to_list()
    if df["person_id"].is_not_null().any():
        identities = df.select(pl.coalesce("person_id", "youtube_id"))["person_id"].to_list()
        source = "person_id"
    if identities_path is not None:
        ids = load_identities(identities_path).select("youtube_id", "identity")
        df = df.join(ids, on="youtube_id", how="left")
        missing = df.filter(pl.col("identity").is_null())["youtube_id"].unique().to_list()
        if missing:
            raise EvaluationDataError(f"{identities_path}: no identity for videos {missing[:5]}")
        identities, source = df["identity"].to_list(), str(identities_path)
    keys = df["clip_key"].to_list()
    features = _to_matrix(df["feature"])
    return EvalSet(
        clip_keys=keys, youtube_ids=df["youtube_id"].to_list(), identities=identities,
        audio_paths=[layout.resolve(p) for p in df["audio_path"].to_list()],
        features=features, encoder=encoder, identity_source=source,
        split_snapshot_id=split_snapshot_id(keys), features_hash=_features_hash(keys, features),
        role=role)


def current_split_snapshot_id(layout: DataLayout, encoder: str, role: EvalRole = "test",
                        dev_fraction: float = DEFAULT_DEV_FRACTION) -> str:
    """The snapshot id the dev or test split has now (without reading the features)."""
    clips = role_clips(layout, role, dev_fraction)
    paths = shard_paths(layout, "face_features")
    if not paths:
        raise EvaluationDataError(f"{layout.root}: no face_features table; run `s2f preprocess`")
    feats = (pl.scan_parquet([str(p) for p in paths])
             .filter(pl.col("encoder") == encoder).select("clip_key").unique().collect())
    return split_snapshot_id(clips.join(feats, on="clip_key")["clip_key"].to_list())


def training_clips(layout: DataLayout, encoder: str,
                   dev_fraction: float = DEFAULT_DEV_FRACTION) -> pl.DataFrame:
    """The train role's clips (dev excluded) that have a true feature of `encoder`, sorted by
    clip key, without the features: those are read shard by shard (`training_feature_blocks`)
    by whatever needs them (the mean face, the ridges), so the train features (16 GB at a
    million 4096-D clips) are never in memory at once. Columns: the clips table's."""
    train = role_clips(layout, "train", dev_fraction)
    paths = shard_paths(layout, "face_features")
    if not paths:
        raise EvaluationDataError(f"{layout.root}: no face_features table; run `s2f preprocess`")
    keys = (pl.scan_parquet([str(p) for p in paths])
            .filter((pl.col("encoder") == encoder)
                    & pl.col("clip_key").is_in(train["clip_key"].implode()))
            .select("clip_key").unique().collect())
    if keys.height == 0:
        raise EvaluationDataError(f"{layout.root}: no train features of encoder {encoder!r}")
    return train.join(keys, on="clip_key", how="inner").sort("clip_key")


class FeatureSink(Protocol):
    """Something that takes the train features block by block: rows (indices into the
    `training_clips` frame) and their features."""

    def add(self, rows: np.ndarray, features: np.ndarray) -> None: ...


def training_feature_blocks(layout: DataLayout, encoder: str, train: pl.DataFrame
                            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The true features of `train`'s clips (`training_clips`: sorted by clip key), one
    face_features shard at a time: (row indices into `train`, float32 rows). Each clip comes
    once, from the first shard that has it (as the whole-table read keeps the first); memory
    is one shard's features, whatever the number of clips."""
    keys = train["clip_key"]
    seen = np.zeros(len(keys), bool)
    if len(keys) == 0:
        return
    for path in shard_paths(layout, "face_features"):
        shard = (pl.scan_parquet(str(path)).filter(pl.col("encoder") == encoder)
                 .select("clip_key", "feature").collect())
        shard = shard.filter(pl.col("clip_key").is_first_distinct())
        if shard.height == 0:
            continue
        # sorted keys: a binary search per shard row finds its train row (or none)
        pos = keys.search_sorted(shard["clip_key"], side="left").to_numpy()
        at = np.minimum(pos, len(keys) - 1)
        hit = (keys.gather(at) == shard["clip_key"]).to_numpy() & (pos < len(keys))
        hit[hit] = ~seen[pos[hit]]
        if hit.any():
            seen[pos[hit]] = True
            yield pos[hit], _to_matrix(shard["feature"].filter(pl.Series(hit)))
    if not seen.all():
        raise EvaluationDataError(f"{layout.root}: {int((~seen).sum())} train clips lost their "
                                  f"{encoder!r} features while being read")


def feed_training_features(layout: DataLayout, encoder: str, train: pl.DataFrame,
                           sinks: Sequence[FeatureSink]) -> None:
    """One pass over the train features (`training_feature_blocks`), each block to every sink."""
    for rows, block in training_feature_blocks(layout, encoder, train):
        for sink in sinks:
            sink.add(rows, block)


class FeatureMean:
    """The mean train feature as a running sum (float64: a float32 sum of a million rows
    would keep ~4 digits), block by block: the mean face's one prediction."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, rows: np.ndarray, features: np.ndarray) -> None:
        block = np.asarray(features, np.float64).sum(axis=0)
        self.total = block if self.total is None else self.total + block
        self.count += len(rows)

    def mean(self) -> np.ndarray:
        if self.total is None:
            raise EvaluationDataError("no train features: no mean face")
        return (self.total / self.count).astype(np.float32)


def training_mean_feature(layout: DataLayout, encoder: str,
                          dev_fraction: float = DEFAULT_DEV_FRACTION) -> np.ndarray:
    """Mean true feature over the train role: the "mean face" baseline's one prediction
    (read shard by shard)."""
    mean = FeatureMean()
    feed_training_features(layout, encoder, training_clips(layout, encoder, dev_fraction), [mean])
    return mean.mean()


def face_crops(layout: DataLayout, clip_keys: list[str]) -> dict[str, bytes]:
    """The first detected face crop (JPEG) of each clip, where the faces table has one."""
    paths = shard_paths(layout, "faces")
    if not paths or not clip_keys:
        return {}
    df = (pl.scan_parquet([str(p) for p in paths])
          .filter(pl.col("clip_key").is_in(pl.Series(clip_keys).implode())
                  & pl.col("crop_jpeg").is_not_null())
          .sort("clip_key", "frame_time_s").unique("clip_key", keep="first")
          .select("clip_key", "crop_jpeg").collect())
    return dict(zip(df["clip_key"].to_list(), df["crop_jpeg"].to_list(), strict=True))


def data_summary(layout: DataLayout) -> dict[str, object]:
    """What the model card says about the data: manifests, counts by status, split sizes."""
    paths = shard_paths(layout, "clips")
    if not paths:
        return {"manifests": [], "rows": 0, "status_counts": {}, "split_counts": {},
                "split_videos": {}, "train_snapshot_id": None}
    clips = scan(layout, "clips").select(
        "clip_key", "manifest", "status", "split", "youtube_id").collect()
    ok = clips.filter(pl.col("status") == "ok")
    return {
        "train_snapshot_id": split_snapshot_id(
            ok.filter(pl.col("split") == "train")["clip_key"].drop_nulls().to_list()),
        "manifests": sorted(clips["manifest"].unique().to_list()),
        "rows": clips.height,
        "status_counts": dict(clips.group_by("status").len().sort("status").iter_rows()),
        "split_counts": dict(ok.group_by("split").len().sort("split").iter_rows()),
        "split_videos": dict(ok.group_by("split").agg(pl.col("youtube_id").n_unique())
                             .sort("split").iter_rows()),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    layout = DataLayout(Path(args[0]))
    es = load_eval_set(layout, args[1] if len(args) > 1 else "dlib-resnet",
                       default_identities_path(layout))
    print(f"{len(es)} test clips, {len(set(es.identities))} identities ({es.identity_source}), "
          f"dim {es.features.shape[1]}, snapshot {es.split_snapshot_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
