"""`s2f real-pairs`: train and evaluate on real voice-face pairs, side by side with the paper.

    s2f real-pairs --pairs ../shared/data/speech2face-page --data-dir D [--seeds N]
    s2f real-pairs --score-on OTHER_DIR --data-dir D

With `--pairs`: one Prefect run `real-pairs` whose subflows are `ingest-pairs` (the directory,
laid out like the Speech2Face project page, into `clips`: `s2f.ingest.pairs`, split by person)
and the pipeline's preprocess → train-decoder → train (N seeds and the shuffled-voice control,
at the same steps) → evaluate (dev picks the seed; test scored once) → promote, then the
report: every row of the test split beside its controls and the paper's own reconstructions
(`s2f.release.report.pairs_report`), saved with the contact sheet under D/reports.

With `--score-on`: the directory is ingested all as test into D/score_on/<name> (its own
tables), preprocessed, and D's champion (else its challenger) is scored on it, the controls
fitted on D's train split; same report.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.guards import flow_guard
from flows.params import (
    IngestPairsParams,
    PipelineParams,
    PreprocessParams,
    RealPairsParams,
)
from flows.summaries import EvaluateSummary, PipelineSummary, TrainSeedsSummary
from storage.layout import DataLayout, safe_name

TRAINED_STAGES = ["preprocess", "train-decoder", "train", "evaluate", "promote"]


def pipeline_params(params: RealPairsParams, steps: int) -> PipelineParams:
    """The pipeline after ingest, on the pairs' tables: the control trains the model's steps."""
    return PipelineParams(
        data_dir=params.data_dir, stages=TRAINED_STAGES, config=params.config,
        decoder_steps=params.decoder_steps, train_steps=params.train_steps,
        device=params.device, seeds=params.seeds, shuffled_control=params.shuffled_control,
        control_steps=params.control_steps or steps, bootstrap=params.bootstrap,
        margin=params.margin, min_diversity=params.min_diversity,
        voice_frontend=params.voice_frontend, train_overrides=params.overrides)


def preset_steps(params: RealPairsParams) -> int:
    from s2f.train.config import TrainConfig

    return params.train_steps or TrainConfig.preset_config(params.config).steps


@flow(name="real-pairs", **flow_guard("real-pairs"))
def real_pairs_flow(params: RealPairsParams) -> PipelineSummary:
    """ingest-pairs → the pipeline from preprocess to promote; returns the pipeline's summary."""
    from flows.ingest import ingest_pairs_flow
    from flows.pipeline import pipeline_flow

    assert params.pairs is not None
    ingested = ingest_pairs_flow(IngestPairsParams(
        pairs=params.pairs, data_dir=params.data_dir, split_seed=params.split_seed))
    get_run_logger().info("ingested %s: %s", params.pairs, ingested.counts)
    summary = pipeline_flow(pipeline_params(params, preset_steps(params)))
    summary.results["ingest"] = ingested
    return summary


def score_on_layout(params: RealPairsParams) -> DataLayout:
    assert params.score_on is not None
    name = safe_name(params.score_on.resolve().name or "pairs")
    return DataLayout(DataLayout(params.data_dir).root / "score_on" / name)


@flow(name="real-pairs-score-on", **flow_guard("real-pairs-score-on"))
def score_on_flow(params: RealPairsParams) -> EvaluateSummary:
    """Ingest OTHER all as test under D/score_on/<name>, preprocess it, score D's champion (else
    challenger) on it with the controls fitted on D's train split."""
    from flows.ingest import ingest_pairs_flow
    from flows.preprocess import preprocess_flow
    from s2f.evaluation.run import evaluate

    assert params.score_on is not None
    other = score_on_layout(params).ensure()
    ingest_pairs_flow(IngestPairsParams(pairs=params.score_on, data_dir=other.root,
                                        split_fractions=(0.0, 0.0, 1.0)))
    preprocess_flow(PreprocessParams(data_dir=other.root))
    encoder_uri, decoder_uri = scored_models()
    get_run_logger().info("scoring %s and %s on %s", encoder_uri, decoder_uri, params.score_on)
    row = evaluate(other, encoder_uri, decoder_uri, role="test", n_boot=params.bootstrap,
                   train_layout=DataLayout(params.data_dir))
    return EvaluateSummary.of(row)


def scored_models() -> tuple[str, str]:
    """The voice encoder's and decoder's champion, else their challenger."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from s2f.registry.names import (
        CHALLENGER,
        CHAMPION,
        FACE_DECODER_NAME,
        VOICE_ENCODER_NAME,
        model_uri,
    )

    def alias(name: str) -> str:
        try:
            MlflowClient().get_model_version_by_alias(name, CHAMPION)
            return model_uri(name, CHAMPION)
        except MlflowException:
            return model_uri(name, CHALLENGER)

    return alias(VOICE_ENCODER_NAME), alias(FACE_DECODER_NAME)


def run_real_pairs_from_cli(params: RealPairsParams) -> int:
    """`s2f real-pairs`: 0 when the run finished (whatever the gate decided), 1 when a stage
    failed, 2 when the pairs directory has none of the page's folders."""
    from flows.demo import quiet_mlflow_logs
    from s2f.ingest.pairs import PairsLayoutError, scan_pairs

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_mlflow_logs()
    source = params.pairs or params.score_on
    try:
        scan_pairs(source)  # type: ignore[arg-type]  # a cheap listing: refuse a wrong dir now
    except PairsLayoutError as exc:
        print(f"s2f real-pairs: {exc}", file=sys.stderr)
        return 2
    print(plan_text(params), flush=True)
    if params.score_on is not None:
        state = score_on_flow(params, return_state=True)
        layout = score_on_layout(params)
    else:
        state = real_pairs_flow(params, return_state=True)
        layout = DataLayout(params.data_dir)
    logging.getLogger("prefect").setLevel(logging.WARNING)
    if not state.is_completed():
        print(f"\ns2f real-pairs: the run failed: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    row, control, seeds, picked_by = report_rows(layout, result)
    if row is None:
        print("s2f real-pairs: no test evaluation to report", file=sys.stderr)
        return 1
    frontend = None if params.score_on is not None else (params.voice_frontend or "paper")
    print("\n" + save_report(layout, row, control, source, seeds, picked_by,  # type: ignore[arg-type]
                             frontend))
    return 0


def plan_text(params: RealPairsParams) -> str:
    """What the run will do, with its estimate on this machine."""
    from s2f.demo_estimate import real_pairs_estimate

    if params.score_on is not None:
        return (f"s2f real-pairs: scoring {DataLayout(params.data_dir).root}'s champion (else "
                f"challenger) on every pair of {params.score_on}, all as test")
    steps = preset_steps(params)
    est = real_pairs_estimate(params.pairs, params.config, params.decoder_steps, steps,  # type: ignore[arg-type]
                              params.seeds, steps if params.shuffled_control else 0)
    return (f"s2f real-pairs: {params.pairs} -> {DataLayout(params.data_dir).root}\n"
            f"  ingest-pairs, preprocess, face decoder, voice encoder x {params.seeds} seed(s) "
            f"of {steps} steps" + (" + the shuffled-voice control at the same steps"
                                   if params.shuffled_control else "")
            + f", evaluate (dev picks, test once), promote, report\n  estimate here: {est}")


def report_rows(layout: DataLayout, result: Any) -> tuple[dict[str, Any] | None,
                                                          dict[str, Any] | None,
                                                          list[dict[str, Any]], str | None]:
    """The test row to report (as stored), the shuffled control's test row (if any), every
    seed's test row and how the reported seed was picked."""
    from s2f.evaluation.record import read_evaluations

    stored = {r["evaluation_id"]: r for r in read_evaluations(layout)}
    if isinstance(result, EvaluateSummary):
        return stored.get(result.evaluation_id, result.row), None, [], None
    evaluated = result.results.get("evaluate")
    trained = result.results.get("train")
    row = stored.get(evaluated.evaluation_id, evaluated.row) if evaluated else None
    control = trained.control if isinstance(trained, TrainSeedsSummary) else None
    seeds = [stored[s.test_evaluation_id] for s in (evaluated.seeds if evaluated else [])
             if s.test_evaluation_id in stored]
    return (row, stored.get(control.test_evaluation_id or "") if control else None, seeds,
            evaluated.picked_by if evaluated else None)


def save_report(layout: DataLayout, row: dict[str, Any], control: dict[str, Any] | None,
                source: Path, seeds: list[dict[str, Any]] | None = None,
                picked_by: str | None = None, frontend: str | None = None) -> str:
    """The report as text, saved under reports/ with the evaluation's contact sheet."""
    from s2f.release.report import pairs_report

    reports = layout.root / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    sheet = copy_figure(row, "contact_sheet", reports / f"contact-sheet-{row['evaluation_id']}.png")
    report = pairs_report(row, control, source, sheet, seeds or [], picked_by, frontend)
    saved = reports / f"real-pairs-report-{row['evaluation_id']}.txt"
    saved.write_text(report)
    return report + f"\n(this report is also in {saved})"


def copy_figure(row: dict[str, Any], name: str, out: Path) -> Path | None:
    """An evaluation's figure, copied from its MLflow run to `out`; None if it has none."""
    import shutil
    import tempfile

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not row.get("mlflow_run_id"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = MlflowClient().download_artifacts(row["mlflow_run_id"],
                                                    f"figures/{name}.png", tmp)
        except (MlflowException, OSError):
            return None
        shutil.copyfile(got, out)
    return out
