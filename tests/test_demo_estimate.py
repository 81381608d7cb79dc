"""The demo's up-front estimate: each stage scales with the work asked for (no timing here:
`step_seconds` is given, so the numbers are exact)."""

from __future__ import annotations

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
    # 3 × 800 steps + the control's 200 (a quarter), and 4 models evaluated instead of 1
    assert three.stages["voice"] == pytest.approx(REF_SECONDS["voice"] * 2600 / 800)
    assert three.stages["evaluate"] == pytest.approx(4 * one.stages["evaluate"])
    slow = estimate(400, 1, True, None, 800, step_seconds=2 * REF_STEP_SECONDS)
    assert slow.total == pytest.approx(2 * one.total)
    text = plan_text(three, 400, 1, True, seeds=3, control=True)
    assert "3 seeds + the shuffled-voice control" in text and "--no-control" in text
