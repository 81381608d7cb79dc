"""The promotion gate on a real MLflow registry (SQLite) and real evaluations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from eval_helpers import (
    BIN_HZ,
    DECODER_NAME,
    ENCODER_NAME,
    ConstantEncoder,
    register,
    tone_encoder,
    tracked_eval_data,
)
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from s2f.evaluation.data import training_mean_feature
from s2f.evaluation.record import read_evaluations
from s2f.evaluation.run import evaluate_model
from s2f.release.promote import decide, promote
from storage.io import rows_to_table, write_table_atomic
from storage.schemas import CLIPS, EVALUATIONS


@pytest.fixture()
def data(tmp_path: Path):
    return tracked_eval_data(tmp_path, decoder_alias="challenger")


def _champion(name: str = ENCODER_NAME) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        return None


def test_collapsed_refused_healthy_promoted_worse_kept_out(data) -> None:
    client = MlflowClient()
    mean = torch.from_numpy(training_mean_feature(data.layout, "dlib-resnet"))
    register(ConstantEncoder(mean), ENCODER_NAME, "challenger")
    collapsed = promote(data.layout, n_boot=50)
    assert collapsed.decision == "rejected" and _champion() is None
    assert "collapsed" in collapsed.reasons[-1] and "diversity 0.000" in collapsed.reasons[-1]
    tags = client.get_model_version(ENCODER_NAME, "1").tags
    assert tags["promotion_decision"] == "rejected" and "collapsed" in tags["promotion_reasons"]

    register(tone_encoder(data), ENCODER_NAME, "challenger")
    healthy = promote(data.layout, n_boot=50)
    assert healthy.decision == "promoted", healthy.reasons
    assert _champion() == "2" and _champion(DECODER_NAME) == "1"
    run = client.get_run(healthy.run_id)
    assert run.data.tags["promotion_decision"] == "promoted"
    assert run.data.params["challenger_version"] == "2"

    register(tone_encoder(data, noise=0.7), ENCODER_NAME, "challenger")
    worse = promote(data.layout, n_boot=50)
    assert worse.decision == "rejected" and _champion() == "2"
    assert any("recall@10" in r or "cosine" in r for r in worse.reasons)
    assert worse.metrics["challenger_cosine_deg_mean_6s"] > worse.metrics["champion_cosine_deg_mean_6s"]
    assert client.get_model_version(ENCODER_NAME, "3").tags["promotion_decision"] == "rejected"
    # The champion was not evaluated twice: its row on this snapshot was reused.
    assert sorted(r["model_version"] for r in read_evaluations(data.layout)) == ["1", "2", "3"]


def test_different_dev_snapshots_are_refused_unless_allowed(data) -> None:
    register(tone_encoder(data, noise=0.95), ENCODER_NAME, "challenger")
    assert promote(data.layout, n_boot=50).decision == "promoted"

    # The dev split changes: one dev clip drops out (e.g. its media went missing).
    path = data.layout.shard_path("clips", "m", 0)
    clips = pl.read_parquet(path)
    first_dev = clips.filter(pl.col("youtube_id").str.starts_with("dev"))["clip_key"][0]
    clips = clips.with_columns(pl.when(pl.col("clip_key") == first_dev).then(pl.lit("no_audio"))
                               .otherwise(pl.col("status")).alias("status"))
    write_table_atomic(rows_to_table(clips.to_dicts(), CLIPS), path)

    register(tone_encoder(data), ENCODER_NAME, "challenger")
    unevaluated = promote(data.layout, evaluate_missing=False)
    assert unevaluated.decision == "rejected" and _champion() == "1"
    assert "no dev evaluation of the challenger" in unevaluated.reasons[0]
    evaluate_model(data.layout, n_boot=50)  # a test row: the gate does not take it
    assert promote(data.layout, evaluate_missing=False).decision == "rejected"
    evaluate_model(data.layout, n_boot=50, role="dev")
    refused = promote(data.layout, evaluate_missing=False)
    assert refused.decision == "rejected" and refused.different_data
    assert "different dev snapshots" in refused.reasons[0] and _champion() == "1"

    allowed = promote(data.layout, evaluate_missing=False, allow_different_data=True)
    assert allowed.decision == "promoted" and _champion() == "2"
    assert "compared anyway" in allowed.reasons[0]
    assert MlflowClient().get_run(allowed.run_id).data.tags["different_data"] == "true"


def _row(version: str, recall: float, cosine: float, diversity: float = 0.9,
         snapshot: str = "s") -> dict:
    return {"model_version": version, "split_snapshot_id": snapshot, "recall_at_10_6s": recall,
            "cosine_deg_mean_6s": cosine, "diversity_6s": diversity,
            "metrics": {"spread_pred_deg_6s": 30.0 * diversity, "spread_true_deg": 30.0}}


def test_gate_reads_dev_only_test_rows_do_not_change_the_decision(data) -> None:
    """Two versions evaluated on dev and test; the decision is taken, then the TEST rows are
    rewritten to reverse every test metric, and the gate decides the same. A test row handed
    to the gate is refused outright."""
    register(tone_encoder(data, noise=0.5), ENCODER_NAME, "challenger")
    assert promote(data.layout, n_boot=50).decision == "promoted"   # v1 champion (dev row)
    register(tone_encoder(data, noise=0.0), ENCODER_NAME, "challenger")
    for version in ("1", "2"):
        evaluate_model(data.layout, f"models:/{ENCODER_NAME}/{version}", n_boot=50)  # test rows
    rows = read_evaluations(data.layout)
    assert sorted((r["model_version"], r["role"]) for r in rows) == [("1", "dev"), ("1", "test"),
                                                                     ("2", "test")]
    # Test is scored once per version: a second evaluation is refused, `evaluate` reads it back.
    from s2f.evaluation.run import TestAlreadyScored, evaluate

    with pytest.raises(TestAlreadyScored):
        evaluate_model(data.layout, f"models:/{ENCODER_NAME}/2", n_boot=50)
    again = evaluate(data.layout, f"models:/{ENCODER_NAME}/2", n_boot=50)
    assert again["reused"] and again["evaluation_id"] == next(
        r["evaluation_id"] for r in rows if r["model_version"] == "2" and r["role"] == "test")

    # Rewrite the test rows so that a gate reading test would promote v2: the challenger's
    # test numbers perfect, the champion's useless. On dev the two tie (recall@10 on a pool of
    # 12 dev identities is 1.0 for both), so the dev gate keeps v1.
    for path in data.layout.table_dir("evaluations").rglob("*.parquet"):
        row = read_evaluations_of(path)
        if row["role"] != "test":
            continue
        good = row["model_version"] == "2"
        row.update(recall_at_10_6s=1.0 if good else 0.0, cosine_deg_mean_6s=0.0 if good else 90.0)
        row["metrics"] = [(k, float(v)) for k, v in row["metrics"].items()]
        write_table_atomic(rows_to_table([row], EVALUATIONS), path)
    snapshot_before = {r["evaluation_id"] for r in read_evaluations(data.layout)}
    decision = promote(data.layout, n_boot=50, evaluate_missing=True)
    assert decision.decision == "rejected" and _champion() == "1", decision.reasons
    assert all("dev" in r for r in decision.reasons)
    assert decision.metrics["challenger_recall_at_10_6s"] == decision.metrics[
        "champion_recall_at_10_6s"]  # the dev numbers, not the rewritten test ones
    # The gate evaluated v2 on dev (the only new row) and read no test row.
    after = read_evaluations(data.layout)
    new = [r for r in after if r["evaluation_id"] not in snapshot_before]
    assert [(r["model_version"], r["role"]) for r in new] == [("2", "dev")]
    test_row = next(r for r in after if r["role"] == "test")
    with pytest.raises(ValueError, match="dev rows only"):
        decide(test_row, None, 0.0, 0.2, False)


def read_evaluations_of(path: Path) -> dict:
    import pyarrow.parquet as pq

    (row,) = pq.read_table(path).to_pylist()
    row["metrics"] = dict(row["metrics"])
    return row


def test_gate_rules() -> None:
    champ = _row("1", 0.40, 80.0)
    assert decide(_row("2", 0.50, 79.0), champ, 0.05, 0.2, False)[0] == "promoted"
    assert decide(_row("2", 0.44, 79.0), champ, 0.05, 0.2, False)[0] == "rejected"  # margin
    assert decide(_row("2", 0.40, 79.0), champ, 0.0, 0.2, False)[0] == "rejected"  # a tie
    assert decide(_row("2", 0.60, 81.0), champ, 0.0, 0.2, False)[0] == "rejected"  # cosine
    decision, reasons, _ = decide(_row("2", 0.9, 10.0, diversity=0.1), champ, 0.0, 0.2, False)
    assert decision == "rejected" and "below the floor 0.2" in reasons[-1]
    assert decide(_row("2", 0.1, 90.0), None, 0.0, 0.2, False)[0] == "promoted"
    assert decide(_row("1", 0.4, 80.0), champ, 0.0, 0.2, False)[0] == "unchanged"
    assert decide(_row("2", 0.9, 10.0, snapshot="t"), champ, 0.0, 0.2, False)[0] == "rejected"


def test_cli_evaluate_then_promote_then_predict(data, prefect_server, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main
    from s2f.media.mux import write_media

    register(tone_encoder(data), ENCODER_NAME, "challenger")
    root = str(data.layout.root)
    assert main(["evaluate", "--data-dir", root, "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert f"{ENCODER_NAME} v1 on test snapshot" in out and "recall_at_10_6s" in out
    assert MlflowClient().get_model_version(ENCODER_NAME, "1").description.startswith(
        f"# Model card: {ENCODER_NAME} v1")

    assert main(["promote", "--data-dir", root, "--no-evaluate"]) == 0
    assert "PROMOTED" in capsys.readouterr().out and _champion() == "1"
    assert main(["promote", "--data-dir", root, "--no-evaluate"]) == 0  # already champion
    assert "UNCHANGED" in capsys.readouterr().out

    t = np.arange(32000) / 16000
    voice = write_media(tmp_path / "voice.m4a", None, video_codec=None, audio_codec="aac",
                        audio=(0.5 * np.sin(2 * np.pi * data.bins[3] * BIN_HZ * t)).astype(np.float32))
    assert main(["predict", str(voice), str(tmp_path / "nope.wav"), "--out",
                 str(tmp_path / "faces"), "--data-dir", root]) == 1
    captured = capsys.readouterr()
    assert "nope.wav: file not found" in captured.err
    assert (tmp_path / "faces" / "voice.png").exists()
    assert "not the speaker's face" in captured.out
