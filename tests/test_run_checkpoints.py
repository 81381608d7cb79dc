"""One checkpoint folder per run identity (seed, shuffle flag, config hash, input fingerprint,
frozen f_dec): a resumed run never continues another run's weights (issue 23).

Before, every seed and the shuffled control shared `checkpoints/voice_encoder/last.pt` and resume
checked neither seed nor shuffle flag: the control, then a seed-1 run with `resume=True`, trained
0 steps and registered the control's weights. The decision for a changed config: it is another
run, so it gets another folder and trains from step 0 (the old folder is left as it was); a
checkpoint of another identity met through an explicit `ckpt_dir` is refused (`ResumeMismatch`).

    pytest -q tests/test_run_checkpoints.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from s2f.train.checkpoint import LATEST, ResumeMismatch, checkpoint_dir
from s2f.train.config import DecoderTrainConfig, TrainConfig
from s2f.train.decoder import load_decoder, train_face_decoder
from s2f.train.synthetic import SyntheticCorpus, build
from s2f.train.voice import train_voice_encoder
from storage.layout import DataLayout

STEPS = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("run-ckpt")).ensure()
    build(layout, SyntheticCorpus(identities=12, clips_per_identity=2, dim=8, seconds=0.6,
                                  shard_size=8))
    return layout


def tiny(**over: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        preset="small", seconds=1.0, channels=[4] * 6 + [8] * 3, fc_width=32, batch_size=4,
        steps=STEPS, checkpoint_every=2, val_every=1000, log_every=1, dev_fraction=0.2,
        decoder="random", ema_decay=0.0, select="last", track=False, register_model=False,
        device="cpu")
    return TrainConfig(**{**base, **over})


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_seed_one_after_the_shuffled_control_trains_from_scratch(corpus: DataLayout,
                                                                 tmp_path: Path) -> None:
    control = train_voice_encoder(tiny(shuffle_voices=True), corpus)
    seed1 = train_voice_encoder(tiny(seed=1), corpus, resume=True)
    # every step trained by this call (the bug: 0 steps, the control's weights registered)
    assert seed1.step == STEPS and len(seed1.history["train_loss"]) == STEPS
    assert control.checkpoint.parent != seed1.checkpoint.parent
    assert control.checkpoint.parent.name.startswith("seed0-shuffled-")
    assert seed1.checkpoint.parent.name.startswith("seed1-true-")
    assert not same_weights(control.model.state_dict(), seed1.model.state_dict())
    # exactly the weights of a seed-1 run that never saw a checkpoint
    fresh = train_voice_encoder(tiny(seed=1), corpus, ckpt_dir=tmp_path / "fresh")
    assert same_weights(fresh.model.state_dict(), seed1.model.state_dict())
    # the control's own checkpoint is untouched, and resuming it continues it (0 more steps)
    again = train_voice_encoder(tiny(shuffle_voices=True), corpus, resume=True)
    assert again.step == STEPS and again.history["train_loss"] == []
    assert same_weights(control.model.state_dict(), again.model.state_dict())
    model_dir = checkpoint_dir(corpus, "voice_encoder")
    assert (model_dir / LATEST).read_text().strip() == again.checkpoint.parent.name


def test_a_changed_config_is_another_run_in_another_folder(corpus: DataLayout) -> None:
    part = train_voice_encoder(tiny(seed=5), corpus, stop_after=2)
    assert part.step == 2
    changed = train_voice_encoder(tiny(seed=5, lr=3e-3), corpus, resume=True)
    assert changed.checkpoint.parent != part.checkpoint.parent
    assert changed.step == STEPS and len(changed.history["train_loss"]) == STEPS  # from step 0
    assert torch.load(part.checkpoint, weights_only=True)["step"] == 2  # left as it was
    # more steps is another run too: a resume never stops short at another run's step count
    longer = train_voice_encoder(tiny(seed=5, steps=STEPS + 2), corpus, resume=True)
    assert longer.checkpoint.parent != part.checkpoint.parent
    assert len(longer.history["train_loss"]) == STEPS + 2
    # the same config resumes its own folder from step 2
    rest = train_voice_encoder(tiny(seed=5), corpus, resume=True)
    assert rest.checkpoint == part.checkpoint and len(rest.history["train_loss"]) == STEPS - 2


def test_resume_refuses_another_runs_checkpoint(corpus: DataLayout, tmp_path: Path) -> None:
    ckpt = tmp_path / "shared"
    train_voice_encoder(tiny(shuffle_voices=True), corpus, ckpt_dir=ckpt, stop_after=2)
    with pytest.raises(ResumeMismatch, match=r"shuffle_voices True there, False here"):
        train_voice_encoder(tiny(), corpus, ckpt_dir=ckpt, resume=True)
    with pytest.raises(ResumeMismatch, match=r"seed 0 there, 1 here"):
        train_voice_encoder(tiny(seed=1, shuffle_voices=True), corpus, ckpt_dir=ckpt,
                            resume=True)
    with pytest.raises(ResumeMismatch, match=r"lr 0\.001 there, 0\.002 here"):
        train_voice_encoder(tiny(shuffle_voices=True, lr=2e-3), corpus, ckpt_dir=ckpt,
                            resume=True)
    # bookkeeping is not identity: tracking, logging and checkpoint cadence may change
    rest = train_voice_encoder(tiny(shuffle_voices=True, log_every=2, checkpoint_every=1),
                               corpus, ckpt_dir=ckpt, resume=True)
    assert rest.step == STEPS
    # a checkpoint written before identities cannot be told apart from another run's
    old = torch.load(ckpt / "last.pt", weights_only=True)
    del old["identity"]
    torch.save(old, ckpt / "last.pt")
    with pytest.raises(ResumeMismatch, match="before checkpoints carried"):
        train_voice_encoder(tiny(shuffle_voices=True), corpus, ckpt_dir=ckpt, resume=True)


def test_decoder_runs_have_their_folders_and_the_latest_is_loaded(corpus: DataLayout) -> None:
    cfg = DecoderTrainConfig(image_size=32, batch_size=4, steps=3, log_every=1,
                             checkpoint_every=2, dev_fraction=0.2, track=False,
                             register_model=False, device="cpu")
    first = train_face_decoder(cfg, corpus)
    other = train_face_decoder(cfg.model_copy(update={"seed": 1}), corpus, resume=True)
    assert first.checkpoint.parent != other.checkpoint.parent
    assert len(other.history["train_loss"]) == 3  # seed 1 trained, not seed 0's resumed
    loaded = load_decoder(checkpoint_dir(corpus, "face_decoder"))  # the run last written
    assert same_weights(loaded.state_dict(), other.model.state_dict())
    with pytest.raises(ResumeMismatch, match="seed 0 there, 1 here"):
        train_face_decoder(cfg.model_copy(update={"seed": 1}), corpus,
                           ckpt_dir=first.checkpoint.parent, resume=True)
