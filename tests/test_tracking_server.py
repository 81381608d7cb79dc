"""MLflow as users run it beside a cluster: `mlflow server` with proxied artifacts
(`--artifacts-destination`), started here on loopback. Every experiment the project creates
(training, evaluation, promotion, serving) takes the server's artifact root
(`mlflow-artifacts:/`), never a `file://` folder of the host that happened to create it, and
what is logged lands in the server's artifact destination and reads back through the server.

    pytest -x -q tests/test_tracking_server.py     # ~30-60 s on 2 busy cores (one server)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from tests.browser_helpers import clean_env, free_port, server

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real `mlflow server` (SQLite backend, proxied artifacts under tmp), one for this
    module; this process's tracking URI points at it meanwhile. Yields (url, destination)."""
    import mlflow

    tmp_path = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    destination = tmp_path / "server-artifacts"
    destination.mkdir()
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(destination)]
    with server(cmd, clean_env(), f"{url}/health", tmp_path / "mlflow-server.log"), \
            pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(url)
        try:
            yield url, destination
        finally:
            mlflow.set_tracking_uri(previous)


def _tiny_evaluation() -> object:
    """An evaluation result as `s2f evaluate` records it, with one-row tables."""
    from s2f.evaluation.record import EvaluationResult
    from s2f.evaluation.scores import Scores
    from s2f.registry.inference import ModelRef

    one = pl.DataFrame({"method": ["model"], "value": [0.5]})
    scores = Scores(metrics={"recall_at_10_6s": 0.5}, similarity=one, recall=one,
                    craniofacial=one, voice_parameters=one)
    return EvaluationResult(
        evaluation_id="20260101T000000-test", created_at=datetime.now(UTC),
        model=ModelRef("models:/m@challenger", "m", "1", None), decoder=None,
        face_encoder="dlib", split_snapshot_id="snap", features_hash="feat",
        identity_source="test", n_clips=2, n_identities=2, scores=scores)


def test_every_project_experiment_uses_the_servers_artifact_root(
        tracking_server: tuple[str, Path], tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from s2f.evaluation import record
    from s2f.registry import serving
    from s2f.registry.names import tracking_is_server
    from s2f.release import promote
    from s2f.train.tracking import EXPERIMENT as TRAIN_EXPERIMENT
    from s2f.train.tracking import make_tracker
    from storage.layout import DataLayout

    url, destination = tracking_server
    assert tracking_is_server(url) and not tracking_is_server("sqlite:////x/mlflow.db")
    layout = DataLayout(tmp_path / "data").ensure()

    # Training: the trainer's own tracker, as `s2f train` makes it.
    tracker = make_tracker(True, "server-test train", layout)
    tracker.log_text("trained on two clips\n", "notes/train.txt")
    tracker.finish()
    # Evaluation: the real MLflow record of an evaluation (params, metrics, tables).
    eval_run = record.log_to_mlflow(_tiny_evaluation(), layout.mlflow_artifacts)  # type: ignore[arg-type]
    # Promotion and serving choose their experiments with the data dir's artifact folder, as
    # `promote()` and `log_pyfunc_model()` do (both need registered models to go further).
    record.use_experiment(promote.EXPERIMENT, layout.mlflow_artifacts)
    record.use_experiment(serving.SERVING_EXPERIMENT,
                          layout.mlflow_artifacts / serving.SERVING_EXPERIMENT)

    client = MlflowClient(url)
    for name in (TRAIN_EXPERIMENT, record.EXPERIMENT, promote.EXPERIMENT,
                 serving.SERVING_EXPERIMENT):
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None, name
        assert experiment.artifact_location.startswith("mlflow-artifacts:/"), (
            name, experiment.artifact_location)
    # Nothing was written to the data dir's local artifact folder.
    assert not any(layout.mlflow_artifacts.rglob("*")), list(layout.mlflow_artifacts.rglob("*"))

    # What was logged lies in the server's destination and reads back through the server.
    assert mlflow.artifacts.load_text(f"runs:/{tracker.run_id}/notes/train.txt") == \
        "trained on two clips\n"
    assert [p.name for p in destination.rglob("train.txt")] == ["train.txt"]
    tables = {a.path for a in client.list_artifacts(eval_run, "tables")}
    assert "tables/evaluation.json" in tables and "tables/recall.parquet" in tables
    assert any(destination.rglob("evaluation.json"))


def test_experiment_with_a_local_root_on_a_server_is_reported(
        tracking_server: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An experiment an older version created on the server with a node-local root: the run
    still goes there (its history stays in one place), but the log says why it is a problem."""
    import mlflow

    from s2f.registry.names import use_experiment

    mlflow.create_experiment("old-local", artifact_location=(tmp_path / "x").as_uri())
    with caplog.at_level("WARNING", logger="s2f.registry.names"):
        use_experiment("old-local", tmp_path / "ignored")
    assert "one host's disk" in caplog.text and "old-local" in caplog.text
    assert mlflow.get_experiment_by_name("old-local").artifact_location.startswith("file:")
