"""What each stage flow returns: a typed summary that the parent flow, the Prefect artifacts,
the command line and the demo report read as fields.

    summary = ingest_flow(params)          # IngestSummary
    summary.clips, summary.counts, summary.shards_skipped

Every summary has the same core (`StageSummary`: clips, counts by status, shards run and
skipped, MLflow run, model URI, headline metrics); a stage adds what only it knows. Only
these small objects travel between stages; the data stays in Parquet.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# The evaluation metrics a summary, the `evaluation-headline` artifact and `s2f evaluate` show.
HEADLINE = ("recall_at_1_6s", "recall_at_10_6s", "mean_face_recall_at_10", "chance_at_10",
            "cosine_deg_mean_6s", "cosine_deg_mean_3s", "mean_face_cosine_deg_mean",
            "diversity_6s", "recon_image_diversity")


class StageSummary(BaseModel):
    stage: str
    clips: int = Field(0, description="clips the stage wrote (ingest, preprocess) or scored")
    counts: dict[str, int] = Field(default_factory=dict, description="clips by status")
    shards_run: int = 0
    shards_skipped: int = Field(0, description="shards whose inputs were unchanged")
    failed_shards: list[str] = Field(default_factory=list)
    clips_run: int = Field(0, description="clips whose media work ran now (ingest: probe and "
                                          "cut; preprocess: frames, faces, features)")
    clips_reused: int = Field(0, description="clips copied from an earlier shard file with an "
                                             "unchanged clip_fingerprint (a new shard size)")
    run_id: str | None = Field(None, description="the stage's MLflow run")
    model_uri: str | None = Field(None, description="the model it registered or scored")
    headline: dict[str, float] = Field(default_factory=dict, description="headline metrics")

    @property
    def shards(self) -> int:
        return self.shards_run + self.shards_skipped

    def result_text(self) -> str:
        """One line for the `pipeline-mlflow` artifact's result column."""
        return ", ".join(f"{k} {v:.4f}" for k, v in self.headline.items())


def failures_text(failed: list[str], limit: int = 3) -> str:
    """The first `limit` shard failures, one after the other, and how many more there are."""
    more = f"; and {len(failed) - limit} more" if len(failed) > limit else ""
    return "; ".join(failed[:limit]) + more


class ShardsFailed(RuntimeError):
    """A shard-level stage finished every shard it could, and some failed (a full disk, a bug):
    raised after the summary is logged and published, carrying it. The message says how many
    and why; each failing shard's own error was logged by its task."""

    def __init__(self, message: str, summary: StageSummary) -> None:
        super().__init__(message)
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (Dask, Prefect's result records)
        return (type(self), (str(self), self.summary))


class IngestSummary(StageSummary):
    stage: str = "ingest"
    lines: int = Field(0, description="manifest lines read")
    blank_lines: int = 0
    tables: list[str] = Field(default_factory=list, description="clips table directories")


class PreprocessSummary(StageSummary):
    stage: str = "preprocess"
    tables: dict[str, str] = Field(default_factory=dict, description="output table directories")


class TrainSummary(StageSummary):
    """One trained model (the face decoder, a voice-encoder seed, or the shuffled control)."""

    stage: str = "train"
    step: int
    train_loss: float
    val: dict[str, float] = Field(default_factory=dict)
    checkpoint: str
    model_version: str | None = None
    seconds: float
    seed: int | None = None

    def printed(self) -> dict[str, Any]:
        """What `s2f train` and `torchrun -m flows.torchrun` print, one line each."""
        return {"step": self.step, "train_loss": self.train_loss, "val": self.val,
                "checkpoint": self.checkpoint, "run_id": self.run_id,
                "model_version": self.model_version, "seconds": self.seconds}

    def result_text(self) -> str:
        return f"step {self.step}, train loss {self.train_loss}"


class ControlSummary(TrainSummary):
    """The shuffled-voice control: trained, scored on dev and test, never registered."""

    steps: int
    dev_evaluation_id: str | None = None
    test_evaluation_id: str | None = None
    dev_recall_at_10_6s: float | None = None
    test_recall_at_10_6s: float | None = None


class TrainSeedsSummary(TrainSummary):
    """The last seed's summary, with every seed's and the control's beside it."""

    seeds: list[TrainSummary] = Field(default_factory=list)
    control: ControlSummary | None = None


class SeedEvaluation(BaseModel):
    model_version: str
    seed: int | None = None
    dev_evaluation_id: str | None = None
    test_evaluation_id: str


class EvaluateSummary(StageSummary):
    """One version's `evaluations` row (test, by default) and its dev row."""

    stage: str = "evaluate"
    row: dict[str, Any] = Field(description="the last role's row of the evaluations table")
    dev_row: dict[str, Any] | None = None
    picked_by: str | None = Field(None, description="why this seed's version is the challenger")
    seeds: list[SeedEvaluation] = Field(default_factory=list)

    @classmethod
    def of(cls, row: dict[str, Any], dev_row: dict[str, Any] | None = None) -> EvaluateSummary:
        metrics = row.get("metrics") or {}
        uri = (f"models:/{row['model_name']}/{row['model_version']}"
               if row.get("model_name") and row.get("model_version") else None)
        return cls(row=row, dev_row=dev_row, clips=int(row.get("n_clips") or 0),
                   run_id=row.get("mlflow_run_id"), model_uri=uri,
                   headline={k: float(metrics[k]) for k in HEADLINE if k in metrics})

    @property
    def evaluation_id(self) -> str:
        return str(self.row["evaluation_id"])

    def result_text(self) -> str:
        return ", ".join(f"{k} {self.headline[k]:.4f}" for k in
                         ("recall_at_10_6s", "cosine_deg_mean_6s", "diversity_6s")
                         if k in self.headline)


class PromoteSummary(StageSummary):
    """The promotion gate's decision (`s2f.release.promote.PromotionResult`'s fields)."""

    stage: str = "promote"
    decision: str
    model_name: str
    challenger_version: str
    champion_version: str | None
    reasons: list[str]
    challenger_evaluation: str | None
    champion_evaluation: str | None
    different_data: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)

    def result_text(self) -> str:
        return f"**{self.decision}**: " + "; ".join(self.reasons)


class StageRow(BaseModel):
    """One row of the `pipeline-stages` table."""

    stage: str
    state: str
    seconds: float
    clips: int
    clips_per_s: float
    shards: int
    shards_skipped: int
    error: str

    @classmethod
    def of(cls, stage: str, seconds: float, summary: StageSummary | None,
           error: str | None = None) -> StageRow:
        clips = summary.clips if summary else 0
        return cls(stage=stage, state="failed" if error else "completed",
                   seconds=round(float(seconds), 2), clips=clips,
                   clips_per_s=round(clips / seconds, 2) if seconds > 0 and clips else 0.0,
                   shards=summary.shards if summary else 0,
                   shards_skipped=summary.shards_skipped if summary else 0,
                   error=(error or "")[:300])


class PipelineSummary(BaseModel):
    """What `speech2face-pipeline` returns: the manifest snapshot, one row per stage, and each
    stage's summary."""

    manifest_snapshot: str
    stages: list[StageRow] = Field(default_factory=list)
    results: dict[str, StageSummary] = Field(default_factory=dict)
