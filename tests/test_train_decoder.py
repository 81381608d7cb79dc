"""Face decoder training on a synthetic faces ⋈ face_features corpus: targets, loss, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from s2f.faces.align import ALIGN_POINTS, template_pixels
from s2f.models.face_decoder import to_mean_shape
from s2f.train.config import DecoderTrainConfig
from s2f.train.decoder import load_decoder, train_face_decoder
from s2f.train.face_data import FaceStream, crop_landmarks
from s2f.train.synthetic import SyntheticCorpus, build
from storage.layout import DataLayout


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("faces")).ensure()
    build(layout, SyntheticCorpus(identities=16, clips_per_identity=2, dim=8, seconds=0.5,
                                  shard_size=8))
    return layout


def tiny(**over: object) -> DecoderTrainConfig:
    base: dict[str, object] = dict(image_size=32, batch_size=8, steps=6, checkpoint_every=3,
                                   log_every=2, dev_fraction=0.2, track=False,
                                   register_model=False)
    base.update(over)
    return DecoderTrainConfig(**base)  # type: ignore[arg-type]


def test_crop_landmarks_undo_the_alignment() -> None:
    t = template_pixels().astype(np.float32)
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    frame = (t @ rot.T) * 2.5 + np.array([300.0, 120.0], np.float32)
    back = crop_landmarks(frame[None])[0]
    np.testing.assert_allclose(back[ALIGN_POINTS], t[ALIGN_POINTS], atol=1e-2)
    np.testing.assert_allclose(back, t, atol=1e-2)  # a pure similarity: every point returns


def test_face_stream_and_texture_targets(corpus: DataLayout) -> None:
    train = FaceStream(corpus, "dlib-resnet", "train", 0.2, 32, 8)
    test = FaceStream(corpus, "dlib-resnet", "test", 0.2, 32, 8)
    assert test.faces == 4 and train.faces > 0
    batch = train.load(np.arange(train.faces))
    assert not set(batch.clip_keys) & set(test.load(np.arange(4)).clip_keys)
    assert batch.crops.shape[1:] == (3, 32, 32) and batch.crops.dtype == torch.uint8
    assert 0.5 < batch.landmarks.abs().max() < 1.2  # normalised crop coords (chin may pass 1)
    # warping a crop from its own landmarks to the same landmarks changes nothing
    img = batch.take(slice(0, 2)).images()
    same = to_mean_shape(img, batch.landmarks[:2], batch.landmarks[0])
    torch.testing.assert_close(same[0, :, 4:-4, 4:-4], img[0, :, 4:-4, 4:-4], atol=2e-3, rtol=0)
    torch.testing.assert_close(train.mean_landmarks(), batch.landmarks.mean(dim=0), atol=1e-6,
                               rtol=0)


def test_decoder_learns_and_resumes(corpus: DataLayout, tmp_path: Path) -> None:
    cfg = tiny(steps=30, checkpoint_every=10, log_every=5, lr=3e-3)
    res = train_face_decoder(cfg, corpus, ckpt_dir=tmp_path / "a")
    print("decoder", res.history, res.val)
    first, last = res.history["train_loss"][0][1], res.history["train_loss"][-1][1]
    assert last < 0.8 * first, res.history
    assert "val_loss" in res.val
    # landmarks stay near the truth (an image loss through the spline used to fold them)
    assert res.val["val_loss_landmarks"] < 2e-3, res.val
    back = load_decoder(tmp_path / "a")
    feats = torch.randn(2, 8)
    res.model.eval()
    for x, y in zip(back(feats), res.model(feats), strict=True):
        assert x is not None and y is not None
        torch.testing.assert_close(x, y)
    short = tiny(steps=6, checkpoint_every=3)
    full = train_face_decoder(short, corpus, ckpt_dir=tmp_path / "full")
    train_face_decoder(short, corpus, ckpt_dir=tmp_path / "part", stop_after=3)
    rest = train_face_decoder(short, corpus, ckpt_dir=tmp_path / "part", resume=True)
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(v, rest.model.state_dict()[k], atol=1e-6, rtol=0, msg=k)
