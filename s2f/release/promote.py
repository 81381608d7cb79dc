"""The promotion gate: move the `champion` alias to the `challenger` only when it is better.

Both versions are compared on the same DEV split with the same metrics, taken from their dev
rows of the `evaluations` table (on the current dev snapshot; evaluated on dev first when
missing). The test split never feeds the decision: test rows are scored once per version for the
report and the model card, and the gate does not read them (a test changes only the test rows
and checks the decision stays the same). Rules, in order:

1. Different dev snapshots (only possible with `evaluate_missing=False`, using older rows) are
   refused unless `allow_different_data`, and then the reasons say so.
2. Diversity floor: a challenger whose predictions spread less than `min_diversity` × the
   spread of the true features (`diversity_6s`) is refused as collapsed, whatever its
   distances: a model that predicts the mean face for everyone has good L1 and no use.
3. No champion yet: the challenger becomes champion.
4. Otherwise it must beat the champion's dev recall@10 (6 s input) by more than `margin` and
   not lose on dev mean feature cosine distance.

Promotion moves the voice encoder's `champion` alias and the face decoder's (the decoder the
challenger was evaluated with: encoder and decoder are a pair, the encoder's loss uses the
decoder's first layer). Every decision is written to the challenger's model-version tags
(`promotion_decision`, `promotion_reasons`, `promotion_snapshot`, `promotion_run_id`) and to a
run of the MLflow experiment `speech2face-promotion` (decision.json).

    python -m s2f.release.promote DATA_DIR [--margin 0.0] [--min-diversity 0.2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from s2f.evaluation.data import DEFAULT_DEV_FRACTION, current_split_snapshot_id
from s2f.evaluation.metrics import DEFAULT_BOOTSTRAP
from s2f.evaluation.record import latest_evaluation, use_experiment
from s2f.registry.inference import DEFAULT_FACE_ENCODER, ModelResolutionError
from s2f.registry.names import (
    CHALLENGER,
    CHAMPION,
    FACE_DECODER_NAME,
    VOICE_ENCODER_NAME,
    model_uri,
)
from s2f.release import DEFAULT_MIN_DIVERSITY
from storage.layout import DataLayout

EXPERIMENT = "speech2face-promotion"
GATE_RECALL = "recall_at_10_6s"
GATE_COSINE = "cosine_deg_mean_6s"
GATE_DIVERSITY = "diversity_6s"

Decision = Literal["promoted", "rejected", "unchanged"]


@dataclass
class PromotionResult:
    decision: Decision
    model_name: str
    challenger_version: str
    champion_version: str | None           # before the decision
    reasons: list[str]
    challenger_evaluation: str | None      # evaluation ids
    champion_evaluation: str | None
    different_data: bool = False
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        champ = f"v{self.champion_version}" if self.champion_version else "none"
        lines = [f"{self.model_name}: challenger v{self.challenger_version} vs champion {champ}: "
                 f"{self.decision.upper()}"]
        return "\n".join(lines + [f"  - {r}" for r in self.reasons])


def _alias_version(name: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _training_params(name: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    return dict(client.get_run(run_id).data.params) if run_id else {}


def _evaluation(layout: DataLayout, name: str, version: str, snapshot: str,
                evaluate_missing: bool, decoder_uri: str | None, n_boot: int
                ) -> dict[str, Any] | None:
    """The version's dev row on `snapshot` (dev only: the gate never reads test)."""
    row = latest_evaluation(layout, name, version, snapshot, role="dev")
    if row is not None:
        return row
    if evaluate_missing:
        from s2f.evaluation.data import EmptySplitError
        from s2f.evaluation.run import evaluate_model

        try:
            evaluate_model(layout, f"models:/{name}/{version}", decoder_uri, n_boot=n_boot,
                           role="dev")
        except EmptySplitError:
            return None  # no dev split: the gate refuses to decide (its reason says so)
        return latest_evaluation(layout, name, version, snapshot, role="dev")
    # any dev snapshot; checked by the caller
    return latest_evaluation(layout, name, version, role="dev")


def _value(row: dict[str, Any], key: str) -> float:
    v = row.get(key)
    return float("nan") if v is None else float(v)


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, margin: float,
           min_diversity: float, allow_different_data: bool
           ) -> tuple[Decision, list[str], bool]:
    """The gate's rules on two evaluation rows (pure; `promote` does the bookkeeping)."""
    for row in (challenger, champion):  # a guard: the gate is built on dev rows only
        if row is not None and row.get("role", "dev") != "dev":
            raise ValueError(f"evaluation {row.get('evaluation_id')} is a {row['role']} row: the "
                             "promotion gate reads dev rows only")
    reasons: list[str] = []
    different = bool(champion) and champion["split_snapshot_id"] != challenger["split_snapshot_id"]
    if different:
        assert champion is not None
        msg = (f"dev evaluations are on different dev snapshots (challenger "
               f"{challenger['split_snapshot_id']}, champion {champion['split_snapshot_id']})")
        if not allow_different_data:
            return "rejected", [msg + ": refused; re-evaluate both on the same data or pass "
                                "--allow-different-data"], True
        reasons.append(msg + ": compared anyway (--allow-different-data)")
    div = _value(challenger, GATE_DIVERSITY)
    spread_pred = challenger["metrics"].get("spread_pred_deg_6s", float("nan"))
    spread_true = challenger["metrics"].get("spread_true_deg", float("nan"))
    if not (div >= min_diversity):  # NaN fails too
        return "rejected", reasons + [
            f"diversity {div:.3f} is below the floor {min_diversity:g}: its predictions spread "
            f"{spread_pred:.2f} deg around their mean against {spread_true:.2f} deg for the true "
            f"faces, i.e. it predicts nearly the same face for every voice (collapsed)"], different
    reasons.append(f"dev diversity {div:.3f} >= floor {min_diversity:g}")
    if champion is None:
        return "promoted", reasons + ["no champion yet: the first model that passes the "
                                      "diversity floor becomes champion"], different
    if str(champion["model_version"]) == str(challenger["model_version"]):
        return "unchanged", reasons + ["the challenger is already the champion"], different
    r_new, r_old = _value(challenger, GATE_RECALL), _value(champion, GATE_RECALL)
    c_new, c_old = _value(challenger, GATE_COSINE), _value(champion, GATE_COSINE)
    if math.isnan(r_new) or math.isnan(r_old):
        return "rejected", reasons + ["recall@10 is not available (retrieval pool of 10 or "
                                      "fewer identities)"], different
    if not r_new - r_old > margin:
        return "rejected", reasons + [
            f"dev recall@10 {r_new:.4f} vs champion {r_old:.4f}: not better by more than the "
            f"margin {margin:g}"], different
    reasons.append(f"dev recall@10 {r_new:.4f} vs champion {r_old:.4f} (+{r_new - r_old:.4f} > "
                   f"margin {margin:g})")
    if c_new > c_old:
        return "rejected", reasons + [
            f"dev mean cosine distance {c_new:.2f} deg is worse than the champion's "
            f"{c_old:.2f} deg"], different
    reasons.append(f"dev mean cosine distance {c_new:.2f} deg <= champion's {c_old:.2f} deg")
    return "promoted", reasons, different


def promote(layout: DataLayout, model_name: str = VOICE_ENCODER_NAME, margin: float = 0.0,
            min_diversity: float = DEFAULT_MIN_DIVERSITY, allow_different_data: bool = False,
            evaluate_missing: bool = True, decoder_uri: str | None = None,
            n_boot: int = DEFAULT_BOOTSTRAP) -> PromotionResult:
    """Run the gate on `model_name@challenger` vs `@champion`; moves the aliases if it passes.
    `decoder_uri` (for evaluations it has to run) defaults to the decoder's challenger."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    challenger_v = _alias_version(model_name, CHALLENGER)
    if challenger_v is None:
        raise ModelResolutionError(f"{model_name} has no '{CHALLENGER}' alias: nothing to promote")
    champion_v = _alias_version(model_name, CHAMPION)
    decoder_uri = decoder_uri or model_uri(FACE_DECODER_NAME, CHALLENGER)
    params = _training_params(model_name, challenger_v)
    snapshot = current_split_snapshot_id(layout, params.get("encoder", DEFAULT_FACE_ENCODER), "dev",
                                   float(params.get("dev_fraction", DEFAULT_DEV_FRACTION)))
    ch_row = _evaluation(layout, model_name, challenger_v, snapshot, evaluate_missing,
                         decoder_uri, n_boot)
    cp_row = None if champion_v is None else _evaluation(
        layout, model_name, champion_v, snapshot, evaluate_missing, decoder_uri, n_boot)

    if ch_row is None or (champion_v is not None and cp_row is None):
        who = "challenger" if ch_row is None else "champion"
        decision: Decision = "rejected"
        reasons = [f"no dev evaluation of the {who} on dev snapshot {snapshot}: run `s2f "
                   f"evaluate`" if not evaluate_missing else
                   f"the {who} could not be evaluated on dev snapshot {snapshot} (no dev "
                   f"clips, or its face features come from another face encoder?)"]
        different = False
    else:
        decision, reasons, different = decide(ch_row, cp_row, margin, min_diversity,
                                              allow_different_data)
    result = PromotionResult(
        decision=decision, model_name=model_name, challenger_version=challenger_v,
        champion_version=champion_v, reasons=reasons,
        challenger_evaluation=ch_row["evaluation_id"] if ch_row else None,
        champion_evaluation=cp_row["evaluation_id"] if cp_row else None,
        different_data=different)
    for prefix, row in (("challenger", ch_row), ("champion", cp_row)):
        for key in (GATE_RECALL, GATE_COSINE, GATE_DIVERSITY):
            if row is not None and row.get(key) is not None and math.isfinite(row[key]):
                result.metrics[f"{prefix}_{key}"] = float(row[key])

    use_experiment(EXPERIMENT, layout.mlflow_artifacts)
    with mlflow.start_run(run_name=f"promote {model_name} v{challenger_v}") as run:
        result.run_id = run.info.run_id
        mlflow.log_params({"model_name": model_name, "challenger_version": challenger_v,
                           "champion_version": champion_v or "", "margin": margin,
                           "min_diversity": min_diversity,
                           "allow_different_data": allow_different_data,
                           "dev_snapshot_id": snapshot, "split_read": "dev"})
        mlflow.log_metrics(result.metrics)
        mlflow.set_tags({"promotion_decision": decision, "promotion_reasons": "; ".join(reasons),
                         "different_data": str(different).lower()})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "decision.json"
            path.write_text(json.dumps(asdict(result), indent=2))
            mlflow.log_artifact(str(path))

    tags = {"promotion_decision": decision, "promotion_reasons": "; ".join(reasons),
            "promotion_snapshot": snapshot, "promotion_run_id": result.run_id}
    for k, v in tags.items():
        client.set_model_version_tag(model_name, challenger_v, k, v)
    if decision == "promoted":
        client.set_registered_model_alias(model_name, CHAMPION, challenger_v)
        if champion_v is not None:
            client.set_model_version_tag(model_name, champion_v, "replaced_by", challenger_v)
        assert ch_row is not None
        if ch_row.get("decoder_name") and ch_row.get("decoder_version"):
            client.set_registered_model_alias(ch_row["decoder_name"], CHAMPION,
                                              ch_row["decoder_version"])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s2f.release.promote")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--min-diversity", type=float, default=DEFAULT_MIN_DIVERSITY)
    args = p.parse_args(argv)
    layout = DataLayout(args.data_dir)
    os.environ.setdefault("MLFLOW_TRACKING_URI", layout.mlflow_tracking_uri)
    result = promote(layout, margin=args.margin, min_diversity=args.min_diversity)
    print(result.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
