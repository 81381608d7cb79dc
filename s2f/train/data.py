"""Training data: (audio, face feature) pairs streamed from the Parquet tables with bounded memory.

Index: `clips` (status ok) ⋈ `face_features` (one encoder) on clip_key, small columns only
(clip_key, youtube_id, split, audio_path, shard, row). Features stay in their shards: an epoch
visits the face_features shards in a seeded order and the rows of each in a seeded order, and a
batch reads its features from at most two cached shards; audio is decoded per batch (PyAV).

Splits (`select_role`): the manifest's ``split == 'test'`` rows are never trained on (role
``test``). Validation is the dev split: the rows of a ``dev`` manifest when there is one (the
demo corpus writes train / dev / test, disjoint by real person); otherwise (AVSpeech ships only
train and test) dev is carved from the train rows by identity: the ``identity_id`` column where
the table has one, else the YouTube video id (one video, one speaker) is in dev when
``sha1(identity) / 2**160 < dev_fraction``, so no identity has clips on both sides and the
carving is the same on every run and machine.

Shuffled-voice control (`shuffle_voices=True`, training role only): every clip of training
identity A is paired with the face feature of identity B = `voice_derangement(...)[A]` (the
feature of B's first clip), a fixed derangement drawn from the seed: the same training, with
no true voice-face link, so a model trained so should score at chance.

Audio: a batch's clips are read through `s2f.media.packs.AudioReader`: packed clips (one pack
per clips shard, and a batch is drawn from one face_features shard = one clips shard) as a few
forward reads of one file, clips of data ingested before packs one FLAC each. A clip whose
audio cannot be read (pack missing, CRC-32 failing, FLAC not decoding) is left out of its batch
and logged once, with its key and why (`PairStream.audio_errors`); a batch with no readable clip
raises. Decoding: PyAV (default) or NVIDIA DALI per batch (`loader="dali"`,
`s2f.media.dali_audio`); both give the same samples.

Crops: validation and test take each clip's first `seconds`; training (`random_crop=True`) takes
a window at a random offset, drawn from (seed, epoch, the pair's position in the index) alone,
so a sample's crop does not depend on which batch or rank loads it. With 3 s windows of 4-10 s
clips this is the cheapest augmentation there is: a fixed window lets a small corpus be
memorised (the demo corpus's validation loss rose after a few hundred steps without it).
With `augment` (training role only, `s2f.train.augment`: speed, gain, noise; off by default)
each training sample is also perturbed, drawn from the same (seed, epoch, position) so resumed
runs and loader workers see the same waves; validation and test never are.

Determinism: the batch plan of epoch e depends only on (seed, e), so a run resumed from
(epoch, batch) sees exactly the batches an uninterrupted run would. Under torchrun every rank
computes the same plan and loads only its contiguous slice of each batch (`part=(rank, world)`,
`s2f.train.distributed.rank_slice`), so the ranks together see the one-process batches.

    python -m s2f.train.data DATA_DIR      # prints the number of pairs per role
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch

from s2f.media.audio import AudioConfig, crop_fixed
from s2f.media.packs import AudioReader, AudioReadError, decode
from s2f.train.augment import Augment
from s2f.train.distributed import rank_slice
from storage.io import read_table_verified, scan, shard_paths
from storage.layout import DataLayout

Role = Literal["train", "dev", "test"]

log = logging.getLogger(__name__)


def is_dev(youtube_id: str, dev_fraction: float) -> bool:
    """Identity-disjoint split: the video id (AVSpeech's stand-in for identity) decides."""
    h = int.from_bytes(hashlib.sha1(youtube_id.encode()).digest(), "big")
    return h / 2**160 < dev_fraction


def ok_clips(layout: DataLayout) -> pl.LazyFrame:
    """The clips with status ok and cut audio: clip_key, youtube_id, person_id, split,
    audio_path. `person_id` (the real pairs source's person) is null where the clips table has
    none (AVSpeech rows; shards written before the column existed read it as null)."""
    return (scan(layout, "clips")
            .filter((pl.col("status") == "ok") & pl.col("audio_path").is_not_null())
            .select("clip_key", "youtube_id", "person_id", "split", "audio_path"))


def pair_index(layout: DataLayout, encoder: str, role: Role, dev_fraction: float) -> pl.DataFrame:
    """clip_key, youtube_id, person_id, audio_path, shard, row for one role, sorted by
    (shard, row). One row per clip key (the first `ok` row in shard order: ingests before issue
    24 could write a key twice from two manifests); a video with `ok` rows in two splits is
    refused (`SplitLeakError`): it would put one speaker on both sides."""
    clips = ok_clips(layout).collect().unique("clip_key", keep="first", maintain_order=True)
    check_one_split_per_video(clips)
    parts = []
    for i, p in enumerate(shard_paths(layout, "face_features")):
        keys = pl.read_parquet(p, columns=["clip_key", "encoder"]).with_row_index("row")
        keys = keys.filter(pl.col("encoder") == encoder).drop("encoder")
        parts.append(keys.with_columns(pl.lit(i, dtype=pl.Int64).alias("shard"),
                                       pl.col("row").cast(pl.Int64)))
    if not parts or clips.height == 0:
        return pl.DataFrame(schema={"clip_key": pl.String, "youtube_id": pl.String,
                                    "person_id": pl.String, "audio_path": pl.String,
                                    "shard": pl.Int64, "row": pl.Int64})
    idx = pl.concat(parts).unique("clip_key", keep="first").join(clips, on="clip_key", how="inner")
    return select_role(idx, role, dev_fraction).drop("split").sort("shard", "row")


class SplitLeakError(ValueError):
    """A video (one speaker) has usable clips in two splits: training would leak it."""


def check_one_split_per_video(clips: pl.DataFrame) -> None:
    """Raise SplitLeakError naming the videos whose `ok` clips are in more than one split."""
    leaks = (clips.group_by("youtube_id").agg(pl.col("split").unique().sort())
             .filter(pl.col("split").list.len() > 1).sort("youtube_id"))
    if leaks.height:
        shown = ", ".join(f"{y} ({'/'.join(s)})" for y, s in leaks.head(5).iter_rows())
        raise SplitLeakError(f"{leaks.height} videos have ok clips in two splits: {shown}; "
                             "re-ingest their manifests (s2f ingest) so that one split keeps them")


def select_role(df: pl.DataFrame, role: Role, dev_fraction: float) -> pl.DataFrame:
    """The rows of `role`. test: the manifest's test split. dev: the dev manifest's rows if
    `df` has any, else the train rows whose identity `is_dev`; train: the other train rows.
    `df` needs `split` and `youtube_id`; an `identity_id` or `person_id` column, where not
    null, is the identity (else the youtube id is). Hashes once per distinct identity, then
    joins."""
    if role == "test":
        return df.filter(pl.col("split") == "test")
    if (df["split"] == "dev").any():
        return df.filter(pl.col("split") == role)
    train = df.filter(pl.col("split") == "train")
    train = train.with_columns(identity_of(train).alias("_identity"))
    names = train["_identity"].unique()
    dev = pl.DataFrame({"_identity": names,
                        "_dev": [is_dev(y, dev_fraction) for y in names.to_list()]},
                       schema={"_identity": pl.String, "_dev": pl.Boolean})
    train = train.join(dev, on="_identity", how="left", maintain_order="left")
    return train.filter(pl.col("_dev") if role == "dev" else ~pl.col("_dev")).drop("_identity", "_dev")


IDENTITY_SOURCES = ("identity_id", "person_id")  # in order of precedence, before youtube_id


def identity_of(df: pl.DataFrame) -> pl.Expr:
    """The identity of a row: `identity_id` (demo corpus) or `person_id` (the real pairs
    source's person: a VoxCeleb name, an AVSpeech video) where the table has one and it is not
    null, else the youtube id (AVSpeech has no speaker labels: one video, one speaker)."""
    return pl.coalesce(*[pl.col(c) for c in IDENTITY_SOURCES if c in df.columns],
                       pl.col("youtube_id"))


def voice_derangement(identities: list[str], seed: int) -> dict[str, str]:
    """identity → another identity, a permutation without fixed points drawn from `seed`
    alone: the distinct identities in a seeded random order, each mapped to the next (the last
    to the first), so no identity keeps its own face."""
    names = sorted(set(identities))
    if len(names) < 2:
        raise ValueError("shuffle_voices needs at least two training identities")
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,))).permutation(len(names))
    ring = [names[i] for i in order]
    return {a: b for a, b in zip(ring, ring[1:] + ring[:1], strict=True)}


def shuffled_feature_rows(index: pl.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(shard, row) of the feature each pair of `index` is trained on under shuffle_voices:
    the first (shard, row) of its identity's partner in `voice_derangement`."""
    ids = index.with_columns(identity_of(index).alias("_identity"))
    partner = voice_derangement(ids["_identity"].unique().to_list(), seed)
    first = (ids.sort("shard", "row").group_by("_identity", maintain_order=True)
             .agg(pl.col("shard").first().alias("_shard"), pl.col("row").first().alias("_row")))
    pairs = pl.DataFrame({"_identity": list(partner), "_partner": list(partner.values())},
                         schema={"_identity": pl.String, "_partner": pl.String})
    mapped = (ids.select("_identity").join(pairs, on="_identity", how="left", maintain_order="left")
              .join(first.rename({"_identity": "_partner"}), on="_partner", how="left",
                    maintain_order="left"))
    return mapped["_shard"].to_numpy(), mapped["_row"].to_numpy()


@dataclass
class Batch:
    clip_keys: list[str]
    waves: torch.Tensor      # B×N float32, fixed length
    features: torch.Tensor   # B×D float32

    def pin_memory(self) -> Batch:
        """A copy in pinned memory (the DataLoader's pin thread calls this)."""
        return Batch(self.clip_keys, self.waves.pin_memory(), self.features.pin_memory())


class FeatureShards:
    """Reads feature rows from face_features shards, keeping at most `cache` shards in memory."""

    def __init__(self, paths: list[Path], cache: int = 2) -> None:
        self.paths, self.cache = paths, cache
        self._loaded: dict[int, np.ndarray] = {}

    def rows(self, shard: int, rows: np.ndarray) -> np.ndarray:
        if shard not in self._loaded:
            while len(self._loaded) >= self.cache:
                self._loaded.pop(next(iter(self._loaded)))
            # Verified: a flipped bit in a feature page is an error, never a wrong target.
            col = pl.DataFrame(pl.from_arrow(read_table_verified(self.paths[shard],
                                                                 ["feature"])))["feature"]
            self._loaded[shard] = np.asarray(col.to_numpy().tolist(), dtype=np.float32) \
                if col.dtype != pl.Array else col.to_numpy().astype(np.float32)
        return self._loaded[shard][rows]


class PairStream:
    """Seeded, resumable batches of (fixed-length waveform, face feature)."""

    def __init__(self, layout: DataLayout, encoder: str, role: Role, audio: AudioConfig,
                 batch_size: int, seed: int = 0, dev_fraction: float = 0.1,
                 shuffle: bool = True, drop_last: bool = True,
                 loader: Literal["pyav", "dali"] = "pyav", random_crop: bool = False,
                 part: tuple[int, int] = (0, 1), shuffle_voices: bool = False,
                 augment: Augment | None = None) -> None:
        self.layout, self.audio, self.batch_size = layout, audio, batch_size
        self.part = part  # (rank, world): `batches` loads only this rank's slice of each batch
        self.loader = loader
        self._dali = None
        if loader == "dali":
            from s2f.media.dali_audio import DaliAudioLoader

            self._dali = DaliAudioLoader(batch_size, audio.sample_rate)
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.random_crop = random_crop
        if augment is not None and role != "train":
            raise ValueError("augment perturbs training waves only: dev and test stay as recorded")
        self.augment = augment
        self.index = pair_index(layout, encoder, role, dev_fraction)
        self.shards = FeatureShards(shard_paths(layout, "face_features"))
        self._shard_of = self.index["shard"].to_numpy()
        self._row_of = self.index["row"].to_numpy()
        # where each pair's feature is read: its own, or under the control another identity's
        self._feat_shard, self._feat_row = self._shard_of, self._row_of
        if shuffle_voices:
            if role != "train":
                raise ValueError("shuffle_voices is a training control: dev and test keep "
                                 "their true pairs")
            self._feat_shard, self._feat_row = shuffled_feature_rows(self.index, seed)
        self._keys = self.index["clip_key"].to_list()
        self._audio = self.index["audio_path"].to_list()
        self.reader = AudioReader()
        self.audio_errors: dict[str, str] = {}  # clip key -> why its audio was left out

    def __len__(self) -> int:
        n = self.index.height
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """Positions (into the index) of every batch of `epoch`: shards in a seeded order, rows
        shuffled within each shard."""
        n = self.index.height
        if not self.shuffle:
            order = np.arange(n)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            shards = np.unique(self._shard_of)
            order = np.concatenate([rng.permutation(np.flatnonzero(self._shard_of == s))
                                    for s in rng.permutation(shards)]) if n else np.arange(0)
        return [order[i:i + self.batch_size] for i in range(0, len(self) * self.batch_size,
                                                            self.batch_size)]

    def crop_positions(self, positions: np.ndarray, epoch: int | None) -> list[float | None]:
        """Where each pair's window starts (fraction of its free range), None: at the start."""
        if not self.random_crop or epoch is None:
            return [None] * len(positions)
        return [float(np.random.default_rng([self.seed, epoch, int(p)]).random())
                for p in positions]

    def load(self, positions: np.ndarray, epoch: int | None = None) -> Batch:
        """The pairs at `positions` (less any whose audio cannot be read); `epoch` seeds the
        random crops (None: first window)."""
        positions, raw = self._read_waves(np.asarray(positions))
        rows = [self.shards.rows(int(self._feat_shard[p]), np.array([self._feat_row[p]]))
                for p in positions]
        feats = np.concatenate(rows) if rows else np.empty((0, 0), dtype=np.float32)
        n, crops = self.audio.num_samples, self.crop_positions(positions, epoch)
        if self.augment is None or epoch is None:  # no epoch: first windows, as recorded
            waves = np.stack([crop_fixed(w, n, where) for w, where in zip(raw, crops, strict=True)])
        else:
            waves = np.stack([self._augmented(w, n, where, epoch, int(p)) for w, where, p
                              in zip(raw, crops, positions, strict=True)])
        return Batch([self._keys[p] for p in positions], torch.from_numpy(waves),
                     torch.from_numpy(feats))

    def _read_waves(self, positions: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The positions whose audio reads and their waves; the others are logged (once per
        clip) and recorded in `audio_errors`. Raises AudioReadError when none reads."""
        keys = [self.layout.resolve(self._audio[p]) for p in positions]
        blobs = self.reader.encoded(keys)
        if self._dali is not None:
            good = [b for b in blobs if isinstance(b, bytes)]
            waves = iter(self._dali.load_encoded(good))
            raw: list[np.ndarray | AudioReadError] = [
                b if isinstance(b, AudioReadError) else next(waves) for b in blobs]
        else:
            raw = [b if isinstance(b, AudioReadError) else decode(k, b, self.audio.sample_rate)
                   for k, b in zip(keys, blobs, strict=True)]
        kept = [i for i, w in enumerate(raw) if not isinstance(w, AudioReadError)]
        for p, wave in zip(positions, raw, strict=True):
            if isinstance(wave, AudioReadError) and self._keys[p] not in self.audio_errors:
                self.audio_errors[self._keys[p]] = wave.reason
                log.warning("clip %s left out of training batches: %s", self._keys[p], wave)
        if len(positions) and not kept:
            raise AudioReadError(keys[0], f"no clip of this batch of {len(positions)} reads "
                                          f"(the first: {raw[0]})")
        return positions[kept], [w for w in raw if not isinstance(w, AudioReadError)]

    def _augmented(self, wave: np.ndarray, n: int, where: float | None, epoch: int,
                   position: int) -> np.ndarray:
        """One training window under `augment`: speed on the clip, then the crop, gain, noise."""
        assert self.augment is not None
        rng = self.augment.rng(self.seed, epoch, position)
        clip = self.augment.before_crop(np.asarray(wave, np.float32), rng)
        return self.augment.after_crop(crop_fixed(clip, n, where), rng)

    def tasks(self, epoch: int, start: int = 0,
              forever: bool = False) -> Iterator[tuple[int, int, np.ndarray]]:
        """(epoch, batch number, this rank's positions) of every batch `batches` (one epoch) or
        `forever` (all epochs) loads, in that order: what `s2f.train.prefetch` hands to its
        worker processes, so that they load exactly these batches."""
        while True:
            for i, positions in enumerate(self.plan(epoch)):
                mine = rank_slice(positions, *self.part)
                if i >= start and len(mine):
                    yield epoch, i, mine
            if not forever:
                return
            epoch, start = epoch + 1, 0

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[int, Batch]]:
        """(batch number within the epoch, batch), from batch `start` on; with `part` only this
        rank's slice of each batch (a rank whose slice is empty skips that batch)."""
        for _, i, mine in self.tasks(epoch, start):
            yield i, self.load(mine, epoch)

    def forever(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, int, Batch]]:
        """(epoch, batch number, batch) without end, resuming at (epoch, start)."""
        if len(self) == 0:
            raise ValueError("no training pairs: clips ⋈ face_features is empty for this role")
        for e, i, mine in self.tasks(epoch, start, forever=True):
            yield e, i, self.load(mine, e)

    def features(self) -> np.ndarray:
        """Every feature of this role (for the mean-feature baseline), read shard by shard."""
        out = [self.shards.rows(int(s), self._feat_row[self._feat_shard == s])
               for s in np.unique(self._feat_shard)]
        return np.concatenate(out) if out else np.empty((0, 0), np.float32)


if __name__ == "__main__":
    lay = DataLayout(Path(sys.argv[1]))
    for r in ("train", "dev", "test"):
        print(r, pair_index(lay, "dlib-resnet", r, 0.1).height)  # type: ignore[arg-type]
