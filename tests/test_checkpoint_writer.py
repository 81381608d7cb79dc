"""Checkpoints written from a background thread (`s2f.train.checkpoint.CheckpointWriter`):
the file holds the state as it was when submitted (a host copy), is complete and loadable, one
write at a time, and a failed write raises in the training loop, not at exit or never. Resume
after background writes is bit for bit: tests/test_train_runner.py (its runs write this way).

    pytest -q tests/test_checkpoint_writer.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import tiny

from s2f.train.checkpoint import (
    LAST,
    CheckpointWriteError,
    CheckpointWriter,
    load_checkpoint,
    rng_state,
)
from s2f.train.runner import run
from s2f.train.synthetic import SyntheticCorpus, build
from s2f.train.voice import VoiceTrainer, train_voice_encoder
from storage.io import TEMP_GLOB
from storage.layout import DataLayout


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("writer")).ensure()
    build(layout, SyntheticCorpus(identities=12, clips_per_identity=2, dim=8, seconds=1.2,
                                  shard_size=8))
    return layout


def test_the_file_holds_the_state_as_submitted(tmp_path: Path) -> None:
    weights = torch.arange(1_000_000, dtype=torch.float32)  # 4 MB: the write takes a moment
    state = {"model": {"w": weights, "nested": [weights[:3], (1, "a")]}, "step": 7,
             "rng": rng_state()}
    writer = CheckpointWriter()
    path = writer.submit(tmp_path / "run", state)
    weights.add_(1.0)  # the next training step changes the weights in place at once
    writer.join()
    assert path == tmp_path / "run" / LAST
    back = load_checkpoint(tmp_path / "run")
    assert torch.equal(back["model"]["w"], torch.arange(1_000_000, dtype=torch.float32))
    assert back["model"]["nested"][1] == (1, "a") and back["step"] == 7
    assert torch.equal(back["model"]["nested"][0], torch.arange(3, dtype=torch.float32))
    assert list((tmp_path / "run").glob(TEMP_GLOB)) == []  # renamed, no temporary left


def test_one_write_at_a_time(tmp_path: Path) -> None:
    writer = CheckpointWriter()
    writer.submit(tmp_path / "a", {"w": torch.zeros(2_000_000)})
    writer.submit(tmp_path / "b", {"w": torch.ones(3)})
    # the second submit waited for the first write: it is on disk, whole
    assert torch.equal(load_checkpoint(tmp_path / "a")["w"], torch.zeros(2_000_000))
    writer.join()
    assert torch.equal(load_checkpoint(tmp_path / "b")["w"], torch.ones(3))
    writer.join()  # nothing in flight: a no-op


def test_a_failed_write_raises_at_the_next_submit_with_its_cause(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    writer = CheckpointWriter()
    writer.submit(tmp_path / "file" / "run", {"w": torch.ones(3)})
    with pytest.raises(CheckpointWriteError, match="file/run/last.pt") as err:
        writer.submit(tmp_path / "ok", {"w": torch.ones(3)})
    assert isinstance(err.value.__cause__, OSError)
    writer.join()  # raised once: the writer is usable again
    writer.submit(tmp_path / "ok", {"w": torch.ones(3)})
    writer.join()
    assert (tmp_path / "ok" / LAST).is_file()


def test_a_failed_write_stops_the_training_loop(corpus: DataLayout, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    cfg = tiny(steps=8, checkpoint_every=2, device="cpu")
    tr = VoiceTrainer(cfg, corpus, None, ckpt_dir=tmp_path / "file" / "run")
    with pytest.raises(CheckpointWriteError):
        run(tr)
    # the step-2 write failed in the background; the step-4 checkpoint's submit raised it
    assert tr.step == 4


def test_a_run_s_checkpoints_are_complete_and_it_resumes_from_them(corpus: DataLayout,
                                                                    tmp_path: Path) -> None:
    cfg = tiny(steps=6, checkpoint_every=1, device="cpu")
    part = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / "run", stop_after=3)
    ck = load_checkpoint(tmp_path / "run")  # written in the background, joined by the run
    assert ck["step"] == part.step == 3
    for name, value in part.model.state_dict().items():
        assert torch.equal(ck["model"][name], value), name
    rest = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / "run", resume=True)
    assert rest.step == 6 and load_checkpoint(tmp_path / "run")["step"] == 6
