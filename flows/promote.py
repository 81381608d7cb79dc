"""Prefect flow `promote` and the handler of `s2f promote`: the promotion gate
(`s2f.release.promote`) on dev rows.

    s2f promote --data-dir DIR [--margin 0.0] [--min-diversity 0.2] [--allow-different-data]

or from Python (after `flows.runtime.configure(data_dir)`):

    from flows.promote import PromoteParams, promote_flow
    summary = promote_flow(PromoteParams(data_dir=...))   # PromoteSummary: decision, reasons
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.evaluate import explaining_data_errors
from flows.guards import flow_guard
from flows.params import PromoteParams
from flows.summaries import PromoteSummary


@task(name="promotion-gate", cache_policy=NO_CACHE)
def promote_task(params: PromoteParams) -> PromoteSummary:
    from s2f.release.promote import promote
    from storage.layout import DataLayout

    result = promote(DataLayout(params.data_dir), margin=params.margin,
                     min_diversity=params.min_diversity,
                     allow_different_data=params.allow_different_data,
                     evaluate_missing=params.evaluate_missing, decoder_uri=params.decoder_uri,
                     n_boot=params.bootstrap)
    return PromoteSummary(**asdict(result),
                          model_uri=f"models:/{result.model_name}/{result.challenger_version}")


@flow(name="promote", **flow_guard("promote"))
def promote_flow(params: PromoteParams) -> PromoteSummary:
    """Challenger vs champion; returns the decision with its reasons."""
    decision = promote_task(params)
    create_table_artifact([{"reason": r} for r in decision.reasons], key="promotion-reasons",
                          description=f"challenger v{decision.challenger_version}: "
                                      f"{decision.decision}")
    get_run_logger().info("promotion: %s %s", decision.decision, decision.reasons)
    return decision


def run_promote_from_cli(params: PromoteParams) -> int:
    """`s2f promote`: 0 promoted or unchanged, 1 rejected (reasons printed), 2 nothing to do."""
    d = explaining_data_errors("promote", lambda: promote_flow(params))
    if d is None:
        return 2
    champ = f"v{d.champion_version}" if d.champion_version else "none"
    print(f"{d.model_name}: challenger v{d.challenger_version} vs champion {champ}: "
          f"{d.decision.upper()}")
    for r in d.reasons:
        print(f"  - {r}")
    return 1 if d.decision == "rejected" else 0
