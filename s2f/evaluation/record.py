"""Where an evaluation goes: an MLflow run and a row of the `evaluations` Parquet table.

MLflow (experiment `speech2face-evaluation`): params (model/decoder URI, name, version, face
encoder), every metric, tags `split_snapshot_id` / `features_hash` / `model_name` /
`model_version`, figures under `figures/` and tables under `tables/` (Parquet) plus
`evaluation.json`. Table: `tables/evaluations/<model name>/shard-<evaluation id>.parquet`, one
row, written atomically; `read_evaluations` reads them back. Each row names its `role` (dev or
test) and `kind` (model or shuffled_control); rows written before the role column existed read
as test rows of kind model. `find_test_row` finds the one test row of a model version (or of a
control's training run): the test split is scored once and read back after.

    python -m s2f.evaluation.record DATA_DIR     # lists the evaluations table
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from s2f.evaluation.scores import Scores
from s2f.registry.inference import ModelRef
from s2f.registry.names import use_experiment as use_mlflow_experiment
from storage.io import read_shard, rows_to_table, shard_paths, write_table_atomic
from storage.layout import DataLayout, safe_name
from storage.schemas import EVALUATIONS

EXPERIMENT = "speech2face-evaluation"
TABLE = "evaluations"


@dataclass
class EvaluationResult:
    """Everything one evaluation produced; `row()` is exactly what the table stores."""

    evaluation_id: str
    created_at: datetime
    model: ModelRef
    decoder: ModelRef | None
    face_encoder: str
    split_snapshot_id: str
    features_hash: str
    identity_source: str
    n_clips: int
    n_identities: int
    scores: Scores
    figures: dict[str, Figure] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    role: str = "test"
    kind: str = "model"
    seed: int | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.scores.metrics

    def row(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "evaluation_id": self.evaluation_id, "created_at": self.created_at,
            "model_name": self.model.name, "model_version": self.model.version,
            "model_uri": self.model.uri, "model_run_id": self.model.run_id,
            "decoder_name": self.decoder.name if self.decoder else None,
            "decoder_version": self.decoder.version if self.decoder else None,
            "decoder_uri": self.decoder.uri if self.decoder else None,
            "face_encoder": self.face_encoder, "role": self.role, "kind": self.kind,
            "seed": self.seed, "split_snapshot_id": self.split_snapshot_id,
            "features_hash": self.features_hash, "identity_source": self.identity_source,
            "n_clips": self.n_clips, "n_identities": self.n_identities,
            "recall_at_10_6s": m.get("recall_at_10_6s"),
            "cosine_deg_mean_6s": m.get("cosine_deg_mean_6s"),
            "diversity_6s": m.get("diversity_6s"),
            "metrics": [(k, float(v)) for k, v in sorted(m.items())],
            "mlflow_run_id": self.mlflow_run_id,
        }


def new_evaluation_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def use_experiment(name: str, artifact_root: Path | None) -> None:
    """Make `name` the active experiment, its artifacts under `artifact_root/name`."""
    use_mlflow_experiment(name, artifact_root / name if artifact_root is not None else None)


def log_to_mlflow(result: EvaluationResult, artifact_root: Path | None = None) -> str:
    """One MLflow run with the metrics, tags, tables and figures; returns its run id."""
    import mlflow

    use_experiment(EXPERIMENT, artifact_root)
    name = f"eval {result.kind} {result.model.label()} {result.role} @ {result.split_snapshot_id}"
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({
            "split_snapshot_id": result.split_snapshot_id, "features_hash": result.features_hash,
            "model_name": result.model.name or "", "model_version": result.model.version or "",
            "evaluation_id": result.evaluation_id, "identity_source": result.identity_source,
            "role": result.role, "kind": result.kind,
        })
        params = {"model_uri": result.model.uri, "face_encoder": result.face_encoder,
                  "n_clips": result.n_clips, "n_identities": result.n_identities}
        if result.decoder is not None:
            params.update(decoder_uri=result.decoder.uri, decoder_name=result.decoder.name or "",
                          decoder_version=result.decoder.version or "")
        mlflow.log_params(params)
        # MLflow stores NaN metrics, but they only confuse comparisons in the UI.
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if math.isfinite(v)})
        for fig_name, fig in result.figures.items():
            mlflow.log_figure(fig, f"figures/{fig_name}.png")
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            for table_name, df in (("similarity", result.scores.similarity),
                                   ("recall", result.scores.recall),
                                   ("craniofacial", result.scores.craniofacial),
                                   ("voice_parameters", result.scores.voice_parameters),
                                   ("paper_recall", result.scores.paper_recall)):
                if df is None:
                    continue
                # page checksums, as every shard of the data directory (storage.io)
                pq.write_table(df.to_arrow(), t / f"{table_name}.parquet",
                               write_page_checksum=True)
            (t / "evaluation.json").write_text(json.dumps(
                {k: (v.isoformat() if isinstance(v, datetime) else v)
                 for k, v in result.row().items()}, indent=2, allow_nan=True))
            mlflow.log_artifacts(str(t), artifact_path="tables")
        return run.info.run_id


def write_evaluation_row(layout: DataLayout, result: EvaluationResult) -> Path:
    model_dir = safe_name(result.model.name or "unregistered")
    path = layout.table_dir(TABLE) / model_dir / f"shard-{result.evaluation_id}.parquet"
    return write_table_atomic(rows_to_table([result.row()], EVALUATIONS), path,
                              extra={"evaluation_id": result.evaluation_id})


def read_evaluations(layout: DataLayout) -> list[dict[str, Any]]:
    """Every evaluation row, oldest first, with `metrics` as a dict."""
    rows: list[dict[str, Any]] = []
    for p in shard_paths(layout, TABLE):
        for r in read_shard(p, TABLE).to_pylist():
            r["metrics"] = dict(r["metrics"] or [])
            # Rows from before the role/kind columns were all test rows of a model.
            r["role"] = r.get("role") or "test"
            r["kind"] = r.get("kind") or "model"
            r.setdefault("seed", None)
            rows.append(r)
    return sorted(rows, key=lambda r: (r["created_at"], r["evaluation_id"]))


def latest_evaluation(layout: DataLayout, model_name: str, model_version: str,
                      split_snapshot_id: str | None = None, role: str = "dev",
                      kind: str = "model") -> dict[str, Any] | None:
    """The newest `role` evaluation of one model version (on one snapshot, if given)."""
    found = [r for r in read_evaluations(layout)
             if r["model_name"] == model_name and r["model_version"] == str(model_version)
             and r["role"] == role and r["kind"] == kind
             and (split_snapshot_id is None or r["split_snapshot_id"] == split_snapshot_id)]
    return found[-1] if found else None


def find_test_row(layout: DataLayout, model_name: str | None, model_version: str | None,
                    model_run_id: str | None, split_snapshot_id: str, kind: str = "model",
                    model_uri: str | None = None) -> dict[str, Any] | None:
    """The test row of a model version (or, for an unregistered control, of its training run;
    for an untracked one, of its `model_uri`, which names its weights) on this test snapshot:
    the first one written, since test is scored once."""
    for r in read_evaluations(layout):
        if r["role"] != "test" or r["kind"] != kind or r["split_snapshot_id"] != split_snapshot_id:
            continue
        if model_version is not None:
            if r["model_name"] == model_name and r["model_version"] == str(model_version):
                return r
        elif model_run_id is not None:
            if r["model_run_id"] == model_run_id:
                return r
        elif model_uri is not None and r["model_run_id"] is None \
                and r["model_version"] is None and r["model_uri"] == model_uri:
            return r
    return None


def main(argv: list[str] | None = None) -> int:
    layout = DataLayout(Path((sys.argv[1:] if argv is None else argv)[0]))
    rows = read_evaluations(layout)
    if not rows:
        print("no evaluations")
        return 0
    cols = [f.name for f in EVALUATIONS if f.name != "metrics"]
    print(pl.from_arrow(pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
