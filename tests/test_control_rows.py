"""A shuffled-voice control is scored on test once, like a model version, and the model card
shows the model's own control (its seed, settings and data), not the newest one (issue 23).

Real evaluations (`evaluate_model` on the tone corpus of `eval_helpers`), real MLflow runs on
SQLite for the controls' training params, real `evaluations` Parquet rows.

    pytest -q tests/test_control_rows.py
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from eval_helpers import EvalData, tone_encoder, tracked_eval_data

from s2f.evaluation import run as evaluation_run
from s2f.evaluation.data import data_summary
from s2f.evaluation.record import read_evaluations
from s2f.evaluation.run import WEIGHTS_TAG, evaluate, evaluate_model
from s2f.registry.inference import LoadedModel, ModelRef
from s2f.release.model_card import shuffled_control_row, write_model_card

IDENTITY = {"config_hash": "c0ffee", "input_fingerprint": "f1", "frozen_sha1": "d0"}


def params(seed: int, **over: str) -> dict[str, str]:
    return {"encoder": "dlib-resnet", "dev_fraction": "0.1", "seconds": "3.0",
            "seed": str(seed), **IDENTITY, **over}


def score_control(data: EvalData, noise: float, run_params: dict[str, str],
                  tracked: bool = True) -> dict[str, object]:
    """Score a stand-in control on test, as `flows.train.control_task` does: tracked (its
    training run's params in MLflow) or untracked (no run at all)."""
    run_id = None
    if tracked:
        mlflow.set_experiment("test-models")
        with mlflow.start_run() as run:
            mlflow.log_params(run_params)
        run_id = run.info.run_id
    ref = ModelRef(uri=f"runs:/{run_id}" if run_id else "control (untracked)", name=None,
                   version=None, run_id=run_id)
    loaded = LoadedModel(ref, tone_encoder(data, noise=noise), run_params)
    return evaluate(data.layout, decoder_uri=None, role="test", n_boot=20,
                    kind="shuffled_control", encoder=loaded)


def test_an_untracked_control_is_test_scored_once(tmp_path: Path) -> None:
    data = tracked_eval_data(tmp_path)
    first = score_control(data, 0.6, params(0), tracked=False)
    assert not first["reused"] and WEIGHTS_TAG in str(first["model_uri"])
    # the same weights again: refused by evaluate_model, read back by evaluate
    again = score_control(data, 0.6, params(0), tracked=False)
    assert again["reused"] and again["evaluation_id"] == first["evaluation_id"]
    same = LoadedModel(ModelRef("control (untracked)", None, None, None),
                       tone_encoder(data, noise=0.6), params(0))
    with pytest.raises(evaluation_run.TestAlreadyScored):
        evaluate_model(data.layout, decoder_uri=None, role="test", n_boot=20,
                       kind="shuffled_control", encoder=same)
    # other weights are another control: scored
    other = score_control(data, 0.8, params(0), tracked=False)
    assert not other["reused"] and other["model_uri"] != first["model_uri"]
    assert len([r for r in read_evaluations(data.layout) if r["role"] == "test"]) == 2


def test_the_card_shows_the_models_own_control(tmp_path: Path) -> None:
    data = tracked_eval_data(tmp_path)
    own = score_control(data, 0.6, params(0))
    score_control(data, 0.6, params(1))                        # another seed's
    score_control(data, 0.6, params(0, config_hash="beef"))    # other settings (e.g. steps)
    newest = read_evaluations(data.layout)[-1]
    assert newest["evaluation_id"] != own["evaluation_id"]  # the old rule's pick
    model = {"split_snapshot_id": own["split_snapshot_id"], "seed": 0}
    found = shuffled_control_row(data.layout, model, params(0))
    assert found is not None and found["evaluation_id"] == own["evaluation_id"]
    assert shuffled_control_row(data.layout, {**model, "seed": 2}, params(2)) is None
    assert shuffled_control_row(data.layout, {**model, "split_snapshot_id": "other"},
                                params(0)) is None
    # the card names the control's seed, or says this model has none
    row = {**newest, "kind": "model", "seed": 0}
    card = write_model_card(row, data_summary(data.layout), params(0), control=found)
    assert f"shuffled-voice control (seed 0, evaluation {own['evaluation_id']})" in card
    card = write_model_card({**row, "seed": 2}, data_summary(data.layout), params(2))
    assert "| shuffled-voice control | none of seed 2 and these settings on this snapshot" in card
