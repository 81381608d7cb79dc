"""The parent flow `speech2face-pipeline` on a real Prefect server and real media: stages as
named subflows, parameters validated before any work, run names from the data snapshot,
artifacts for the UI, and a re-run that redoes nothing.

    pytest tests/test_pipeline.py        # ~1-2 min on 2 cores
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from storage.io import shard_paths
from storage.layout import DataLayout
from tests.pipeline_helpers import make_corpus, read_table


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_corpus(tmp_path_factory.mktemp("pipeline-corpus"))


def _params(data_dir: Path, corpus: tuple[Path, Path], **kw):
    from flows.params import STAGES, PipelineParams

    manifest, media = corpus
    kw.setdefault("stages", [s.name for s in STAGES if s.shard_level])
    return PipelineParams(data_dir=data_dir, manifests=[manifest], media_root=media,
                          shard_size=2, preprocess_workers=1, **kw)


def test_params_are_checked_before_any_stage_runs(
        prefect_server: None, corpus: tuple[Path, Path], data_dir: Path) -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.params import PipelineParams
    from flows.pipeline import pipeline_flow

    # Model-level knobs: refused when the parameters are built.
    with pytest.raises(ValidationError):
        _params(data_dir, corpus, frames=0)
    with pytest.raises(ValidationError):
        _params(data_dir, corpus, stages=["ingest", "ingest"])
    with pytest.raises(ValidationError):
        _params(data_dir, corpus, stages=["train-everything"])
    with pytest.raises(ValidationError):
        PipelineParams.model_validate({"data_dir": str(data_dir), "shard_sise": 8})
    # A deployment passes a dict: Prefect validates it against the model before the run.
    with pytest.raises(ParameterTypeError):
        pipeline_flow({"data_dir": str(data_dir), "frames": 0})  # type: ignore[arg-type]

    # A stage-level knob (VGG-Face without weights) fails the run before ingest writes a row.
    state = pipeline_flow(_params(data_dir, corpus, encoder="vggface"), return_state=True)
    assert state.is_failed()
    assert "VGG" in str(state.message) or "weights" in str(state.message).lower()
    assert not shard_paths(DataLayout(data_dir), "clips")
    # So does a missing media root, and preprocess-only runs need no manifests.
    manifest, _ = corpus
    with pytest.raises(ValueError, match="media root not found"):
        _params(data_dir, (manifest, data_dir / "nope")).stage_params()
    assert list(PipelineParams(data_dir=data_dir, stages=["preprocess"]).stage_params()) == [
        "preprocess"]


def test_cli_pipeline(prefect_server: None, corpus: tuple[Path, Path], data_dir: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    manifest, media = corpus
    base = ["pipeline", "--data-dir", str(data_dir), "--manifest", str(manifest),
            "--media-root", str(media), "--shard-size", "2"]
    assert main([*base, "--stages", "ingest", "preprocess", "--frames", "0"]) == 2
    assert "frames" in capsys.readouterr().err
    assert main([*base, "--stages", "ingest", "--runner", "thread"]) == 0
    out = capsys.readouterr().out
    assert "clips        ok               2" in out and "missing_media" in out
    assert not shard_paths(DataLayout(data_dir), "preprocess")


def test_snapshot_names_follow_the_manifests(tmp_path: Path) -> None:
    from flows.params import PipelineParams
    from flows.pipeline import manifest_snapshot

    manifest = tmp_path / "m" / "avspeech_train.csv"
    manifest.parent.mkdir()
    manifest.write_text("a,0,1,0.5,0.5\n")
    params = PipelineParams(data_dir=tmp_path / "d", manifest_dir=manifest.parent,
                            media_root=tmp_path)
    first = manifest_snapshot(params)
    assert first.startswith("avspeech_train-") and first == manifest_snapshot(params)
    with manifest.open("a") as fh:
        fh.write("b,0,1,0.5,0.5\n")
    os.utime(manifest, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert manifest_snapshot(params) != first
    (manifest.parent / "avspeech_test.csv").write_text("c,0,1,0.5,0.5\n")
    assert manifest_snapshot(params).startswith("avspeech_test+avspeech_train-")
    from flows.pipeline import stage_label

    assert stage_label(["ingest", "preprocess"]) == "ingest+preprocess"
    assert stage_label(["train-decoder", "train", "evaluate", "promote"]) == (
        "train-decoder..promote")
    assert stage_label(["ingest", "train", "promote"]) == "ingest+train+promote"
    # Without ingest, the snapshot is the input table's shards.
    assert manifest_snapshot(PipelineParams(data_dir=tmp_path / "d", stages=["preprocess"])
                         ).startswith("clips-0shards-")


def test_pipeline_runs_the_stages_as_named_subflows_with_artifacts(
        prefect_server: None, corpus: tuple[Path, Path], data_dir: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    from flows.pipeline import manifest_snapshot, pipeline_flow

    params = _params(data_dir, corpus)
    state = pipeline_flow(params, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    snapshot = manifest_snapshot(params)
    assert result.manifest_snapshot == snapshot
    assert [r.stage for r in result.stages] == ["ingest", "preprocess"]
    assert result.results["ingest"].counts == {"missing_media": 1, "ok": 2}
    assert result.results["preprocess"].counts == {"ok": 2}

    # The Parquet tables are the hand-off: clips -> preprocess/faces/face_features.
    assert read_table(data_dir, "clips").height == 3
    assert read_table(data_dir, "preprocess")["status"].to_list() == ["ok", "ok"]
    assert read_table(data_dir, "face_features").height == 2

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        assert run.name == f"ingest+preprocess/{snapshot}"
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        assert sorted(c.name for c in children) == [f"ingest/{snapshot}",
                                                    f"preprocess/{snapshot}"]
        assert all(c.state is not None and c.state.is_completed() for c in children)
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        by_key = {a.key: a for a in artifacts if a.key}
        child_artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[c.id for c in children])))
    assert {"pipeline-stages", "pipeline-status-counts", "pipeline-summary",
            "pipeline-progress"} <= set(by_key)
    assert {"ingest-status-counts", "preprocess-status-counts"} <= {
        a.key for a in child_artifacts}
    stages = json.loads(by_key["pipeline-stages"].data)
    assert [(r["stage"], r["clips"]) for r in stages] == [("ingest", 3), ("preprocess", 2)]
    assert all(r["clips_per_s"] > 0 and r["seconds"] > 0 for r in stages)
    counts = {(r["stage"], r["status"]): r["rows"]
              for r in json.loads(by_key["pipeline-status-counts"].data)}
    assert counts == {("clips", "missing_media"): 1, ("preprocess", "ok"): 2}
    assert by_key["pipeline-progress"].data == 100.0
    summary = by_key["pipeline-summary"].data
    assert snapshot in summary and "face_features" in summary and "MLflow" in summary

    # Same manifests again: same snapshot, every shard of both stages skipped.
    before = {p: p.stat().st_mtime_ns for t in ("clips", "preprocess")
              for p in shard_paths(DataLayout(data_dir), t)}
    again = pipeline_flow(params)
    assert again.manifest_snapshot == snapshot
    ingest, preprocess = again.results["ingest"], again.results["preprocess"]
    assert ingest.shards_skipped == ingest.shards == 2
    assert preprocess.shards_skipped == 2 and preprocess.shards_run == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow
def test_pipeline_trains_evaluates_and_promotes_with_mlflow_links(
        prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    import mlflow
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.params import STAGES, PipelineParams
    from flows.pipeline import pipeline_flow
    from s2f.train.synthetic import SyntheticCorpus, build

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    request.addfinalizer(lambda: mlflow.set_tracking_uri(previous))
    layout = DataLayout(tmp_path / "data").ensure()
    build(layout, SyntheticCorpus(identities=12, clips_per_identity=2, test_identities=4, dim=8,
                                  seconds=1.5, shard_size=8))
    model_stages = [s.name for s in STAGES if s.tracked]
    params = PipelineParams(data_dir=layout.root, stages=model_stages, decoder_steps=2,
                            train_steps=2, bootstrap=10)
    with pytest.raises(ValueError, match="track"):
        params.model_copy(update={"track": False}).stage_params()
    state = pipeline_flow(params, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert [r.stage for r in result.stages] == model_stages
    assert result.manifest_snapshot.startswith("face_features-")
    train_run = result.results["train"].run_id
    assert mlflow.get_run(train_run).info.status == "FINISHED"
    decision = result.results["promote"].decision
    assert decision in {"promoted", "rejected", "unchanged"}

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    links = {a.key: a for a in artifacts}["pipeline-mlflow"].data
    assert f"runs:/{train_run}" in links
    assert f"runs:/{result.results['train-decoder'].run_id}" in links
    assert decision in links and uri in links
    # Every model stage's row names its MLflow run, the promotion gate's too.
    assert f"runs:/{result.results['promote'].run_id}" in links

    # What `s2f demo` does after training: faces for a few test voices, then the report's
    # inputs: the evaluation as stored, the model card from MLflow, and the places.
    from flows.demo import demo_evaluation, demo_places, predict_demo_voices, save_model_card
    from s2f.evaluation.record import read_evaluations

    predicted = predict_demo_voices(layout, n=2)
    pngs = sorted(str(p) for p in (layout.root / "predictions").glob("*.png"))
    assert sorted(p.image_path for p in predicted) == pngs and len(pngs) == 2
    row = demo_evaluation({r["evaluation_id"]: r for r in read_evaluations(layout)},
                          result.results["evaluate"])
    name, version = row["model_name"], row["model_version"]
    stored = read_evaluations(layout)[-1]  # the table's row (test, written after dev)
    assert {k: v for k, v in row.items() if k != "metrics"} == {
        k: v for k, v in stored.items() if k != "metrics"}
    assert row["metrics"] == pytest.approx(stored["metrics"], nan_ok=True)  # NaN: tiny pools
    assert row["role"] == "test" and result.results["evaluate"].seeds[0].model_version == version
    card = save_model_card(layout, row)
    assert card == layout.root / "reports" / f"model_card-{name}-v{version}.md"
    text = card.read_text()  # the card the evaluate stage logged and set as the description
    assert text.startswith(f"# Model card: {name} v{version}\n")
    description = mlflow.MlflowClient().get_model_version(name, version).description
    assert description == text or (len(text) > 5000 and "see `model_card.md`" in description)
    run_id = str(state.state_details.flow_run_id)
    places = dict(demo_places(layout, run_id, row, pngs, card))
    assert places["predicted faces"] == "\n".join(pngs)
    assert places["model card"].startswith(f"{card}\n")
    assert places["MLflow UI"] == (f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1\nthen "
                                   f"open http://127.0.0.1:5000/#/models/{name}/versions/{version}")
    assert places["Prefect UI"].startswith(f"PREFECT_HOME={os.environ['PREFECT_HOME']}")
    assert " prefect server start --host 127.0.0.1\nthen open " in places["Prefect UI"]
    assert places["Prefect UI"].endswith(f"http://127.0.0.1:4200/runs/flow-run/{run_id}")
