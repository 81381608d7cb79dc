"""The whole pipeline as one parent Prefect flow: each stage is its own flow (also runnable
alone), and the stages hand each other Parquet tables under one data directory.

    s2f demo --data-dir s2f-data                      # demo corpus + the whole chain
    s2f pipeline --data-dir D --manifest-dir D/manifests --media-root D/media \\
                 --stages ingest preprocess [--runner dask --dask-workers 4]

or from Python (after `flows.runtime.configure(data_dir)`):

    from flows.pipeline import PipelineParams, pipeline_flow
    pipeline_flow(PipelineParams(data_dir=..., manifests=[...], media_root=...))

Stages, in order: ingest → preprocess → train-decoder → train → evaluate → promote (default:
all). The deployments in `prefect.yaml` run this flow with a `stages` parameter (nightly:
ingest + preprocess of new manifest rows; weekly: train-decoder → promote; the stage flows on
demand). Shard-level stages take a task runner (`flows/runners.py`: threads or Dask).

What a run does, in order:

1. `plan-pipeline`: every selected stage's parameters are built and validated (files exist,
   ranges, encoder weights) before any stage starts: a bad knob fails the run with nothing done.
2. The stage flows run as subflows, in pipeline order, named `<stage>/<snapshot>`; the parent
   run is named `<stages>/<snapshot>`, where the snapshot is the manifest names plus a short
   hash of their sizes and mtimes (or of the input table shards when no manifest is read).
   Only small summaries travel between them; the data stays in Parquet under `tables/`.
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

import argparse
import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import polars as pl
from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows.ingest import IngestParams, ingest_flow
from flows.preprocess import PreprocessParams, preprocess_flow
from flows.runners import RunnerParams, describe, task_runner_scope, with_runner
from storage.io import shard_paths
from storage.layout import DataLayout

# Stages in pipeline order; each is a flow of its own (flows/ingest.py, flows/preprocess.py,
# flows/train.py, flows/evaluate.py), imported lazily so that `prefect deploy` stays light.
Stage = Literal["ingest", "preprocess", "train-decoder", "train", "evaluate", "promote"]
ALL_STAGES: list[Stage] = ["ingest", "preprocess", "train-decoder", "train", "evaluate",
                           "promote"]
DATA_STAGES: list[Stage] = ["ingest", "preprocess"]
MODEL_STAGES: list[Stage] = ["train-decoder", "train", "evaluate", "promote"]
# Input tables of a stage, hashed into the snapshot when no manifest is read.
STAGE_INPUTS: dict[str, str] = {"preprocess": "clips", "train-decoder": "face_features",
                                "train": "face_features", "evaluate": "face_features",
                                "promote": "face_features"}


class PipelineParams(BaseModel):
    """Every knob of a pipeline run; validated before any stage starts."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(description="the pipeline's data directory")
    manifests: list[Path] = Field(default_factory=list, description="AVSpeech CSVs to ingest")
    manifest_dir: Path | None = Field(
        None, description="also ingest every *.csv in this directory (sorted): drop or append "
                          "manifests here and the nightly run picks up the new rows")
    media_root: Path | None = Field(None, description="directory of <youtube_id>.(mp4|webm|mkv)")
    download: bool = Field(False, description="fetch missing media with yt-dlp")
    stages: list[Stage] = Field(default_factory=lambda: list(ALL_STAGES), min_length=1,
                                description="stages to run; they always run in pipeline order")
    shard_size: int = Field(256, ge=1, le=100_000, description="manifest lines per shard")
    frames: int = Field(3, ge=1, le=64, description="frames sampled per clip")
    detector: Literal["hog", "cnn"] = Field("hog", description="dlib face detector")
    encoder: Literal["dlib-resnet", "vggface"] = Field("dlib-resnet", description="face encoder")
    vggface_weights: Path | None = Field(None, description="VGG-Face weights for vggface")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="preprocess decode/warp")
    preprocess_workers: int | None = Field(
        None, ge=0, le=256, description="processes per preprocess shard (0: one per core); "
                                        "default: 0, or 1 under Dask (its workers are the "
                                        "parallelism, and they cannot start processes)")
    runner: RunnerParams = Field(default_factory=RunnerParams,
                                 description="task runner of the shard-level stages")
    # training, evaluation, promotion
    config: Literal["small", "paper"] = Field("small", description="model preset")
    decoder_steps: int | None = Field(None, ge=1, description="face decoder training steps "
                                                              "(default: the preset's)")
    train_steps: int | None = Field(None, ge=1, description="voice encoder training steps "
                                                            "(default: the preset's)")
    resume: bool = Field(False, description="continue training from the last checkpoints")
    track: bool = Field(True, description="log to MLflow and register the models "
                                          "(evaluate and promote need the registry)")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of the evaluation CIs")
    margin: float = Field(0.0, ge=0.0, description="recall@10 gain needed over the champion")
    min_diversity: float = Field(0.2, ge=0.0, description="promotion floor on prediction "
                                                          "spread / true spread")
    seeds: int = Field(1, ge=1, le=20, description="voice-encoder seeds to train; the dev-best "
                                                   "goes to the gate (flows/seeds.py)")
    shuffled_control: bool = Field(False, description="also train and score the shuffled-voice "
                                                      "control (unregistered)")
    control_steps: int | None = Field(None, ge=1, description="the control's training steps "
                                                              "(default: a quarter of training's)")

    @field_validator("stages")
    @classmethod
    def _no_repeats(cls, stages: list[Stage]) -> list[Stage]:
        if len(set(stages)) != len(stages):
            raise ValueError(f"a stage is listed twice: {stages}")
        return [s for s in ALL_STAGES if s in stages]

    def manifest_paths(self) -> list[Path]:
        paths = list(self.manifests)
        if self.manifest_dir is not None:
            if not self.manifest_dir.is_dir():
                raise ValueError(f"manifest_dir not found: {self.manifest_dir}")
            paths += sorted(p for p in self.manifest_dir.glob("*.csv") if p.is_file())
        return list(dict.fromkeys(p.resolve() for p in paths))

    def ingest_params(self) -> IngestParams:
        manifests = self.manifest_paths()
        if not manifests or self.media_root is None:
            raise ValueError("the ingest stage needs manifests (or a manifest_dir holding "
                             "*.csv) and a media root")
        params = IngestParams(manifests=manifests, media_root=self.media_root,
                              data_dir=self.data_dir, download=self.download,
                              shard_size=self.shard_size)
        params.check_media_root()
        return params

    def preprocess_params(self) -> PreprocessParams:
        workers = self.preprocess_workers
        if workers is None:
            workers = 1 if self.runner.resolved().kind == "dask" else 0
        # `workers` (processes per shard) is newer than the flow: pass it where it exists.
        extra = {"workers": workers} if "workers" in PreprocessParams.model_fields else {}
        return PreprocessParams(data_dir=self.data_dir, frames=self.frames,
                                detector=self.detector, encoder=self.encoder,
                                vggface_weights=self.vggface_weights, device=self.device,
                                **extra)

    def _train_common(self, steps: int | None) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "config": self.config, "encoder": self.encoder,
                "steps": steps, "resume": self.resume, "device": self.device,
                "track": self.track}

    def train_decoder_params(self) -> BaseModel:
        from flows.train import TrainDecoderParams

        return TrainDecoderParams(**self._train_common(self.decoder_steps))

    def train_params(self) -> BaseModel:
        from flows.train import TrainParams

        return TrainParams(**self._train_common(self.train_steps),
                           vggface_weights=self.vggface_weights)

    def train_seeds_params(self) -> BaseModel:
        from flows.seeds import TrainSeedsParams

        return TrainSeedsParams(train=self.train_params(), seeds=self.seeds,
                                shuffled_control=self.shuffled_control,
                                control_steps=self.control_steps, bootstrap=self.bootstrap)

    def evaluate_params(self) -> BaseModel:
        from flows.evaluate import EvaluateParams
        from flows.seeds import EvaluateSeedsParams

        return EvaluateSeedsParams(evaluate=EvaluateParams(data_dir=self.data_dir,
                                                           bootstrap=self.bootstrap))

    def promote_params(self) -> BaseModel:
        from flows.evaluate import PromoteParams

        return PromoteParams(data_dir=self.data_dir, margin=self.margin,
                             min_diversity=self.min_diversity, bootstrap=self.bootstrap)

    def stage_params(self) -> dict[str, BaseModel]:
        """Each selected stage's own parameters, in pipeline order; raises on the first bad one."""
        if not self.track and {"evaluate", "promote"} & set(self.stages) \
                and {"train-decoder", "train"} & set(self.stages):
            raise ValueError("evaluate/promote read the models that training registers: "
                             "keep track=true when training in the same run")
        builders = {"ingest": self.ingest_params, "preprocess": self.preprocess_params,
                    "train-decoder": self.train_decoder_params, "train": self.train_seeds_params,
                    "evaluate": self.evaluate_params, "promote": self.promote_params}
        return {stage: builders[stage]() for stage in self.stages}


# -- snapshot and run names -----------------------------------------------------------------

def _stat_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            h.update(f"{path}:missing\n".encode())
            continue
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:8]


def data_snapshot(params: PipelineParams) -> str:
    """`<manifest names>-<hash>` of what the run reads: the manifests (name, size, mtime) when
    ingesting, else the first stage's input table shards. Same inputs, same snapshot."""
    try:
        manifests = params.manifest_paths() if "ingest" in params.stages else []
    except ValueError:
        manifests = []
    if manifests:
        names = "+".join(p.stem for p in manifests[:3]) + (
            f"+{len(manifests) - 3}more" if len(manifests) > 3 else "")
        return f"{names}-{_stat_hash(manifests)}"
    table = STAGE_INPUTS.get(params.stages[0], "clips")
    shards = shard_paths(DataLayout(params.data_dir), table)
    return f"{table}-{len(shards)}shards-{_stat_hash(shards)}"


def stage_label(stages: list[Stage]) -> str:
    """`ingest+preprocess`, or `ingest..promote` for three or more consecutive stages."""
    first = ALL_STAGES.index(stages[0])
    if len(stages) > 2 and stages == ALL_STAGES[first:first + len(stages)]:
        return f"{stages[0]}..{stages[-1]}"
    return "+".join(stages)


def _pipeline_run_name() -> str:
    from prefect.runtime import flow_run

    raw = flow_run.parameters.get("params")
    try:
        params = raw if isinstance(raw, PipelineParams) else PipelineParams.model_validate(raw)
    except ValidationError:
        return "pipeline/invalid-parameters"
    return f"{stage_label(params.stages)}/{data_snapshot(params)}"


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


def stage_row(stage: str, seconds: float, summary: dict[str, Any] | None,
              error: str | None = None) -> dict[str, Any]:
    """One row of the `pipeline-stages` table: plain JSON types only."""
    summary = summary or {}
    counts = summary.get("counts") or {}
    clips = int(summary.get("rows") or summary.get("n_clips")
                or sum(int(v) for v in counts.values() if isinstance(v, int | float)))
    shards = summary.get("shards")
    if shards is None and "shards_done" in summary:
        shards = int(summary["shards_done"]) + int(summary.get("shards_skipped", 0))
    return {"stage": stage, "state": "failed" if error else "completed",
            "seconds": round(float(seconds), 2), "clips": clips,
            "clips_per_s": round(clips / seconds, 2) if seconds > 0 and clips else 0.0,
            "shards": int(shards or 0), "shards_skipped": int(summary.get("shards_skipped", 0)),
            "error": (error or "")[:300]}


def summary_markdown(snapshot: str, params: PipelineParams, rows: list[dict[str, Any]],
                     runner: str) -> str:
    layout = DataLayout(params.data_dir)
    lines = [f"# speech2face pipeline `{snapshot}`", "",
             f"- data directory: `{layout.root}`",
             f"- stages: {', '.join(params.stages)}",
             f"- task runner: {runner}",
             f"- MLflow tracking: `{os.environ.get('MLFLOW_TRACKING_URI', layout.mlflow_tracking_uri)}`",
             "", "| stage | state | seconds | clips | clips/s | shards (skipped) |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['state']} | {r['seconds']} | {r['clips']} | "
              f"{r['clips_per_s']} | {r['shards']} ({r['shards_skipped']}) |" for r in rows]
    lines += ["", "Tables (Parquet, one file per shard):", ""]
    for table in ("clips", "preprocess", "faces", "face_features", "evaluations"):
        if shard_paths(layout, table):
            lines.append(f"- `{table}`: `{layout.table_dir(table)}`")
    failed = [r for r in rows if r["state"] == "failed"]
    if failed:
        lines += ["", f"**Stage `{failed[0]['stage']}` failed**: {failed[0]['error']}",
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


def mlflow_markdown(results: dict[str, Any]) -> str | None:
    """Where the training, evaluation and promotion of this run are in MLflow."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "(default)")
    lines = ["# MLflow", "", f"Tracking URI: `{uri}`"]
    if not uri.startswith(("http://", "https://")):
        lines.append(f"(browse with `mlflow ui --backend-store-uri {uri}`)")
    lines += ["", "| stage | MLflow run | model | result |", "|---|---|---|---|"]
    found = False
    for stage in MODEL_STAGES:
        r = results.get(stage)
        if not isinstance(r, dict):
            continue
        run_id = r.get("run_id") or r.get("mlflow_run_id") or r.get("run")
        model = ""
        if r.get("model_name") and r.get("model_version"):
            model = f"`models:/{r['model_name']}/{r['model_version']}`"
        elif r.get("model_version"):
            model = f"version {r['model_version']}"
        if stage in ("train-decoder", "train"):
            result = f"step {r.get('step')}, train loss {r.get('train_loss')}"
        elif stage == "evaluate":
            m = r.get("metrics") or {}
            result = ", ".join(f"{k} {float(m[k]):.4f}" for k in
                               ("recall_at_10_6s", "cosine_deg_mean_6s", "diversity_6s")
                               if k in m)
        else:
            result = f"**{r.get('decision')}**: " + "; ".join(map(str, r.get("reasons", [])))
        lines.append(f"| {stage} | {_run_link(str(run_id)) if run_id else '-'} | {model} | "
                     f"{result} |")
        found = True
    return "\n".join(lines) if found else None


@task(name="publish-pipeline-artifacts", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=2)
def publish_artifacts(snapshot: str, params: PipelineParams, rows: list[dict[str, Any]],
                      runner: str, results: dict[str, Any] | None = None) -> None:
    mlflow_text = mlflow_markdown(results or {})
    if mlflow_text:
        create_markdown_artifact(mlflow_text, key="pipeline-mlflow",
                                 description=f"MLflow runs and models of {snapshot}")
    create_table_artifact(rows, key="pipeline-stages",
                          description=f"per-stage time and throughput, {snapshot}")
    counts = count_statuses.fn(params.data_dir)
    create_table_artifact(counts or [{"stage": "-", "status": "no clips yet", "rows": 0}],
                          key="pipeline-status-counts",
                          description="clips by furthest stage and status (s2f status)")
    create_markdown_artifact(summary_markdown(snapshot, params, rows, runner),
                             key="pipeline-summary", description=f"pipeline run {snapshot}")


# -- the flow ---------------------------------------------------------------------------------

SHARD_STAGES = {"ingest", "preprocess"}  # stages whose tasks the chosen task runner runs


def stage_flow(stage: str) -> Flow[Any, Any]:
    """The flow of one stage; training and evaluation import torch and MLflow only here."""
    if stage == "ingest":
        return ingest_flow
    if stage == "preprocess":
        return preprocess_flow
    if stage in ("train-decoder", "train"):
        from flows.seeds import train_seeds_flow
        from flows.train import train_decoder_flow

        return train_decoder_flow if stage == "train-decoder" else train_seeds_flow
    from flows.evaluate import promote_flow
    from flows.seeds import evaluate_seeds_flow

    return {"evaluate": evaluate_seeds_flow, "promote": promote_flow}[stage]


def with_upstream(stage: str, params: BaseModel, results: dict[str, Any]) -> BaseModel:
    """The evaluate stage evaluates the versions the train stage of this run registered."""
    train = results.get("train")
    if stage == "evaluate" and train and train.get("seeds"):
        versions = [str(s["model_version"]) for s in train["seeds"] if s.get("model_version")]
        return params.model_copy(update={"versions": versions or None})
    return params


@flow(name="speech2face-pipeline", flow_run_name=_pipeline_run_name, log_prints=True)
def pipeline_flow(params: PipelineParams) -> dict[str, Any]:
    """plan → ingest → preprocess (the selected stages, each a subflow); returns each
    stage's summary plus the snapshot name."""
    logger = get_run_logger()
    built = plan_pipeline(params)  # raises before any stage when a knob is bad
    snapshot = data_snapshot(params)
    progress = create_progress_artifact(0.0, key="pipeline-progress",
                                        description=f"stages done of {', '.join(params.stages)}")
    results: dict[str, Any] = {"snapshot": snapshot}
    rows: list[dict[str, Any]] = []
    failure: BaseException | None = None
    with task_runner_scope(params.runner) as runner:
        runner_text = describe(runner)
        logger.info("snapshot %s, stages %s, task runner: %s", snapshot, params.stages,
                    runner_text)
        for done, stage in enumerate(params.stages, start=1):
            run_stage = stage_flow(stage)
            if stage in SHARD_STAGES:
                run_stage = with_runner(run_stage, runner)
            run_stage = run_stage.with_options(flow_run_name=f"{stage}/{snapshot}")
            t0 = time.perf_counter()
            logger.info("stage %s: starting", stage)
            try:
                results[stage] = run_stage(with_upstream(stage, built[stage], results))
            except Exception as exc:  # reported in the artifacts, then re-raised
                rows.append(stage_row(stage, time.perf_counter() - t0, None,
                                      f"{type(exc).__name__}: {exc}"))
                failure = exc
                break
            rows.append(stage_row(stage, time.perf_counter() - t0, results[stage]))
            logger.info("stage %s: done in %.1f s", stage, rows[-1]["seconds"])
            if progress is not None:
                update_progress_artifact(progress, 100.0 * done / len(params.stages))
    publish_artifacts(snapshot, params, rows, runner_text, results)
    if failure is not None:
        raise failure
    results["stages"] = rows
    return results


# -- command line ---------------------------------------------------------------------------

def params_from_args(args: argparse.Namespace) -> PipelineParams:
    runner = RunnerParams(kind=args.runner, dask_address=args.dask_address,
                          **({"dask_workers": args.dask_workers} if args.dask_workers else {}))
    return PipelineParams(
        data_dir=args.data_dir, manifests=list(args.manifest or []),
        manifest_dir=args.manifest_dir, media_root=args.media_root, download=args.download,
        stages=list(args.stages), shard_size=args.shard_size, frames=args.frames,
        detector=args.detector, encoder=args.encoder, vggface_weights=args.vggface_weights,
        device=args.device, runner=runner, config=args.config,
        decoder_steps=args.decoder_steps, train_steps=args.train_steps,
        bootstrap=args.bootstrap)


def run_pipeline_from_cli(args: argparse.Namespace) -> int:
    """`s2f pipeline`: 0 when every stage finished, 1 when one failed, 2 for bad parameters."""
    try:
        params = params_from_args(args)
        params.stage_params()
    except (ValidationError, ValueError) as exc:
        print(f"s2f pipeline: invalid parameters:\n{exc}", file=sys.stderr)
        return 2
    state = pipeline_flow(params, return_state=True)
    layout = DataLayout(params.data_dir)
    counts = count_statuses.fn(layout.root)
    if counts:
        print("clips by furthest stage and status:")
        for r in counts:
            print(f"  {r['stage']:<12} {r['status']:<16} {r['rows']}")
    if not state.is_completed():
        print(f"pipeline failed: {state.message}", file=sys.stderr)
        return 1
    return 0


def run_demo_from_cli(args: argparse.Namespace) -> int:
    """`s2f demo`: build the demo corpus (once) under the data directory, run the pipeline on
    it, predict faces for a few test voices and print the report (`s2f.release.report`): the paper's
    tables from the `evaluations` row, the promotion decision, and where everything is.
    0 when the pipeline finished (whatever the gate decided), 1 when a stage failed."""
    from s2f.corpus.build import CorpusConfig, build_demo_corpus, corpus_is_complete
    from s2f.release.report import demo_report, places_report
    from storage.status import status_counts

    # Model loads would draw a progress bar per artifact between the report's lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_mlflow_logs()
    layout = DataLayout(args.data_dir)
    corpus_dir = layout.demo_corpus_dir
    config = CorpusConfig(out=corpus_dir, identities=args.identities,
                          clips_per_identity=args.clips_per_identity, seed=args.seed)
    print(demo_plan(args, corpus_is_complete(config)), flush=True)
    if corpus_is_complete(config):
        print(f"demo corpus: reusing {corpus_dir}")
    else:
        print(f"demo corpus: building {args.identities} identities × "
              f"{args.clips_per_identity} clips in {corpus_dir}")
        print(build_demo_corpus(config).describe())
    params = PipelineParams(
        data_dir=layout.root,
        # the corpus's person-disjoint splits (an old corpus has no dev manifest: dev is then
        # carved from train by identity)
        manifests=[corpus_dir / f"avspeech_{split}.csv" for split in ("train", "dev", "test")
                   if (corpus_dir / f"avspeech_{split}.csv").exists()],
        media_root=corpus_dir / "media",
        runner=RunnerParams(),  # S2F_TASK_RUNNER / S2F_DASK_ADDRESS may pick Dask
        decoder_steps=getattr(args, "decoder_steps", None),
        train_steps=getattr(args, "train_steps", None),
        margin=getattr(args, "margin", 0.0),
        min_diversity=getattr(args, "min_diversity", 0.2),
        seeds=getattr(args, "seeds", 1),
        shuffled_control=not getattr(args, "no_control", False),
        control_steps=getattr(args, "control_steps", None),
    )
    state = pipeline_flow(params, return_state=True)
    # The runs are over: Prefect's shutdown line ("Stopping temporary server") would otherwise
    # come after the report, which is meant to be the last thing printed.
    logging.getLogger("prefect").setLevel(logging.WARNING)
    flow_run_id = str(state.state_details.flow_run_id)
    print("\nClips by furthest stage and status (details: s2f status --data-dir "
          f"{layout.root}):")
    with pl.Config(tbl_rows=50, tbl_hide_dataframe_shape=True):
        print(status_counts(layout))
    if not state.is_completed():
        print(f"\ns2f demo: the pipeline failed: {state.message}", file=sys.stderr)
        print(places_report(demo_places(layout, flow_run_id, None, [], None)))
        return 1
    results: dict[str, Any] = state.result()
    images = [p.image_path for p in predict_demo_voices(layout, n=3)
              if p.error is None and p.image_path] if "train" in results else []
    row = demo_evaluation(layout, results.get("evaluate"))
    card = save_model_card(layout, row)
    seed_rows, control_row = demo_seed_rows(layout, results)
    report = demo_report(row, results.get("promote"),
                         demo_places(layout, flow_run_id, row, images, card),
                         seeds=seed_rows, control=control_row,
                         picked_by=(results.get("evaluate") or {}).get("picked_by"))
    print("\n" + report)
    if row is not None:
        saved = layout.root / "reports" / f"demo-report-{row['evaluation_id']}.txt"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(report)
        print(f"(this report is also in {saved})")
    return 0


def quiet_mlflow_logs() -> None:
    """MLflow's INFO lines ("Successfully registered model ...", "Created version ...") would
    bury the demo's own output; warnings still show. MLFLOW_LOGGING_LEVEL set by the user wins."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # task workers inherit it
    import mlflow  # noqa: F401  (configures its loggers from the environment on first import)

    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())


def demo_plan(args: argparse.Namespace, corpus_exists: bool) -> str:
    """What the demo will do and roughly how long it takes here (`s2f.demo_estimate`)."""
    from s2f.demo_estimate import estimate, plan_text

    control = not getattr(args, "no_control", False)
    seeds = getattr(args, "seeds", 1) or 1
    est = estimate(args.identities, args.clips_per_identity, corpus_exists,
                   getattr(args, "decoder_steps", None), getattr(args, "train_steps", None),
                   seeds=seeds, control_steps=getattr(args, "control_steps", None) if control
                   else 0)
    return plan_text(est, args.identities, args.clips_per_identity, corpus_exists, seeds,
                     control)


def demo_evaluation(layout: DataLayout, returned: dict[str, Any] | None) -> dict[str, Any] | None:
    """The demo's evaluation as stored: its row of the `evaluations` table (the evaluate flow's
    return value only if the row cannot be read back)."""
    from s2f.evaluation.record import read_evaluations

    if not returned:
        return None
    stored = [r for r in read_evaluations(layout)
              if r["evaluation_id"] == returned.get("evaluation_id")]
    return stored[-1] if stored else returned


def demo_seed_rows(layout: DataLayout, results: dict[str, Any]
                   ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """This run's test rows of every seed's version and of the shuffled control, as stored."""
    from s2f.evaluation.record import read_evaluations

    by_id = {r["evaluation_id"]: r for r in read_evaluations(layout)}
    seeds = [by_id[s["test_evaluation_id"]] for s in
             (results.get("evaluate") or {}).get("seeds") or [] if s["test_evaluation_id"] in by_id]
    control = (results.get("train") or {}).get("control") or {}
    return seeds, by_id.get(control.get("test_evaluation_id", ""))


def save_model_card(layout: DataLayout, row: dict[str, Any] | None) -> Path | None:
    """The model card the evaluate stage logged (`model_card.md` of the evaluation's MLflow
    run), copied to DATA_DIR/reports/model_card-<model>-v<version>.md; None if there is none."""
    import shutil
    import tempfile

    if not row or not row.get("mlflow_run_id"):
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    out = layout.root / "reports" / f"model_card-{row['model_name']}-v{row['model_version']}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = MlflowClient().download_artifacts(row["mlflow_run_id"], "model_card.md", tmp)
        except (MlflowException, OSError):
            return None
        shutil.copyfile(got, out)
    return out


def demo_places(layout: DataLayout, flow_run_id: str, row: dict[str, Any] | None,
                images: list[str], card: Path | None) -> list[tuple[str, str]]:
    """Section (g) of the report: where the outputs are and how to open the UIs."""
    places: list[tuple[str, str]] = []
    if images:
        places.append(("predicted faces", "\n".join(str(p) for p in images)))
    places.append(("Parquet tables", f"{layout.root / 'tables'}  (one directory per table: "
                   + ", ".join(t for t in ("clips", "preprocess", "faces", "face_features",
                                           "evaluations") if shard_paths(layout, t)) + ")"))
    places.append(("evaluation rows", f"python -m s2f.evaluation.record {layout.root}"))
    model_page = ""
    if row is not None and row.get("model_name"):
        model_page = f"/#/models/{row['model_name']}/versions/{row['model_version']}"
    if card is not None and row is not None:
        places.append(("model card", f"{card}\n(also the description of {row['model_name']} "
                                     f"version {row['model_version']} in the MLflow registry)"))
    places.append(("demo corpus", str(layout.demo_corpus_dir)))
    places.append(("cut audio (FLAC)", str(layout.root / "audio")))
    uri = os.environ.get("MLFLOW_TRACKING_URI") or layout.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        places.append(("MLflow UI", uri.rstrip("/") + (model_page or "/")))
    else:
        places.append(("MLflow UI", f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1"
                                    f"\nthen open http://127.0.0.1:5000{model_page or '/'}"))
    api = os.environ.get("PREFECT_API_URL", "")
    run_page = f"/runs/flow-run/{flow_run_id}"
    if api:
        places.append(("Prefect UI", api.rstrip("/").removesuffix("/api") + run_page))
    else:
        home = Path(os.environ.get("PREFECT_HOME") or layout.prefect_home)
        db = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", "")
        env = f"PREFECT_HOME={home}"
        if db and db != f"sqlite+aiosqlite:///{home}/prefect.db":
            env += f" PREFECT_SERVER_DATABASE_CONNECTION_URL={db}"
        places.append(("Prefect UI", f"{env} prefect server start --host 127.0.0.1"
                                     f"\nthen open http://127.0.0.1:4200{run_page}"))
    return places


def predict_demo_voices(layout: DataLayout, n: int = 3) -> list[Any]:
    """After the demo trained a model: a face for each of `n` test voices, with the
    just-trained (challenger) encoder and decoder, under DATA_DIR/predictions. Returns the
    `s2f.registry.predict` results."""
    from s2f.registry.names import CHALLENGER, FACE_DECODER_NAME, VOICE_ENCODER_NAME, model_uri
    from s2f.registry.predict import predict_files
    from storage.io import scan

    voices = (scan(layout, "clips").filter((pl.col("split") == "test")
                                           & (pl.col("status") == "ok"))
              .unique("youtube_id", keep="first", maintain_order=True)  # distinct voices
              .select("audio_path").head(n).collect())
    paths = [layout.resolve(p) for p in voices["audio_path"].to_list()]
    if not paths:
        print("no test voices to predict for")
        return []
    out = layout.root / "predictions"
    predictions = predict_files(paths, out, model_uri(VOICE_ENCODER_NAME, CHALLENGER),
                                model_uri(FACE_DECODER_NAME, CHALLENGER))
    print(f"\nPredicted faces for {len(paths)} test voices (challenger model) in {out}:")
    for p in predictions:
        print(f"  {p.source} -> {p.error or p.image_path}")
    print("  (each image is a statistical reconstruction, not the speaker's face)")
    return list(predictions)
