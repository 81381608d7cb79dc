"""Training seeds and the shuffled-voice control, as the pipeline's `train` and `evaluate` stages.

`train_seeds_flow` trains the voice encoder once per seed (`seeds`: the TrainConfig seed of the
first, +1 for each next; every one is registered, the last gets `challenger` for now) and, with
`shuffled_control`, one more voice encoder with `shuffle_voices=True` (the face features
permuted across training identities: no voice-face link is left to learn) on a shorter schedule
(`control_steps`). The control is not registered (it must never be promoted or served): it is
scored on dev and test right after training, in the same task, from memory, and its rows in the
`evaluations` table have kind `shuffled_control` and its training run's id.

`evaluate_seeds_flow` evaluates every seed's version on dev and test (`flows.evaluate`), picks the
version with the best DEV recall@10 at 6 s (ties: lower dev cosine distance), moves the
`challenger` alias to it (so the promotion gate sees the dev-picked seed) and tags the versions
with the choice. Test rows are reported, never compared.

    s2f demo --seeds 3          # three seeds + the shuffled control, then the gate
"""

from __future__ import annotations

import math
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from flows.evaluate import EvaluateParams, evaluate_flow
from flows.train import TrainParams, run_summary, train_flow, train_voice
from storage.layout import DataLayout
from storage.lock import stage_lock


class TrainSeedsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: TrainParams = Field(description="the voice encoder's training parameters")
    seeds: int = Field(1, ge=1, le=20, description="voice-encoder seeds to train")
    shuffled_control: bool = Field(False, description="also train the shuffled-voice control")
    control_steps: int | None = Field(None, ge=1, description="the control's training steps "
                                                              "(default: a quarter of training's)")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of the control's CIs")

    def seed_params(self, i: int) -> TrainParams:
        base = int(self.train.overrides.get("seed", 0))
        return self.train.model_copy(update={"overrides": {**self.train.overrides,
                                                           "seed": base + i}})

    def control_params(self, preset_steps: int) -> TrainParams:
        steps = self.control_steps or max(1, (self.train.steps or preset_steps) // 4)
        over = {**self.train.overrides, "shuffle_voices": True, "register_model": False,
                "run_name": "control: shuffled voices"}
        return self.train.model_copy(update={"steps": steps, "overrides": over})


class EvaluateSeedsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evaluate: EvaluateParams
    versions: list[str] | None = Field(None, description="voice-encoder versions to evaluate "
                                                         "(None: the challenger only)")


@task(name="train-shuffled-control", cache_policy=NO_CACHE)
def control_task(params: TrainSeedsParams) -> dict[str, Any]:
    """Train the shuffled-voice control and score it on dev and test (kind shuffled_control)."""
    from s2f.evaluation.run import evaluate
    from s2f.registry.inference import LoadedModel, ModelRef
    from s2f.train.config import TrainConfig

    tp = params.control_params(TrainConfig.preset_config(params.train.config).steps)
    layout = DataLayout(tp.data_dir)
    with stage_lock(layout, "train"):
        result = train_voice(tp)
    summary = run_summary(result)
    summary["steps"] = tp.steps
    run_params: dict[str, str] = {"encoder": tp.encoder, "seed": str(tp.overrides.get("seed", 0))}
    if result.run_id:
        from mlflow import MlflowClient

        run_params = dict(MlflowClient().get_run(result.run_id).data.params)
    ref = ModelRef(uri=f"runs:/{result.run_id}" if result.run_id else "control (untracked)",
                   name=None, version=None, run_id=result.run_id)
    loaded = LoadedModel(ref, result.model.eval().cpu(), run_params)
    for role in ("dev", "test"):
        row = evaluate(layout, ref.uri, None, role=role,  # type: ignore[arg-type]
                       n_boot=params.bootstrap, kind="shuffled_control", encoder=loaded)
        summary[f"{role}_evaluation_id"] = row["evaluation_id"]
        summary[f"{role}_recall_at_10_6s"] = row["metrics"].get("recall_at_10_6s")
    return summary


@flow(name="train-seeds")
def train_seeds_flow(params: TrainSeedsParams) -> dict[str, Any]:
    """One voice encoder per seed (registered), then the shuffled control (scored, unregistered).
    Returns the last seed's summary with `seeds` (each seed's) and `control` beside it."""
    logger = get_run_logger()
    runs: list[dict[str, Any]] = []
    for i in range(params.seeds):
        tp = params.seed_params(i)
        summary = train_flow.with_options(flow_run_name=f"train seed {tp.overrides['seed']}")(tp)
        summary["seed"] = tp.overrides["seed"]
        runs.append(summary)
        logger.info("seed %s: version %s", summary["seed"], summary.get("model_version"))
    out = dict(runs[-1])
    out["seeds"] = runs
    out["control"] = control_task(params) if params.shuffled_control else None
    return out


def pick_by_dev(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best dev recall@10 (6 s), ties broken by the lower dev cosine distance;
    NaN ranks last."""
    def key(r: dict[str, Any]) -> tuple[float, float]:
        rec = r["metrics"].get("recall_at_10_6s", float("nan"))
        cos = r["metrics"].get("cosine_deg_mean_6s", float("nan"))
        return (-rec if math.isfinite(rec) else math.inf, cos if math.isfinite(cos) else math.inf)

    return min(rows, key=key)


@flow(name="evaluate-seeds")
def evaluate_seeds_flow(params: EvaluateSeedsParams) -> dict[str, Any]:
    """Evaluate each seed's version on dev and test, hand the dev-best one to the gate as the
    challenger. Returns the picked version's test row with `seeds` (each version's dev and test
    evaluation) and `picked_by` beside it."""
    from mlflow import MlflowClient

    from s2f.registry.names import CHALLENGER, VOICE_ENCODER_NAME

    if not params.versions:
        return evaluate_flow(params.evaluate)
    rows = []
    for version in params.versions:
        ep = params.evaluate.model_copy(
            update={"model_uri": f"models:/{VOICE_ENCODER_NAME}/{version}"})
        rows.append(evaluate_flow.with_options(flow_run_name=f"evaluate v{version}")(ep))
    devs = [r.get("dev_row") for r in rows]
    if any(d is None for d in devs):  # no dev split: nothing to pick by, and never by test
        picked = rows[-1]
        reason = (f"v{picked['model_version']}: the last seed's version (no dev split to pick "
                  "by; test is never used to choose)")
        devs = []
    else:
        best = pick_by_dev(devs)  # type: ignore[arg-type]
        picked = next(r for r in rows if r["model_version"] == best["model_version"])
        reason = (f"v{best['model_version']} has the best dev recall@10 (6 s) of "
                  f"{len(rows)} seed(s): " + ", ".join(
                      f"v{d['model_version']} {d['metrics'].get('recall_at_10_6s', math.nan):.3f}"
                      for d in devs if d is not None))
    client = MlflowClient()
    client.set_registered_model_alias(VOICE_ENCODER_NAME, CHALLENGER, picked["model_version"])
    for r in rows:
        client.set_model_version_tag(VOICE_ENCODER_NAME, r["model_version"], "seed_selection",
                                     reason)
    get_run_logger().info("challenger: %s", reason)
    out = dict(picked)
    out["picked_by"] = reason
    out["seeds"] = [{"model_version": r["model_version"], "seed": r.get("seed"),
                     "dev_evaluation_id": (r.get("dev_row") or {}).get("evaluation_id"),
                     "test_evaluation_id": r["evaluation_id"]} for r in rows]
    return out
