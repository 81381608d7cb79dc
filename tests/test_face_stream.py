"""The face decoder's training faces streamed from the shards (`s2f.train.face_data`, issue 26).

Same seed, same batches; an epoch visits every face once, window by window, and the loader keeps
only the window at hand (each shard read once an epoch); a role that fits in one window is
ordered as the in-memory loader it replaced; a batch holds each clip's median frame and its
feature; the dev faces are capped; the trainer gives the same weights with loader workers and
when resumed across windows and epochs. Real Parquet shards (`s2f.train.synthetic`), real torch.

    pytest -q tests/test_face_stream.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from s2f.train import decoder as decoder_module
from s2f.train.config import DecoderTrainConfig
from s2f.train.decoder import DecoderTrainer, train_face_decoder
from s2f.train.face_data import (
    FaceStream,
    decode_crops,
    normalized_crop_landmarks,
    resident_faces,
)
from s2f.train.synthetic import SyntheticCorpus, build
from storage.io import shard_paths
from storage.layout import DataLayout

# 40 clips in 7 shards of 6 (the last 4): several windows of `SHUFFLE` faces
CORPUS = SyntheticCorpus(identities=20, clips_per_identity=2, test_identities=2, dim=8,
                         seconds=0.3, shard_size=6)
SHUFFLE = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("facestream")).ensure()
    build(layout, CORPUS)
    return layout


def stream(layout: DataLayout, seed: int = 0, shuffle_rows: int = SHUFFLE,
           batch: int = 4) -> FaceStream:
    return FaceStream(layout, "dlib-resnet", "train", 0.2, 16, batch, seed, shuffle_rows)


def test_same_seed_same_batches(corpus: DataLayout) -> None:
    a, b = stream(corpus), stream(corpus)
    for epoch in (0, 1):
        assert all(np.array_equal(x, y) for x, y in zip(a.plan(epoch), b.plan(epoch),
                                                        strict=True))
    for (ea, ia, pa_), (eb, ib, pb) in zip(a.tasks(0, forever=True), b.tasks(0, forever=True),
                                           strict=False):
        if ea > 1:
            break
        x, y = a.load(pa_, ea), b.load(pb, eb)
        assert (ea, ia, x.clip_keys) == (eb, ib, y.clip_keys)
        assert torch.equal(x.crops, y.crops) and torch.equal(x.landmarks, y.landmarks)
        assert torch.equal(x.features, y.features)
    order = np.concatenate(a.plan(0))
    assert not np.array_equal(order, np.concatenate(a.plan(1)))  # a new order each epoch
    assert not np.array_equal(order, np.concatenate(stream(corpus, seed=1).plan(0)))


def test_an_epoch_visits_every_face_once_window_by_window(corpus: DataLayout) -> None:
    s = stream(corpus)
    windows = s.windows(0)
    assert len(windows) > 2
    shard_rows = list(s.faces_per_shard().values())
    assert all(len(w) <= max(SHUFFLE, *shard_rows) for w in windows)
    assert np.array_equal(np.sort(np.concatenate(windows)), np.arange(s.faces))
    window_of = np.empty(s.faces, np.int64)
    for i, w in enumerate(windows):
        window_of[w] = i
    plan = s.plan(0)
    seen = np.concatenate(plan)
    assert len(plan) == s.faces // 4 and len(set(seen.tolist())) == len(seen) == 4 * len(plan)
    for batch in plan:  # a batch draws from the window at hand, or the next ones at a boundary
        touched = np.unique(window_of[batch])
        assert touched.max() - touched.min() == len(touched) - 1
    # the windows come in order: the faces' windows never go back
    assert (np.diff(window_of[seen]) >= 0).all()
    # the shard order changes with the epoch
    assert [w.tolist() for w in s.windows(1)] != [w.tolist() for w in windows]


def test_the_loader_keeps_only_the_window_at_hand(corpus: DataLayout) -> None:
    s = stream(corpus)
    largest = max(s.faces_per_shard().values())
    for _, _, positions in s.tasks(0):
        batch = s.load(positions, 0)
        assert len(batch) == 4
        assert s.cache.rows() <= 2 * SHUFFLE + largest
    assert s.cache.reads == len(s.faces_per_shard())  # each shard read once in the epoch


def test_a_role_in_one_window_is_ordered_as_before(corpus: DataLayout) -> None:
    s = stream(corpus, seed=5, shuffle_rows=10_000)
    assert len(s.windows(3)) == 1
    want = np.random.default_rng([5, 3]).permutation(s.faces)  # the in-memory loader's order
    got = np.concatenate(s.plan(3))
    assert np.array_equal(got, want[:len(got)])


def _three_frames(layout: DataLayout) -> None:
    """Each clip's face row becomes three frames, t - 0.5 / t / t + 0.5 s; only the middle one
    keeps the true crop and landmarks (the others: a black crop, landmarks shifted by 40 px)."""
    from s2f.faces.align import encode_jpeg

    dark = encode_jpeg(np.zeros((224, 224, 3), np.uint8))
    for path in shard_paths(layout, "faces"):
        table = pq.read_table(path)
        n, schema = table.num_rows, table.schema
        lm = np.asarray(table.column("landmarks").combine_chunks().flatten()).reshape(n, 136)
        shifted = pa.FixedSizeListArray.from_arrays(pa.array((lm + 40).ravel(), pa.float32()),
                                                    type=schema.field("landmarks").type)
        outer = (table.set_column(schema.get_field_index("landmarks"), schema.field("landmarks"),
                                  shifted)
                 .set_column(schema.get_field_index("crop_jpeg"), schema.field("crop_jpeg"),
                             pa.array([dark] * n, pa.binary())))
        times = np.asarray(table.column("frame_time_s"))
        later, earlier = (outer.set_column(schema.get_field_index("frame_time_s"),
                                           schema.field("frame_time_s"), pa.array(times + d))
                          for d in (0.5, -0.5))
        pq.write_table(pa.concat_tables([later, table, earlier]), path)  # not in time order


@pytest.fixture(scope="module")
def frames_corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("frames")).ensure()
    build(layout, SyntheticCorpus(identities=6, clips_per_identity=1, test_identities=1, dim=8,
                                  seconds=0.3, shard_size=4))
    _three_frames(layout)
    return layout


def test_a_batch_holds_each_clip_s_median_frame_and_its_feature(frames_corpus: DataLayout,
                                                                 ) -> None:
    s = FaceStream(frames_corpus, "dlib-resnet", "train", 0.0, 16, 2)
    batch = s.load(np.arange(s.faces))
    faces = pl.concat([pl.read_parquet(p) for p in shard_paths(frames_corpus, "faces")])
    feats = pl.concat([pl.read_parquet(p) for p in shard_paths(frames_corpus, "face_features")])
    assert s.faces == 5 and faces.height == 18
    for i, key in enumerate(batch.clip_keys):
        mine = faces.filter(pl.col("clip_key") == key).sort("frame_time_s")
        middle = mine.row(1, named=True)
        assert torch.equal(batch.crops[i], decode_crops([middle["crop_jpeg"]], 16)[0])
        lm = normalized_crop_landmarks(np.asarray(middle["landmarks"], np.float32)[None])[0]
        assert torch.equal(batch.landmarks[i], lm)
        feature = feats.filter(pl.col("clip_key") == key)["feature"].to_list()[0]
        assert torch.equal(batch.features[i], torch.tensor(feature, dtype=torch.float32))
    assert batch.crops.float().mean() > 20  # no black (outer) frame was taken


def test_a_face_without_a_crop_is_an_error(frames_corpus: DataLayout, tmp_path: Path) -> None:
    import shutil

    layout = DataLayout(tmp_path / "data")
    shutil.copytree(frames_corpus.root, layout.root)
    path = shard_paths(layout, "faces")[0]
    table = pq.read_table(path)
    crops = table.column("crop_jpeg").to_pylist()
    crops[len(crops) // 2] = None  # a middle frame, the one trained on
    table = table.set_column(table.schema.get_field_index("crop_jpeg"), "crop_jpeg",
                             pa.array(crops, pa.binary()))
    pq.write_table(table, path)
    s = FaceStream(layout, "dlib-resnet", "train", 0.0, 16, 2)
    with pytest.raises(ValueError, match="has no crop_jpeg"):
        s.load(np.arange(s.faces))


def test_dev_faces_are_capped_and_spread(corpus: DataLayout) -> None:
    dev = FaceStream(corpus, "dlib-resnet", "dev", 0.2, 16, 4)
    assert dev.faces >= 3
    capped = resident_faces(dev, limit=3)
    assert capped is not None and len(capped) == 3
    keys = dev.index["clip_key"].to_list()
    at = [keys.index(k) for k in capped.clip_keys]
    assert at[0] == 0 and 0 < at[1] < dev.faces - 1 and at[2] == dev.faces - 1
    every = resident_faces(dev)
    assert every is not None and every.clip_keys == keys


def tiny(**over: object) -> DecoderTrainConfig:
    base: dict[str, object] = dict(image_size=16, batch_size=4, steps=12, checkpoint_every=5,
                                   log_every=2, dev_fraction=0.2, track=False,
                                   register_model=False, device="cpu", shuffle_rows=SHUFFLE)
    base.update(over)
    return DecoderTrainConfig(**base)  # type: ignore[arg-type]


def test_resumed_across_windows_and_epochs_is_the_uninterrupted_run(corpus: DataLayout,
                                                                    tmp_path: Path) -> None:
    cfg = tiny()  # 12 steps of 4 faces: more than an epoch of ~28 faces, several windows
    full = train_face_decoder(cfg, corpus, ckpt_dir=tmp_path / "full")
    train_face_decoder(cfg, corpus, ckpt_dir=tmp_path / "part", stop_after=5)
    rest = train_face_decoder(cfg, corpus, ckpt_dir=tmp_path / "part", resume=True)
    ck = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert ck["epoch"] >= 1
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, rest.model.state_dict()[k]), k
    assert full.val == rest.val


def test_loader_workers_train_the_same_decoder(corpus: DataLayout, tmp_path: Path) -> None:
    a = train_face_decoder(tiny(steps=6), corpus, ckpt_dir=tmp_path / "0")
    b = train_face_decoder(tiny(steps=6, loader_workers=2), corpus, ckpt_dir=tmp_path / "2")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_validation_in_chunks_is_the_one_forward(corpus: DataLayout, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tr = DecoderTrainer(tiny(), corpus, ckpt_dir=tmp_path)
    assert tr.valid is not None and len(tr.valid) > 2
    whole = tr.validate()
    monkeypatch.setattr(decoder_module, "DEV_BATCH", 2)
    chunked = tr.validate()
    assert whole.keys() == chunked.keys() and "val_loss" in whole
    for k, v in whole.items():
        assert chunked[k] == pytest.approx(v, rel=1e-5), k
