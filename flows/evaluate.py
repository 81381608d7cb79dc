"""Prefect flows for evaluation and promotion, and the handlers of `s2f evaluate`, `s2f promote`
and `s2f predict`.

    s2f evaluate --data-dir DIR [--model-uri models:/speech2face-voice-encoder@challenger]
    s2f promote  --data-dir DIR [--margin 0.0] [--min-diversity 0.2] [--allow-different-data]
    s2f predict  AUDIO... --out DIR [--data-dir DIR] [--model-uri ...@champion]

`evaluate_flow` scores a registered voice encoder on the dev split (what the promotion gate
reads) and on the test split (once per version: a version with a test row gets it read back, not
rescored; test is for the report and the card only) (s2f.evaluation), writes the `evaluations`
rows and MLflow runs, and publishes the model card to the registry. `promote_flow` runs the
promotion gate (s2f.release.promote) on dev rows. `s2f predict` is plain inference, without
Prefect: one command from a voice file to a labelled face (s2f.registry.predict).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

# Light imports only at module level: `prefect deploy` imports this file.
from s2f.registry.names import CHALLENGER, FACE_DECODER_NAME, VOICE_ENCODER_NAME, model_uri

DEFAULT_MODEL_URI = model_uri(VOICE_ENCODER_NAME, CHALLENGER)
DEFAULT_DECODER_URI = model_uri(FACE_DECODER_NAME, CHALLENGER)

HEADLINE = ("recall_at_1_6s", "recall_at_10_6s", "mean_face_recall_at_10", "chance_at_10",
            "cosine_deg_mean_6s", "cosine_deg_mean_3s", "mean_face_cosine_deg_mean",
            "diversity_6s", "recon_image_diversity")


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(description="the pipeline's data directory")
    model_uri: str = Field(DEFAULT_MODEL_URI, description="voice encoder to evaluate")
    decoder_uri: str | None = Field(DEFAULT_DECODER_URI,
                                    description="face decoder; None skips reconstructions")
    identities: Path | None = Field(None, description="identities.parquet (default: the demo "
                                                      "corpus's, if present)")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples for the CIs")
    model_card: bool = Field(True, description="publish the model card to the registry")
    roles: list[Literal["dev", "test"]] = Field(
        default_factory=lambda: ["dev", "test"], min_length=1,
        description="splits to score: dev (for the gate), test (once per version, reported)")


class PromoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    margin: float = Field(0.0, ge=0.0, description="recall@10 gain needed over the champion")
    min_diversity: float = Field(0.2, ge=0.0, description="floor on prediction spread / true")
    allow_different_data: bool = Field(False, description="compare across test snapshots")
    evaluate_missing: bool = Field(True, description="evaluate versions without a row")
    decoder_uri: str | None = Field(None, description="decoder for missing evaluations")
    bootstrap: int = Field(1000, ge=10)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_task(params: EvaluateParams, role: str = "test") -> dict[str, Any]:
    """One split's row; for test, the version's existing test row when it has one."""
    from s2f.evaluation.run import evaluate
    from storage.layout import DataLayout

    return evaluate(DataLayout(params.data_dir), params.model_uri, params.decoder_uri,
                    role=role, identities_path=params.identities,  # type: ignore[arg-type]
                    n_boot=params.bootstrap)


@task(name="publish-model-card", cache_policy=NO_CACHE)
def model_card_task(data_dir: Path, row: dict[str, Any]) -> str:
    from s2f.release.model_card import publish_model_card
    from storage.layout import DataLayout

    return publish_model_card(DataLayout(data_dir), row)


@flow(name="evaluate")
def evaluate_flow(params: EvaluateParams) -> dict[str, Any]:
    """Evaluate one voice encoder on dev and test; returns the last role's `evaluations` row
    (metrics as a dict; the test row by default), with the dev row under `dev_row`."""
    from s2f.evaluation.data import EmptySplitError

    logger = get_run_logger()
    rows: dict[str, dict[str, Any]] = {}
    for role in params.roles:
        try:
            rows[role] = evaluate_task(params, role)
        except EmptySplitError as exc:
            if role == params.roles[-1]:
                raise
            # No dev identities (a tiny corpus): the gate will say it cannot decide.
            logger.warning("no %s row: %s", role, exc)
    row = dict(rows[params.roles[-1]])
    if "dev" in rows and params.roles[-1] != "dev":
        row["dev_row"] = rows["dev"]
    m = row["metrics"]
    create_table_artifact([{"metric": k, "value": float(m[k])} for k in HEADLINE if k in m],
                          key="evaluation-headline",
                          description=f"{row['model_name']} v{row['model_version']} on "
                                      f"{row['role']} snapshot {row['split_snapshot_id']}"
                                      + (" (read back: test is scored once)"
                                         if row.get("reused") else ""))
    if params.model_card and row.get("model_name"):
        card = model_card_task(params.data_dir, row)
        create_markdown_artifact(card, key="model-card", description="model card")
    logger.info("evaluation %s: %s", row["evaluation_id"],
                {k: round(m[k], 4) for k in HEADLINE if k in m})
    return row


@task(name="promotion-gate", cache_policy=NO_CACHE)
def promote_task(params: PromoteParams) -> dict[str, Any]:
    from dataclasses import asdict

    from s2f.release.promote import promote
    from storage.layout import DataLayout

    result = promote(DataLayout(params.data_dir), margin=params.margin,
                     min_diversity=params.min_diversity,
                     allow_different_data=params.allow_different_data,
                     evaluate_missing=params.evaluate_missing, decoder_uri=params.decoder_uri,
                     n_boot=params.bootstrap)
    return asdict(result)


@flow(name="promote")
def promote_flow(params: PromoteParams) -> dict[str, Any]:
    """Challenger vs champion; returns the decision with its reasons."""
    decision = promote_task(params)
    create_table_artifact([{"reason": r} for r in decision["reasons"]], key="promotion-reasons",
                          description=f"challenger v{decision['challenger_version']}: "
                                      f"{decision['decision']}")
    get_run_logger().info("promotion: %s %s", decision["decision"], decision["reasons"])
    return decision


def run_evaluate_from_cli(args: argparse.Namespace) -> int:
    """`s2f evaluate`: 0 on success, 2 when the data or the models cannot be evaluated."""
    from s2f.evaluation.data import EvaluationDataError
    from s2f.registry.inference import ModelResolutionError

    params = EvaluateParams(data_dir=args.data_dir, model_uri=args.model_uri,
                            decoder_uri=None if args.no_decoder else args.decoder_uri,
                            identities=args.identities, bootstrap=args.bootstrap)
    try:
        row = evaluate_flow(params)
    except (EvaluationDataError, ModelResolutionError) as exc:
        print(f"s2f evaluate: {exc}", file=sys.stderr)
        return 2
    if row.get("dev_row"):
        dev = row["dev_row"]
        print(f"{dev['model_name']} v{dev['model_version']} on dev snapshot "
              f"{dev['split_snapshot_id']} ({dev['n_clips']} clips): recall_at_10_6s "
              f"{dev['metrics'].get('recall_at_10_6s', float('nan')):.4f} (the gate reads dev)")
    reused = " (its one test row, read back)" if row.get("reused") else ""
    print(f"{row['model_name']} v{row['model_version']} on test snapshot "
          f"{row['split_snapshot_id']} ({row['n_clips']} clips, {row['n_identities']} "
          f"identities){reused}")
    for k in HEADLINE:
        if k in row["metrics"]:
            print(f"  {k:<28} {row['metrics'][k]:.4f}")
    print(f"MLflow run {row['mlflow_run_id']}; row in {Path(args.data_dir) / 'tables/evaluations'}")
    return 0


def run_promote_from_cli(args: argparse.Namespace) -> int:
    """`s2f promote`: 0 promoted or unchanged, 1 rejected (reasons printed), 2 nothing to do."""
    from s2f.evaluation.data import EvaluationDataError
    from s2f.registry.inference import ModelResolutionError

    params = PromoteParams(data_dir=args.data_dir, margin=args.margin,
                           min_diversity=args.min_diversity,
                           allow_different_data=args.allow_different_data,
                           evaluate_missing=not args.no_evaluate, decoder_uri=args.decoder_uri,
                           bootstrap=args.bootstrap)
    try:
        d = promote_flow(params)
    except (EvaluationDataError, ModelResolutionError) as exc:
        print(f"s2f promote: {exc}", file=sys.stderr)
        return 2
    champ = f"v{d['champion_version']}" if d["champion_version"] else "none"
    print(f"{d['model_name']}: challenger v{d['challenger_version']} vs champion {champ}: "
          f"{d['decision'].upper()}")
    for r in d["reasons"]:
        print(f"  - {r}")
    return 1 if d["decision"] == "rejected" else 0


def run_predict_from_cli(args: argparse.Namespace) -> int:
    """`s2f predict`: 0 when every file gave a face, 1 when some could not (reasons printed),
    2 when the models cannot be loaded."""
    from s2f.registry.inference import ModelResolutionError
    from s2f.registry.predict import predict_files

    try:
        results = predict_files(list(args.audio), args.out, args.model_uri, args.decoder_uri,
                                seconds=args.seconds)
    except ModelResolutionError as exc:
        print(f"s2f predict: {exc}", file=sys.stderr)
        return 2
    for r in results:
        if r.error:
            print(f"s2f predict: {r.error}", file=sys.stderr)
        else:
            print(f"{r.source} -> {r.image_path} (+ .npy feature, .json sidecar)")
    print("note: each image is a statistical reconstruction, not the speaker's face")
    return 1 if any(r.error for r in results) else 0
