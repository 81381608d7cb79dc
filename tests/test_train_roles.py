"""Which rows train, validate (dev) and test, and the shuffled-voice control's pairing.

    pytest tests/test_train_roles.py

Tables here are built in memory (polars), the same columns `pair_index` and `face_index`
hand to `select_role`; no media is needed.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from s2f.train.data import (
    identity_of,
    is_dev,
    select_role,
    shuffled_feature_rows,
    voice_derangement,
)


def _ids(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:08d}"[-11:].rjust(11, "x") for i in range(n)]


def _table(train: list[str], test: list[str], dev: list[str] = (), clips: int = 2,
           identity: dict[str, str] | None = None) -> pl.DataFrame:
    rows = [(y, s, f"{y}-{k}") for s, ids in (("train", train), ("test", test), ("dev", dev))
            for y in ids for k in range(clips)]
    df = pl.DataFrame(rows, schema=["youtube_id", "split", "clip_key"], orient="row")
    if identity is not None:
        df = df.with_columns(pl.col("youtube_id").replace_strict(identity, default=None)
                             .alias("identity_id"))
    return df


def test_dev_manifest_rows_are_dev_and_nothing_is_carved() -> None:
    df = _table(_ids(50, "t"), _ids(10, "s"), _ids(7, "d"))
    roles = {r: select_role(df, r, 0.5) for r in ("train", "dev", "test")}
    assert set(roles["dev"]["split"]) == {"dev"} and roles["dev"].height == 14
    assert roles["train"].height == 100 and set(roles["train"]["split"]) == {"train"}
    assert roles["test"].height == 20


def test_dev_is_carved_from_train_by_video_reproducibly() -> None:
    df = _table(_ids(400, "t"), _ids(30, "s"), clips=3)
    train, dev = select_role(df, "train", 0.1), select_role(df, "dev", 0.1)
    assert train.height + dev.height == 1200 and 0 < dev.height < 1200
    assert set(train["youtube_id"]).isdisjoint(dev["youtube_id"])  # no video on both sides
    assert all(is_dev(y, 0.1) for y in dev["youtube_id"])
    assert not any(is_dev(y, 0.1) for y in train["youtube_id"])
    assert select_role(df, "dev", 0.1).equals(dev)  # same rows, same order, every time
    assert train.columns == df.columns  # no helper columns leak out
    assert select_role(df, "test", 0.1).height == 90


def test_carving_follows_the_identity_where_the_table_knows_it() -> None:
    videos = _ids(300, "t")
    # identities of 3 videos each; one video has no known identity (null): its own id counts
    identity = {y: f"person{i // 3}" for i, y in enumerate(videos[:-1])}
    df = _table(videos, _ids(5, "s"), identity=identity)
    assert df.filter(pl.col("split") == "train")["identity_id"].null_count() == 2
    train, dev = select_role(df, "train", 0.2), select_role(df, "dev", 0.2)
    assert dev.height > 0
    for part in (train, dev):
        assert part.columns == df.columns
    got_dev = set(dev.select(identity_of(dev).alias("i"))["i"])
    got_train = set(train.select(identity_of(train).alias("i"))["i"])
    assert got_dev.isdisjoint(got_train), "an identity straddles train and dev"
    assert got_dev == {i for i in got_dev | got_train if is_dev(i, 0.2)}
    # the videos of one person land together even when their own ids would hash apart
    split_by_hash = [p for p in {f"person{i}" for i in range(99)}
                     if len({is_dev(y, 0.2) for y, q in identity.items() if q == p}) == 2]
    assert split_by_hash, "the fixture should hold persons whose videos hash to both sides"


def test_voice_derangement_is_a_seeded_derangement() -> None:
    names = [f"id{i:03d}" for i in range(40)]
    perm = voice_derangement(names + names[:5], seed=3)  # repeats do not matter
    assert sorted(perm) == names and sorted(perm.values()) == names  # a permutation
    assert all(a != b for a, b in perm.items())  # no identity keeps its face
    assert perm == voice_derangement(list(reversed(names)), seed=3)  # seed alone decides
    assert perm != voice_derangement(names, seed=4)
    assert voice_derangement(["a", "b"], 0) == {"a": "b", "b": "a"}
    with pytest.raises(ValueError, match="two training identities"):
        voice_derangement(["a", "a"], 0)


def test_shuffled_features_take_the_partner_identitys_first_clip() -> None:
    videos = _ids(6, "t")
    index = (_table(videos, [], clips=3).with_row_index("pos")
             .with_columns(pl.lit(0, dtype=pl.Int64).alias("shard"),
                           pl.col("pos").cast(pl.Int64).alias("row")))
    shard, row = shuffled_feature_rows(index, seed=0)
    partner = voice_derangement(videos, 0)
    first_row = {y: 3 * i for i, y in enumerate(videos)}  # rows are laid out video by video
    want = np.asarray([first_row[partner[y]] for y in index["youtube_id"]])
    np.testing.assert_array_equal(row, want)
    assert (shard == 0).all()
    # every clip of one identity gets the same feature, never one of its own clips
    for y in videos:
        mine = index["youtube_id"].to_numpy() == y
        assert len(set(row[mine])) == 1 and not set(row[mine]) & set(np.flatnonzero(mine))


def _write_clips_and_features(layout, manifests: dict[str, list[tuple[str, str, str]]]) -> None:
    """Real shards: per manifest (youtube_id, clip_key, split) ok rows, and one feature per key."""
    from storage.io import rows_to_table, write_table_atomic
    from storage.schemas import CLIPS, face_features_schema

    keys: set[str] = set()
    for manifest, rows in manifests.items():
        table = rows_to_table([{"clip_key": k, "manifest": manifest, "split": sp, "line_no": i,
                                "youtube_id": y, "status": "ok", "audio_path": f"audio/{k}.flac"}
                               for i, (y, k, sp) in enumerate(rows, start=1)], CLIPS)
        write_table_atomic(table, layout.shard_path("clips", manifest, 0))
        keys |= {k for _, k, _ in rows}
    feats = rows_to_table([{"clip_key": k, "encoder": "dlib-resnet", "feature": [0.0] * 128,
                            "l2_norm": 0.0} for k in sorted(keys)], face_features_schema(128))
    write_table_atomic(feats, layout.shard_path("face_features", "m", 0))


def test_pair_index_keeps_one_row_per_clip_key(tmp_path) -> None:
    """Issue 24: the same rows under a renamed manifest gave 14 training pairs for 7 keys."""
    from s2f.train.data import pair_index
    from storage.layout import DataLayout

    layout = DataLayout(tmp_path).ensure()
    rows = [(f"video{i:06d}", f"video{i:06d}_1000_2000", "train") for i in range(7)]
    _write_clips_and_features(layout, {"a_train": rows, "a_copy_train": rows})
    idx = pl.concat([pair_index(layout, "dlib-resnet", r, 0.3) for r in ("train", "dev")])
    assert idx.height == 7 and idx["clip_key"].n_unique() == 7


def test_pair_index_refuses_a_video_in_two_splits(tmp_path) -> None:
    from s2f.train.data import SplitLeakError, pair_index
    from storage.layout import DataLayout

    layout = DataLayout(tmp_path).ensure()
    _write_clips_and_features(layout, {
        "x_train": [("SHAREDvideo", "SHAREDvideo_1000_2000", "train"),
                    ("AAAAAAAAAAA", "AAAAAAAAAAA_1000_2000", "train")],
        "x_test": [("SHAREDvideo", "SHAREDvideo_5000_6000", "test")]})
    for role in ("train", "test"):
        with pytest.raises(SplitLeakError, match=r"SHAREDvideo \(test/train\)"):
            pair_index(layout, "dlib-resnet", role, 0.0)
