"""The whole pipeline as one parent Prefect flow: each stage is its own flow (also runnable
alone), and the stages hand each other Parquet tables under one data directory.

    s2f demo --data-dir s2f-data                      # demo corpus + the whole chain
    s2f pipeline --data-dir D --manifest-dir D/manifests --media-root D/media \\
                 --stages ingest preprocess [--runner dask --dask-workers 4]

or from Python (after `flows.runtime.configure(data_dir)`):

    from flows.params import PipelineParams
    from flows.pipeline import pipeline_flow
    summary = pipeline_flow(PipelineParams(data_dir=..., manifests=[...], media_root=...))

Stages, in order (`flows.params.STAGES`): ingest → preprocess → train-decoder → train →
evaluate → promote (default: all). The deployments in `prefect.yaml` run this flow with a `stages` parameter (nightly:
ingest + preprocess of new manifest rows; weekly: train-decoder → promote; the stage flows on
demand). Shard-level stages take a task runner (`flows/runners.py`: threads or Dask).

What a run does, in order:

1. `plan-pipeline`: every selected stage's parameters are built and validated (files exist,
   ranges, encoder weights) before any stage starts: a bad knob fails the run with nothing done.
2. The stage flows run as subflows, in pipeline order, named `<stage>/<snapshot>`; the parent
   run is named `<stages>/<snapshot>`, where the manifest snapshot is the manifest names plus a
   short hash of their sizes and mtimes (or of the input table shards when no manifest is
   read). Only small typed summaries (`flows.summaries`) travel between them; the data stays in
   Parquet under `tables/`.
3. Artifacts for the Prefect UI (keys lowercase-dash): `pipeline-stages` (seconds, clips,
   clips/s, shards skipped per stage), `pipeline-status-counts` (clips by furthest stage and
   status, the `s2f status` counts), `pipeline-summary` (markdown: snapshot, tables, MLflow),
   `pipeline-progress` (stages done), `pipeline-mlflow` (MLflow runs, models, metrics and
   the promotion decision, when a model stage ran). The stage flows add their own
   (`ingest-progress`, `ingest-status-counts`, `preprocess-status-counts`,
   `evaluation-headline`, `model-card`, `promotion-reasons`).

Ingest and preprocess skip shards whose inputs are unchanged (fingerprints in the shards'
Parquet metadata), so re-running the pipeline on the same manifests redoes nothing, and
appended manifest lines redo only the last shard and the new ones. Prefect's result
persistence and task caching are not used: see docs/orchestration.md.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ValidationError

from flows.params import STAGE_NAMES, STAGES, PipelineParams, Stage, stage_spec
from flows.runners import describe, task_runner_scope, with_runner
from flows.summaries import PipelineSummary, StageRow, StageSummary, TrainSeedsSummary
from storage.io import shard_paths
from storage.layout import DataLayout

# -- manifest snapshot and run names --------------------------------------------------------


def _stat_digest(paths: list[Path]) -> str:
    """A short hash of the paths' sizes and mtimes (not their contents: cheap on any size)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            h.update(f"{path}:missing\n".encode())
            continue
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:8]


def manifest_snapshot(params: PipelineParams) -> str:
    """`<manifest names>-<hash>` of what the run reads: the manifests (name, size, mtime) when
    ingesting, else the first stage's input table shards. Same inputs, same snapshot."""
    try:
        manifests = params.manifest_paths() if "ingest" in params.stages else []
    except ValueError:
        manifests = []
    if manifests:
        names = "+".join(p.stem for p in manifests[:3]) + (
            f"+{len(manifests) - 3}more" if len(manifests) > 3 else "")
        return f"{names}-{_stat_digest(manifests)}"
    table = stage_spec(params.stages[0]).input_table
    shards = shard_paths(DataLayout(params.data_dir), table)
    return f"{table}-{len(shards)}shards-{_stat_digest(shards)}"


def stage_label(stages: list[Stage]) -> str:
    """`ingest+preprocess`, or `ingest..promote` for three or more consecutive stages."""
    first = STAGE_NAMES.index(stages[0])
    if len(stages) > 2 and stages == STAGE_NAMES[first:first + len(stages)]:
        return f"{stages[0]}..{stages[-1]}"
    return "+".join(stages)


def _pipeline_run_name() -> str:
    from prefect.runtime import flow_run

    raw = flow_run.parameters.get("params")
    try:
        params = raw if isinstance(raw, PipelineParams) else PipelineParams.model_validate(raw)
    except ValidationError:
        return "pipeline/invalid-parameters"
    return f"{stage_label(params.stages)}/{manifest_snapshot(params)}"


# -- tasks ----------------------------------------------------------------------------------

@task(name="plan-pipeline", cache_policy=NO_CACHE)
def plan_pipeline(params: PipelineParams) -> dict[str, BaseModel]:
    """Build and validate every selected stage's parameters: nothing runs if one is bad."""
    return params.stage_params()


@task(name="count-statuses", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def count_statuses(data_dir: Path) -> list[dict[str, Any]]:
    """Clips by furthest stage and status (the `s2f status` counts), as plain JSON rows."""
    from storage.status import has_clips, status_counts

    layout = DataLayout(data_dir)
    if not has_clips(layout):
        return []
    return [{"stage": str(r["stage"]), "status": str(r["status"]), "rows": int(r["rows"])}
            for r in status_counts(layout).to_dicts()]


def summary_markdown(snapshot: str, params: PipelineParams, rows: list[StageRow],
                     runner: str) -> str:
    layout = DataLayout(params.data_dir)
    lines = [f"# speech2face pipeline `{snapshot}`", "",
             f"- data directory: `{layout.root}`",
             f"- stages: {', '.join(params.stages)}",
             f"- task runner: {runner}",
             f"- MLflow tracking: `{os.environ.get('MLFLOW_TRACKING_URI', layout.mlflow_tracking_uri)}`",
             "", "| stage | state | seconds | clips | clips/s | shards (skipped) |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r.stage} | {r.state} | {r.seconds} | {r.clips} | "
              f"{r.clips_per_s} | {r.shards} ({r.shards_skipped}) |" for r in rows]
    lines += ["", "Tables (Parquet, one file per shard):", ""]
    for table in ("clips", "preprocess", "faces", "face_features", "evaluations"):
        if shard_paths(layout, table):
            lines.append(f"- `{table}`: `{layout.table_dir(table)}`")
    failed = [r for r in rows if r.state == "failed"]
    if failed:
        lines += ["", f"**Stage `{failed[0].stage}` failed**: {failed[0].error}",
                  "Re-run the same deployment: finished shards are skipped."]
    lines += ["", f"Per clip: `s2f status --data-dir {layout.root}`"]
    return "\n".join(lines)


def _run_link(run_id: str) -> str:
    """`runs:/<id>`, plus the UI address when MLflow is a tracking server."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return f"`runs:/{run_id}`"
    try:
        import mlflow

        experiment = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - a link is a convenience: fall back to the URI
        return f"`runs:/{run_id}`"
    return f"[{run_id}]({uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id})"


def mlflow_markdown(results: dict[str, StageSummary]) -> str | None:
    """Where the training, evaluation and promotion of this run are in MLflow."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "(default)")
    lines = ["# MLflow", "", f"Tracking URI: `{uri}`"]
    if not uri.startswith(("http://", "https://")):
        lines.append(f"(browse with `mlflow ui --backend-store-uri {uri}`)")
    lines += ["", "| stage | MLflow run | model | result |", "|---|---|---|---|"]
    tracked = [(s.name, results[s.name]) for s in STAGES if s.tracked and s.name in results]
    for stage, r in tracked:
        run = _run_link(r.run_id) if r.run_id else "-"
        model = f"`{r.model_uri}`" if r.model_uri else ""
        lines.append(f"| {stage} | {run} | {model} | {r.result_text()} |")
    return "\n".join(lines) if tracked else None


@task(name="publish-pipeline-artifacts", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=2)
def publish_artifacts(snapshot: str, params: PipelineParams, rows: list[StageRow],
                      runner: str, results: dict[str, StageSummary]) -> None:
    mlflow_text = mlflow_markdown(results)
    if mlflow_text:
        create_markdown_artifact(mlflow_text, key="pipeline-mlflow",
                                 description=f"MLflow runs and models of {snapshot}")
    create_table_artifact([r.model_dump() for r in rows], key="pipeline-stages",
                          description=f"per-stage time and throughput, {snapshot}")
    counts = count_statuses.fn(params.data_dir)
    create_table_artifact(counts or [{"stage": "-", "status": "no clips yet", "rows": 0}],
                          key="pipeline-status-counts",
                          description="clips by furthest stage and status (s2f status)")
    create_markdown_artifact(summary_markdown(snapshot, params, rows, runner),
                             key="pipeline-summary", description=f"pipeline run {snapshot}")


# -- the flow ---------------------------------------------------------------------------------

def stage_flow(stage: str) -> Flow[Any, Any]:
    """The flow of one stage, imported here: training and evaluation import torch and MLflow."""
    module, attribute = stage_spec(stage).flow.split(":")
    return getattr(importlib.import_module(module), attribute)


def with_upstream(stage: str, params: BaseModel, results: dict[str, StageSummary]) -> BaseModel:
    """The evaluate stage evaluates the versions the train stage of this run registered."""
    train = results.get("train")
    if stage == "evaluate" and isinstance(train, TrainSeedsSummary) and train.seeds:
        versions = [s.model_version for s in train.seeds if s.model_version]
        return params.model_copy(update={"versions": versions or None})
    return params


@flow(name="speech2face-pipeline", flow_run_name=_pipeline_run_name, log_prints=True)
def pipeline_flow(params: PipelineParams) -> PipelineSummary:
    """plan → the selected stages, each a subflow; returns each stage's summary, one row per
    stage and the manifest snapshot."""
    logger = get_run_logger()
    built = plan_pipeline(params)  # raises before any stage when a knob is bad
    summary = PipelineSummary(manifest_snapshot=manifest_snapshot(params))
    snapshot = summary.manifest_snapshot
    progress = create_progress_artifact(0.0, key="pipeline-progress",
                                        description=f"stages done of {', '.join(params.stages)}")
    failure: BaseException | None = None
    with task_runner_scope(params.runner) as runner:
        runner_text = describe(runner)
        logger.info("snapshot %s, stages %s, task runner: %s", snapshot, params.stages,
                    runner_text)
        for done, stage in enumerate(params.stages, start=1):
            run_stage = stage_flow(stage)
            if stage_spec(stage).shard_level:
                run_stage = with_runner(run_stage, runner)
            run_stage = run_stage.with_options(flow_run_name=f"{stage}/{snapshot}")
            t0 = time.perf_counter()
            logger.info("stage %s: starting", stage)
            try:
                result = run_stage(with_upstream(stage, built[stage], summary.results))
            except Exception as exc:  # reported in the artifacts, then re-raised
                summary.stages.append(StageRow.of(stage, time.perf_counter() - t0, None,
                                                  f"{type(exc).__name__}: {exc}"))
                failure = exc
                break
            summary.results[stage] = result
            summary.stages.append(StageRow.of(stage, time.perf_counter() - t0, result))
            logger.info("stage %s: done in %.1f s", stage, summary.stages[-1].seconds)
            if progress is not None:
                update_progress_artifact(progress, 100.0 * done / len(params.stages))
    publish_artifacts(snapshot, params, summary.stages, runner_text, summary.results)
    if failure is not None:
        raise failure
    return summary


# -- command line ---------------------------------------------------------------------------

def print_status_counts(data_dir: Path) -> None:
    """The `s2f status` counts, after a run."""
    counts = count_statuses.fn(DataLayout(data_dir).root)
    if counts:
        print("clips by furthest stage and status:")
        for r in counts:
            print(f"  {r['stage']:<12} {r['status']:<16} {r['rows']}")


def run_pipeline_from_cli(params: PipelineParams) -> int:
    """`s2f pipeline`: 0 when every stage finished, 1 when one failed, 2 for bad parameters."""
    try:
        params.stage_params()
    except (ValidationError, ValueError) as exc:
        print(f"s2f pipeline: invalid parameters:\n{exc}", file=sys.stderr)
        return 2
    state = pipeline_flow(params, return_state=True)
    print_status_counts(params.data_dir)
    if not state.is_completed():
        print(f"pipeline failed: {state.message}", file=sys.stderr)
        return 1
    return 0
