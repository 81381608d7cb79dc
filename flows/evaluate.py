"""Prefect flows `evaluate` and `evaluate-seeds`, and the handler of `s2f evaluate`.

    s2f evaluate --data-dir DIR [--model-uri models:/speech2face-voice-encoder@challenger]

`evaluate_flow` scores a registered voice encoder on the dev split (what the promotion gate
reads) and on the test split (once per version: a version with a test row gets it read back, not
rescored; test is for the report and the card only) (s2f.evaluation), writes the `evaluations`
rows and MLflow runs, and publishes the model card to the registry.

`evaluate_seeds_flow` (the pipeline's `evaluate` stage) evaluates every seed's version that the
`train` stage registered (`flows.train.train_seeds_flow`) on dev and test, picks the version
with the best DEV recall@10 at 6 s (ties: lower dev cosine distance), moves the `challenger`
alias to it (so the promotion gate sees the dev-picked seed) and tags the versions with the
choice. Test rows are reported, never compared.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

# Light imports only at module level: `prefect deploy` imports this file.
from flows.guards import flow_guard
from flows.params import EvaluateParams, EvaluateSeedsParams
from flows.summaries import EvaluateSummary, SeedEvaluation

T = TypeVar("T")


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_task(params: EvaluateParams, role: str = "test") -> dict[str, Any]:
    """One split's row; for test, the version's existing test row when it has one."""
    from s2f.evaluation.run import evaluate
    from storage.layout import DataLayout

    return evaluate(DataLayout(params.data_dir), params.model_uri, params.decoder_uri,
                    role=role, identities_path=params.identities,  # type: ignore[arg-type]
                    n_boot=params.bootstrap, device=params.device)


@task(name="publish-model-card", cache_policy=NO_CACHE)
def model_card_task(data_dir: Path, row: dict[str, Any]) -> str:
    from s2f.release.model_card import publish_model_card
    from storage.layout import DataLayout

    return publish_model_card(DataLayout(data_dir), row)


@flow(name="evaluate", **flow_guard("evaluate"))
def evaluate_flow(params: EvaluateParams) -> EvaluateSummary:
    """Evaluate one voice encoder on dev and test; returns the last role's `evaluations` row
    (metrics as a dict; the test row by default), with the dev row beside it."""
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
    row = rows[params.roles[-1]]
    summary = EvaluateSummary.of(row, rows.get("dev") if params.roles[-1] != "dev" else None)
    create_table_artifact([{"metric": k, "value": v} for k, v in summary.headline.items()],
                          key="evaluation-headline",
                          description=f"{row['model_name']} v{row['model_version']} on "
                                      f"{row['role']} snapshot {row['split_snapshot_id']}"
                                      + (" (read back: test is scored once)"
                                         if row.get("reused") else ""))
    if params.model_card and row.get("model_name"):
        card = model_card_task(params.data_dir, row)
        create_markdown_artifact(card, key="model-card", description="model card")
    logger.info("evaluation %s: %s", row["evaluation_id"],
                {k: round(v, 4) for k, v in summary.headline.items()})
    return summary


def pick_by_dev(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best dev recall@10 (6 s), ties broken by the lower dev cosine distance;
    NaN ranks last."""
    def key(r: dict[str, Any]) -> tuple[float, float]:
        rec = r["metrics"].get("recall_at_10_6s", float("nan"))
        cos = r["metrics"].get("cosine_deg_mean_6s", float("nan"))
        return (-rec if math.isfinite(rec) else math.inf, cos if math.isfinite(cos) else math.inf)

    return min(rows, key=key)


def _choice(summaries: list[EvaluateSummary]) -> tuple[EvaluateSummary, str]:
    """The dev-best version and why; the last seed's when there is no dev split (never test)."""
    devs = [s.dev_row for s in summaries]
    if any(d is None for d in devs):
        picked = summaries[-1]
        return picked, (f"v{picked.row['model_version']}: the last seed's version (no dev split "
                        "to pick by; test is never used to choose)")
    best = pick_by_dev(devs)  # type: ignore[arg-type]
    picked = next(s for s in summaries if s.row["model_version"] == best["model_version"])
    return picked, (f"v{best['model_version']} has the best dev recall@10 (6 s) of "
                    f"{len(summaries)} seed(s): " + ", ".join(
                        f"v{d['model_version']} {d['metrics'].get('recall_at_10_6s', math.nan):.3f}"
                        for d in devs if d is not None))


@flow(name="evaluate-seeds", **flow_guard("evaluate-seeds"))
def evaluate_seeds_flow(params: EvaluateSeedsParams) -> EvaluateSummary:
    """Evaluate each seed's version on dev and test, hand the dev-best one to the gate as the
    challenger. Returns the picked version's summary with `seeds` (each version's dev and test
    evaluation) and `picked_by` set."""
    from mlflow import MlflowClient

    from s2f.registry.names import CHALLENGER, VOICE_ENCODER_NAME

    if not params.versions:
        return evaluate_flow(params.evaluate)
    summaries = []
    for version in params.versions:
        ep = params.evaluate.model_copy(
            update={"model_uri": f"models:/{VOICE_ENCODER_NAME}/{version}"})
        summaries.append(evaluate_flow.with_options(flow_run_name=f"evaluate v{version}")(ep))
    picked, reason = _choice(summaries)
    client = MlflowClient()
    client.set_registered_model_alias(VOICE_ENCODER_NAME, CHALLENGER, picked.row["model_version"])
    for s in summaries:
        client.set_model_version_tag(VOICE_ENCODER_NAME, s.row["model_version"], "seed_selection",
                                     reason)
    get_run_logger().info("challenger: %s", reason)
    seeds = [SeedEvaluation(model_version=s.row["model_version"], seed=s.row.get("seed"),
                            dev_evaluation_id=(s.dev_row or {}).get("evaluation_id"),
                            test_evaluation_id=s.evaluation_id) for s in summaries]
    return picked.model_copy(update={"picked_by": reason, "seeds": seeds})


def explaining_data_errors(command: str, run: Callable[[], T]) -> T | None:
    """`run()`, or None after saying why the data or the models cannot be evaluated (the
    commands then exit 2)."""
    from s2f.devices import DeviceError
    from s2f.evaluation.data import EvaluationDataError
    from s2f.registry.inference import ModelResolutionError

    try:
        return run()
    except (EvaluationDataError, ModelResolutionError, DeviceError) as exc:
        print(f"s2f {command}: {exc}", file=sys.stderr)
        return None


def run_evaluate_from_cli(params: EvaluateParams) -> int:
    """`s2f evaluate`: 0 on success, 2 when the data or the models cannot be evaluated."""
    summary = explaining_data_errors("evaluate", lambda: evaluate_flow(params))
    if summary is None:
        return 2
    if summary.dev_row:
        dev = summary.dev_row
        print(f"{dev['model_name']} v{dev['model_version']} on dev snapshot "
              f"{dev['split_snapshot_id']} ({dev['n_clips']} clips): recall_at_10_6s "
              f"{dev['metrics'].get('recall_at_10_6s', float('nan')):.4f} (the gate reads dev)")
    row = summary.row
    reused = " (its one test row, read back)" if row.get("reused") else ""
    print(f"{row['model_name']} v{row['model_version']} on test snapshot "
          f"{row['split_snapshot_id']} ({row['n_clips']} clips, {row['n_identities']} "
          f"identities){reused}")
    for k, v in summary.headline.items():
        print(f"  {k:<28} {v:.4f}")
    print(f"MLflow run {row['mlflow_run_id']}; row in {params.data_dir / 'tables/evaluations'}")
    return 0
