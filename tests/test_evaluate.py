"""Evaluation on a real data directory with registered models in a per-test MLflow (SQLite)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from eval_helpers import (
    DECODER_NAME,
    DIM,
    ENCODER_NAME,
    ConstantEncoder,
    face_decoder,
    register,
    register_models,
    tracked_eval_data,
)
from mlflow import MlflowClient

from s2f.evaluation.data import EvaluationDataError, training_mean_feature
from s2f.evaluation.record import read_evaluations
from s2f.evaluation.run import evaluate_model
from s2f.registry.inference import ModelResolutionError


@pytest.fixture()
def data(tmp_path: Path):
    return tracked_eval_data(tmp_path)


def test_healthy_model_beats_mean_face_and_is_recorded(data) -> None:
    register_models(data, "challenger")
    result = evaluate_model(data.layout, n_boot=200)
    m = result.metrics

    # Retrieval against the 14 test identities' averaged features, with chance beside it.
    assert m["chance_at_1"] == pytest.approx(1 / 14)
    assert m["recall_at_1_6s"] > 0.85 and m["recall_at_1_3s"] > 0.85
    assert m["recall_at_1_6s_ci_low"] <= m["recall_at_1_6s"] <= m["recall_at_1_6s_ci_high"]
    assert m["recall_at_1_6s_ci_low"] > m["mean_face_recall_at_1_ci_high"]
    assert "recall_at_20_6s" not in m  # K ≥ pool size is not reported
    assert m["cosine_deg_mean_6s"] < m["mean_face_cosine_deg_mean"] - 30
    assert m["diversity_6s"] > 0.8 and m["recon_image_diversity"] > 0.5
    # Decoder landmarks of voice vs true features follow each other.
    assert m["recon_landmark_diversity"] > 0.5
    # Craniofacial: dlib's landmarks detected on the renders (this decoder is untrained, so
    # its renders are no faces and r means nothing here: the table's shape is checked; the
    # statistics are tested on known landmarks in test_metrics).
    cranio = result.scores.craniofacial
    assert cranio.height == 13 and (cranio["n"] == 28).all()
    assert (cranio["p_bonferroni"].fill_nan(1.0) >= cranio["p"].fill_nan(1.0)).all()
    assert 0.0 <= m["cranio_hog_fraction"] <= 1.0
    assert "cranio_random_pair_nasal_index" in m
    # The controls beside the model: the oracle ceiling from the identities' voice settings is
    # absent here (the test identities have pitch only), the mean face is always there.
    assert "oracle_recall_at_1" not in m
    # The paper's protocol: one pool entry per test clip (28), three distances.
    assert m["paper_pool_size"] == 28 and m["paper_chance_at_1"] == pytest.approx(1 / 28)
    for d in ("l2", "l1", "cosine"):
        assert m[f"paper_recall_at_10_{d}_6s"] > m[f"mean_face_paper_recall_at_10_{d}"]
    assert result.role == "test" and result.kind == "model"
    # Voice parameters of the identities are read out of the predicted features.
    assert m["voice_pitch_hz_ridge_r"] > 0.6
    assert m["voice_pitch_hz_ridge_true_r"] >= m["voice_pitch_hz_ridge_r"] - 0.2
    assert "voice_index_ridge_r" not in m  # only voice parameters, not bookkeeping columns

    test_keys = sorted(pl.read_parquet(data.layout.shard_path("clips", "m", 0))
                       .filter((pl.col("split") == "test") & (pl.col("status") == "ok"))
                       ["clip_key"].to_list())
    assert result.n_clips == len(test_keys) == 28 and result.n_identities == 14
    assert result.split_snapshot_id == hashlib.sha256("\n".join(test_keys).encode()).hexdigest()[:16]
    assert result.identity_source.endswith("identities.parquet")

    rows = read_evaluations(data.layout)
    assert len(rows) == 1
    row = rows[0]
    assert (row["model_name"], row["model_version"]) == (ENCODER_NAME, "1")
    assert row["decoder_name"] == DECODER_NAME and row["split_snapshot_id"] == result.split_snapshot_id
    assert row["metrics"] == pytest.approx(m, nan_ok=True)
    assert row["recall_at_10_6s"] == m["recall_at_10_6s"]

    client = MlflowClient()
    run = client.get_run(row["mlflow_run_id"])
    assert run.data.tags["split_snapshot_id"] == result.split_snapshot_id
    assert run.data.metrics["recall_at_1_6s"] == pytest.approx(m["recall_at_1_6s"])
    artifacts = {a.path for d in ("figures", "tables") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"figures/face_grid.png", "figures/recall_at_k.png", "figures/correlations.png",
            "tables/recall.parquet", "tables/craniofacial.parquet",
            "tables/evaluation.json"} <= artifacts


def test_collapsed_model_shows_near_zero_diversity(data) -> None:
    mean = torch.from_numpy(training_mean_feature(data.layout, "dlib-resnet"))
    register(ConstantEncoder(mean), ENCODER_NAME, "challenger")
    register(face_decoder(), DECODER_NAME, "challenger")
    m = evaluate_model(data.layout, n_boot=50, record=False).metrics
    assert m["diversity_6s"] < 0.01 and m["spread_pred_deg_6s"] < 0.1
    assert m["recon_landmark_diversity"] < 0.01 and m["recon_image_diversity"] < 0.01
    # Its similarity equals the mean-face baseline: the metric, not a picture, shows the collapse.
    assert m["cosine_deg_mean_6s"] == pytest.approx(m["mean_face_cosine_deg_mean"], abs=1e-3)
    assert np.isnan(m["cranio_nose_width_r"])


def test_real_voice_encoder_runs_through_the_evaluation(tmp_path: Path) -> None:
    from s2f.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig

    data = tracked_eval_data(tmp_path, n_test=11, n_train=2, clips=1)  # the CNN is slow

    torch.manual_seed(0)
    model = VoiceEncoder(VoiceEncoderConfig.small()).eval()
    register(model, ENCODER_NAME, "challenger",
             params={"encoder": "dlib-resnet", "window": "hann_periodic",
                     "compression": "real_imag"})
    result = evaluate_model(data.layout, decoder_uri=None, n_boot=50, record=False)
    m = result.metrics
    assert 0.0 <= m["recall_at_10_6s"] <= 1.0 and 0 < m["cosine_deg_mean_6s"] < 180
    assert result.scores.craniofacial.height == 0  # no decoder, no reconstruction metrics
    assert read_evaluations(data.layout) == []


def test_bad_inputs_are_explained(data, tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match="challenger"):
        evaluate_model(data.layout, record=False)
    register(ConstantEncoder(torch.zeros(DIM + 1)), ENCODER_NAME, "challenger")
    with pytest.raises(EvaluationDataError, match="129-D"):
        evaluate_model(data.layout, decoder_uri=None, record=False)
    from storage.layout import DataLayout

    with pytest.raises(EvaluationDataError, match="no clips table"):
        evaluate_model(DataLayout(tmp_path / "empty").ensure(), decoder_uri=None, record=False)
