"""`s2f demo`: the demo corpus, the whole pipeline on it, a few predicted faces and the report.

    s2f demo --data-dir s2f-data [--identities 400] [--seeds 3] [--no-control]

Builds the demo corpus under DATA_DIR/demo_corpus once (`s2f.corpus`), runs
`flows.pipeline.pipeline_flow` on its person-disjoint manifests, predicts faces for three test
voices with the challenger, and prints the report (`s2f.release.report`): the paper's tables from
the `evaluations` rows, every seed and the shuffled-voice control, the gate's decision, and where
the images, tables, model card and the MLflow and Prefect UIs are (also saved under
DATA_DIR/reports).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl

from flows.params import DEMO_TRAIN_OVERRIDES, DemoParams, PipelineParams, RunnerParams
from flows.pipeline import pipeline_flow
from flows.summaries import EvaluateSummary, PipelineSummary, TrainSeedsSummary
from storage.io import shard_paths
from storage.layout import DataLayout


def run_demo_from_cli(params: DemoParams) -> int:
    """`s2f demo`: build the demo corpus (once) under the data directory, run the pipeline on
    it, predict faces for a few test voices and print the report (`s2f.release.report`).
    0 when the pipeline finished (whatever the gate decided), 1 when a stage failed."""
    from s2f.release.report import demo_report, places_report
    from storage.status import status_counts

    # Model loads would draw a progress bar per artifact between the report's lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_mlflow_logs()
    layout = DataLayout(params.data_dir)
    state = pipeline_flow(demo_pipeline_params(params, layout), return_state=True)
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
    summary: PipelineSummary = state.result()
    results = summary.results
    images = [p.image_path for p in predict_demo_voices(layout, n=3)
              if p.error is None and p.image_path] if "train" in results else []
    evaluated = results.get("evaluate")
    evaluated = evaluated if isinstance(evaluated, EvaluateSummary) else None
    from s2f.evaluation.record import read_evaluations

    stored = {r["evaluation_id"]: r for r in read_evaluations(layout)}
    row = demo_evaluation(stored, evaluated)
    card = save_model_card(layout, row)
    seed_rows, control_row = demo_seed_rows(stored, summary)
    promoted = results.get("promote")
    report = demo_report(row, promoted.model_dump() if promoted else None,
                         demo_places(layout, flow_run_id, row, images, card),
                         seeds=seed_rows, control=control_row,
                         picked_by=evaluated.picked_by if evaluated else None)
    print("\n" + report)
    if row is not None:
        saved = layout.root / "reports" / f"demo-report-{row['evaluation_id']}.txt"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(report)
        print(f"(this report is also in {saved})")
    return 0


def demo_pipeline_params(params: DemoParams, layout: DataLayout) -> PipelineParams:
    """Say what the demo will do, build the corpus if it is not there, and the pipeline's
    parameters on it."""
    from s2f.corpus.build import CorpusConfig, build_demo_corpus, corpus_is_complete

    corpus_dir = layout.demo_corpus_dir
    config = CorpusConfig(out=corpus_dir, identities=params.identities,
                          clips_per_identity=params.clips_per_identity, seed=params.seed)
    exists = corpus_is_complete(config)
    print(demo_plan(params, exists), flush=True)
    if exists:
        print(f"demo corpus: reusing {corpus_dir}")
    else:
        print(f"demo corpus: building {params.identities} identities × "
              f"{params.clips_per_identity} clips in {corpus_dir}")
        print(build_demo_corpus(config).describe())
    return PipelineParams(
        data_dir=layout.root,
        # the corpus's person-disjoint splits (an old corpus has no dev manifest: dev is then
        # carved from train by identity)
        manifests=[corpus_dir / f"avspeech_{split}.csv" for split in ("train", "dev", "test")
                   if (corpus_dir / f"avspeech_{split}.csv").exists()],
        media_root=corpus_dir / "media",
        runner=RunnerParams(),  # S2F_TASK_RUNNER / S2F_DASK_ADDRESS may pick Dask
        decoder_steps=params.decoder_steps, train_steps=params.train_steps,
        margin=params.margin, min_diversity=params.min_diversity, seeds=params.seeds,
        shuffled_control=params.shuffled_control, control_steps=params.control_steps,
        train_overrides=dict(DEMO_TRAIN_OVERRIDES))


def quiet_mlflow_logs() -> None:
    """MLflow's INFO lines ("Successfully registered model ...", "Created version ...") would
    bury the demo's own output; warnings still show. MLFLOW_LOGGING_LEVEL set by the user wins."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # task workers inherit it
    import mlflow  # noqa: F401  (configures its loggers from the environment on first import)

    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())


def demo_plan(params: DemoParams, corpus_exists: bool) -> str:
    """What the demo will do and roughly how long it takes here (`s2f.demo_estimate`)."""
    from s2f.demo_estimate import estimate, plan_text

    control = params.shuffled_control
    est = estimate(params.identities, params.clips_per_identity, corpus_exists,
                   params.decoder_steps, params.train_steps, seeds=params.seeds,
                   control_steps=params.control_steps if control else 0)
    return plan_text(est, params.identities, params.clips_per_identity, corpus_exists,
                     params.seeds, control)


def demo_evaluation(by_id: dict[str, dict[str, Any]], returned: EvaluateSummary | None
                    ) -> dict[str, Any] | None:
    """The demo's evaluation as stored: its row of the `evaluations` table (`by_id`: the rows
    by evaluation id; the evaluate flow's row only if it cannot be read back)."""
    if returned is None:
        return None
    return by_id.get(returned.evaluation_id, returned.row)


def demo_seed_rows(by_id: dict[str, dict[str, Any]], summary: PipelineSummary
                   ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """This run's test rows of every seed's version and of the shuffled control, as stored
    (`by_id`: the `evaluations` rows by evaluation id)."""
    evaluated, trained = summary.results.get("evaluate"), summary.results.get("train")
    seeds = [by_id[s.test_evaluation_id] for s in
             (evaluated.seeds if isinstance(evaluated, EvaluateSummary) else [])
             if s.test_evaluation_id in by_id]
    control = trained.control if isinstance(trained, TrainSeedsSummary) else None
    return seeds, by_id.get(control.test_evaluation_id or "") if control else None


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
    from s2f.media.packs import as_file
    from s2f.registry.names import CHALLENGER, FACE_DECODER_NAME, VOICE_ENCODER_NAME, model_uri
    from s2f.registry.predict import predict_files
    from storage.io import scan

    voices = (scan(layout, "clips").filter((pl.col("split") == "test")
                                           & (pl.col("status") == "ok"))
              .unique("youtube_id", keep="first", maintain_order=True)  # distinct voices
              .select("clip_key", "audio_path").head(n).collect())
    out = layout.root / "predictions"
    paths = [as_file(layout.resolve(p), out / "voices", key)  # pack members: copied out
             for key, p in voices.iter_rows()]
    if not paths:
        print("no test voices to predict for")
        return []
    predictions = predict_files(paths, out, model_uri(VOICE_ENCODER_NAME, CHALLENGER),
                                model_uri(FACE_DECODER_NAME, CHALLENGER))
    print(f"\nPredicted faces for {len(paths)} test voices (challenger model) in {out}:")
    for p in predictions:
        print(f"  {p.source} -> {p.error or p.image_path}")
    print("  (each image is a statistical reconstruction, not the speaker's face)")
    return list(predictions)
