"""The demo's up-front estimate: each stage scales with the work asked for (no timing here:
`step_seconds` is given, so the numbers are exact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2f.demo_estimate import REF_SECONDS, REF_STEP_SECONDS, estimate, plan_text


def test_reference_demo_estimates_the_reference_seconds() -> None:
    est = estimate(400, 1, False, None, None, step_seconds=REF_STEP_SECONDS)
    assert est.speed == pytest.approx(1.0)
    assert est.stages == pytest.approx(REF_SECONDS)


def test_seeds_and_control_add_training_and_evaluation() -> None:
    one = estimate(400, 1, True, None, 800, step_seconds=REF_STEP_SECONDS)
    three = estimate(400, 1, True, None, 800, step_seconds=REF_STEP_SECONDS, seeds=3,
                     control_steps=None)
    assert one.stages["corpus"] == 0.0  # reused
    # 3 × 800 steps + the control's 800 (matched: the model's steps and schedule), and 4
    # models evaluated instead of 1
    assert three.stages["voice"] == pytest.approx(REF_SECONDS["voice"] * 3200 / 800)
    short = estimate(400, 1, True, None, 800, step_seconds=REF_STEP_SECONDS, control_steps=200)
    assert short.stages["voice"] == pytest.approx(REF_SECONDS["voice"] * 1000 / 800)
    assert three.stages["evaluate"] == pytest.approx(4 * one.stages["evaluate"])
    slow = estimate(400, 1, True, None, 800, step_seconds=2 * REF_STEP_SECONDS)
    assert slow.total == pytest.approx(2 * one.total)
    text = plan_text(three, 400, 1, True, seeds=3, control=True)
    assert "3 seeds + the shuffled-voice control" in text and "--no-control" in text


def test_the_shuffled_control_trains_the_models_steps_by_default(tmp_path: Path) -> None:
    from flows.params import TrainParams, TrainSeedsParams

    train = TrainParams(data_dir=tmp_path, steps=640, overrides={"seed": 3, "val_every": 40})
    control = TrainSeedsParams(train=train, seeds=2).control_params(preset_steps=800)
    assert control.steps == 640  # the model's steps (was a quarter: 160)
    # the same schedule and seed as the first model; only the face features are shuffled
    assert control.overrides == {"seed": 3, "val_every": 40, "shuffle_voices": True,
                                 "register_model": False,
                                 "run_name": "control: shuffled voices"}
    preset = TrainSeedsParams(train=TrainParams(data_dir=tmp_path))
    assert preset.control_params(preset_steps=800).steps == 800
    asked = TrainSeedsParams(train=train, control_steps=100)
    assert asked.control_params(preset_steps=800).steps == 100
