"""`val_pred_rank` (`s2f.train.voice.prediction_rank`): how many directions of the face feature
a voice encoder's predictions vary, the symptom of the dead-ReLU collapse the demo's training
settings avoid (`flows.params.DEMO_TRAIN_OVERRIDES`), and those settings reaching the demo's
model and its shuffled control.

    pytest -q tests/test_prediction_rank.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import flows.demo as demo
from flows.params import DEMO_TRAIN_OVERRIDES, DemoParams
from s2f.train.config import TrainConfig
from s2f.train.voice import prediction_rank
from storage.layout import DataLayout


@pytest.mark.parametrize("k", [1, 3, 6])
def test_rank_counts_the_directions_predictions_vary(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    basis = torch.randn(k, 128, generator=g)
    mean = torch.randn(128, generator=g) * 5  # an offset (the mean face) is not a direction
    preds = torch.randn(40, k, generator=g) @ basis + mean
    assert prediction_rank([preds[:25], preds[25:]]) == k  # batches are stacked first
    noisy = preds + 1e-9 * torch.randn(40, 128, generator=g)  # float noise is not a direction
    assert prediction_rank([noisy]) == k


def test_rank_of_a_constant_or_a_single_prediction_is_zero() -> None:
    assert prediction_rank([torch.ones(10, 8)]) == 0
    assert prediction_rank([torch.randn(1, 8)]) == 0
    assert prediction_rank([]) == 0


def test_demo_trains_model_and_control_with_its_settings(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("s2f.corpus.build.corpus_is_complete", lambda config: True)
    monkeypatch.setattr(demo, "demo_plan", lambda params, exists: "plan")
    layout = DataLayout(tmp_path).ensure()
    params = demo.demo_pipeline_params(DemoParams(data_dir=tmp_path, seeds=2), layout)
    seeds = params.train_seeds_params()
    for tp in (seeds.seed_params(0), seeds.seed_params(1), seeds.control_params(800)):
        cfg = TrainConfig.preset_config(tp.config, **tp.overrides)
        for key, value in DEMO_TRAIN_OVERRIDES.items():
            assert getattr(cfg, key) == value, (key, tp.overrides)
    assert seeds.control_params(800).overrides["shuffle_voices"] is True
    # `s2f train` and real pairs keep the preset's own values
    assert TrainConfig.preset_config("small").lr == 1e-3
    assert not TrainConfig.preset_config("small").standardize_targets
