"""The face decoder's `torch_compile` flag (issue 27): off by default, CUDA only (as the voice
encoder's), and not part of the run's identity, so flipping it keeps the run's checkpoint
folder and its resume. The compiled step itself is checked on CUDA (tests/test_gpu.py,
`test_compiled_decoder_step_follows_the_eager_one`); on these CPUs inductor took over 2 min
(wall, loaded cores) to compile the small decoder's step, so no CPU test compiles it.

    pytest -q tests/test_decoder_compile.py
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from s2f.train.checkpoint import config_hash, identity_config
from s2f.train.config import DecoderTrainConfig, TrainConfig
from s2f.train.decoder import DecoderTrainer
from s2f.train.synthetic import SyntheticCorpus, build
from storage.layout import DataLayout


def test_the_flag_is_off_by_default_and_not_the_run_s_identity() -> None:
    assert DecoderTrainConfig().torch_compile is False
    assert "torch_compile" not in identity_config(DecoderTrainConfig(torch_compile=True))
    assert config_hash(DecoderTrainConfig(torch_compile=True)) == config_hash(DecoderTrainConfig())
    # the voice encoder's flag stays in its identity, as before (its run folders unchanged)
    assert "torch_compile" in identity_config(TrainConfig())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_on_the_cpu_the_flag_trains_the_eager_module(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data").ensure()
    build(layout, SyntheticCorpus(identities=8, clips_per_identity=1, dim=8, seconds=0.6,
                                  shard_size=8))
    cfg = DecoderTrainConfig(image_size=32, batch_size=4, steps=1, torch_compile=True,
                             device="cpu", track=False, register_model=False, dev_fraction=0.2)
    tr = DecoderTrainer(cfg, layout, ckpt_dir=tmp_path / "ckpt")
    assert tr.train_model is tr.model
    _, _, faces = next(tr.training_batches())
    assert math.isfinite(tr.host_terms([tr.train_step(faces)])[0]["loss"])
