"""The one training loop (`s2f.train.runner.run`) for both trainers: an interrupted and resumed
run equals an uninterrupted one exactly, checkpoint included (weights, optimiser, EMA, the
best-on-dev weights and their step, RNG, data position), history and result too.

Exact equality is safe on any x86_64 CPU and thread count: both runs execute in this process,
on this CPU, the same kernels in the same order on the same inputs (the batch plan depends only
on seed and epoch, and the RNG state travels in the checkpoint), so no tolerance is needed; no
value is compared with a number computed elsewhere.

    pytest -q tests/test_train_runner.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from s2f.train.config import DecoderTrainConfig, TrainConfig
from s2f.train.decoder import train_face_decoder
from s2f.train.synthetic import SyntheticCorpus, build
from s2f.train.voice import train_voice_encoder
from storage.layout import DataLayout


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("runner")).ensure()
    build(layout, SyntheticCorpus(identities=16, clips_per_identity=2, dim=8, seconds=0.6,
                                  shard_size=8))
    return layout


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Equal, tensors bit for bit, through nested dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def last(directory: Path) -> dict[str, Any]:
    return torch.load(directory / "last.pt", weights_only=True)


def test_voice_run_resumed_between_validations_is_the_uninterrupted_one(
        corpus: DataLayout, tmp_path: Path) -> None:
    # EMA, best-on-dev selection, validation every 3 steps, checkpoints every 3, an
    # interruption after 4 steps (between a checkpoint and the next validation)
    cfg = TrainConfig(preset="small", seconds=1.0, channels=[4] * 6 + [8] * 3, fc_width=32,
                      batch_size=4, steps=8, checkpoint_every=3, val_every=3, log_every=2,
                      dev_fraction=0.2, decoder="random", ema_decay=0.8, lr=3e-3,
                      val_seconds=None, track=False, register_model=False, device="cpu")
    full = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / "full")
    part = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / "part", stop_after=4)
    rest = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / "part", resume=True)
    assert (part.step, rest.step, full.step) == (4, 8, 8)
    ck = last(tmp_path / "full")
    assert ck["best"] is not None and ck["ema"] is not None
    assert full.best_step == rest.best_step == ck["best"]["step"]
    assert_same(ck, last(tmp_path / "part"), "checkpoint")
    assert_same(full.model.state_dict(), rest.model.state_dict(), "kept weights")
    assert full.val == rest.val and full.train_loss == rest.train_loss
    # the resumed call's history is the uninterrupted one's from the resume point on
    for key, rows in full.history.items():
        assert part.history[key] + rest.history[key] == rows, key


def test_decoder_run_resumed_mid_epoch_is_the_uninterrupted_one(corpus: DataLayout,
                                                                tmp_path: Path) -> None:
    # 14 steps of 4 faces cross an epoch boundary (asserted below); the interruption comes
    # after 4 steps, a multiple of log_every (the loss window starts afresh with each call)
    cfg = DecoderTrainConfig(image_size=32, batch_size=4, steps=14, log_every=2,
                             checkpoint_every=3, dev_fraction=0.2, track=False,
                             register_model=False, device="cpu")
    full = train_face_decoder(cfg, corpus, ckpt_dir=tmp_path / "full")
    part = train_face_decoder(cfg, corpus, ckpt_dir=tmp_path / "part", stop_after=4)
    rest = train_face_decoder(cfg, corpus, ckpt_dir=tmp_path / "part", resume=True)
    assert (part.step, rest.step, full.step, full.best_step) == (4, 14, 14, 14)
    ck = last(tmp_path / "full")
    assert ck["epoch"] >= 1
    assert_same(ck, last(tmp_path / "part"), "checkpoint")
    assert full.val == rest.val and full.train_loss == rest.train_loss
    assert part.history["train_loss"] + rest.history["train_loss"] == \
        full.history["train_loss"]
