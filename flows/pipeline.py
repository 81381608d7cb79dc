"""The whole pipeline as one parent Prefect flow: each stage is its own flow (also runnable
alone), and the stages hand each other Parquet tables under one data directory.

    s2f demo --data-dir s2f-data            # demo corpus + the whole chain
    python -m flows.pipeline --help         # same parameters as the `pipeline` deployment
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Literal

import polars as pl
from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows.ingest import IngestParams, ingest_flow
from flows.preprocess import PreprocessParams, preprocess_flow
from storage.layout import DataLayout

Stage = Literal["ingest", "preprocess"]
ALL_STAGES: list[Stage] = ["ingest", "preprocess"]


class PipelineParams(BaseModel):
    """Every knob of a pipeline run; validated before any stage starts."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(description="the pipeline's data directory")
    manifests: list[Path] = Field(default_factory=list, description="AVSpeech CSVs to ingest")
    media_root: Path | None = Field(None, description="directory of <youtube_id>.(mp4|webm|mkv)")
    download: bool = Field(False, description="fetch missing media with yt-dlp")
    stages: list[Stage] = Field(default_factory=lambda: list(ALL_STAGES),
                                description="stages to run, in pipeline order")
    shard_size: int = Field(256, ge=1, description="manifest lines per shard")
    frames: int = Field(3, ge=1, description="frames sampled per clip")
    detector: Literal["hog", "cnn"] = Field("hog", description="dlib face detector")
    encoder: Literal["dlib-resnet", "vggface"] = Field("dlib-resnet", description="face encoder")
    vggface_weights: Path | None = Field(None, description="VGG-Face weights for vggface")

    def ingest_params(self) -> IngestParams:
        if not self.manifests or self.media_root is None:
            raise ValueError("the ingest stage needs manifests and a media root")
        return IngestParams(manifests=self.manifests, media_root=self.media_root,
                            data_dir=self.data_dir, download=self.download,
                            shard_size=self.shard_size)

    def preprocess_params(self) -> PreprocessParams:
        return PreprocessParams(data_dir=self.data_dir, frames=self.frames,
                                detector=self.detector, encoder=self.encoder,
                                vggface_weights=self.vggface_weights)


@flow(name="speech2face-pipeline", log_prints=True)
def pipeline_flow(params: PipelineParams) -> dict[str, Any]:
    """ingest → preprocess, each a subflow; returns each stage's summary."""
    logger = get_run_logger()
    # Build every stage's parameters first, so a bad knob fails before any work.
    stage_params = {
        "ingest": params.ingest_params if "ingest" in params.stages else None,
        "preprocess": params.preprocess_params,
    }
    built = {s: stage_params[s]() for s in params.stages if stage_params[s] is not None}
    results: dict[str, Any] = {}
    for stage in ALL_STAGES:
        if stage not in params.stages:
            continue
        t0 = time.perf_counter()
        logger.info("stage %s: starting", stage)
        if stage == "ingest":
            results[stage] = ingest_flow(built[stage])
        elif stage == "preprocess":
            results[stage] = preprocess_flow(built[stage])
        logger.info("stage %s: done in %.1f s", stage, time.perf_counter() - t0)
    return results


def run_demo_from_cli(args: argparse.Namespace) -> int:
    """`s2f demo`: build the demo corpus (once) under the data directory, then run the pipeline."""
    from s2f.corpus.build import CorpusConfig, build_demo_corpus, corpus_is_complete
    from storage.status import status_counts

    layout = DataLayout(args.data_dir)
    corpus_dir = layout.demo_corpus_dir
    config = CorpusConfig(out=corpus_dir, identities=args.identities,
                          clips_per_identity=args.clips_per_identity, seed=args.seed)
    if corpus_is_complete(config):
        print(f"demo corpus: reusing {corpus_dir}")
    else:
        print(f"demo corpus: building {args.identities} identities × "
              f"{args.clips_per_identity} clips in {corpus_dir}")
        print(build_demo_corpus(config).describe())
    params = PipelineParams(
        data_dir=layout.root,
        manifests=[corpus_dir / "avspeech_train.csv", corpus_dir / "avspeech_test.csv"],
        media_root=corpus_dir / "media",
    )
    pipeline_flow(params)
    print("\nClips by furthest stage and status (details: s2f status --data-dir "
          f"{args.data_dir}):")
    with pl.Config(tbl_rows=50, tbl_hide_dataframe_shape=True):
        print(status_counts(layout))
    print(f"\nPlaces:\n  demo corpus      {corpus_dir}\n  tables (Parquet) {layout.root / 'tables'}"
          f"\n  audio (FLAC)     {layout.root / 'audio'}\n  MLflow store     {layout.mlflow_tracking_uri}"
          f"\n  Prefect home     {layout.prefect_home}")
    return 0
