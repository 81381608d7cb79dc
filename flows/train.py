"""Prefect flows `train-decoder` and `train`: thin wrappers over `s2f.train`.

    s2f train-decoder --data-dir s2f-data [--config small|paper] [--steps N] [--resume]
    s2f train         --data-dir s2f-data [--config small|paper] [--steps N] [--resume]
                      [--decoder checkpoint|registry|random] [--vggface-weights FILE.pt]

or from Python (after `flows.runtime.configure(data_dir)`):

    from flows.train import TrainParams, train_flow
    summary = train_flow(TrainParams(data_dir=...))

`train-decoder` trains the face decoder (Cole et al.) on faces ⋈ face_features; `train` trains
the voice encoder with that decoder frozen (its first layer is the loss's f_dec), loaded from
the decoder's last checkpoint or from the registry (`speech2face-face-decoder@challenger`).
With the VGG-Face encoder and its weights, VGG-Face's fc8 turns the distillation term on.
Both log to MLflow (experiment "speech2face") and register their model with alias challenger.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from storage.layout import DataLayout


class TrainDecoderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(description="the pipeline's data directory")
    config: Literal["small", "paper"] = Field("small", description="model preset")
    encoder: str = Field("dlib-resnet", description="face encoder whose features are decoded")
    steps: int | None = Field(None, ge=1, description="training steps (default: the preset's)")
    resume: bool = Field(False, description="continue from the last checkpoint")
    device: str = Field("auto", description="auto | cpu | cuda")
    track: bool = Field(True, description="log to MLflow and register the model")


class TrainParams(TrainDecoderParams):
    decoder: Literal["checkpoint", "registry", "random"] = Field(
        "checkpoint", description="where the frozen face decoder comes from")
    decoder_alias: str = Field("challenger", description="registry alias for decoder=registry")
    vggface_weights: Path | None = Field(None, description="VGG-Face weights: fc8 = f_VGG")


def _overrides(params: TrainDecoderParams) -> dict[str, Any]:
    over: dict[str, Any] = {"encoder": params.encoder, "device": params.device,
                            "track": params.track, "register_model": params.track}
    if params.steps is not None:
        over["steps"] = params.steps
    return over


@task(name="train-face-decoder", cache_policy=NO_CACHE)
def train_decoder_task(params: TrainDecoderParams) -> dict[str, Any]:
    from s2f.train.config import DecoderTrainConfig
    from s2f.train.decoder_loop import train_face_decoder

    cfg = DecoderTrainConfig(preset=params.config, **_overrides(params))
    res = train_face_decoder(cfg, DataLayout(params.data_dir), resume=params.resume)
    return {"step": res.step, "train_loss": res.train_loss, "val": res.val,
            "checkpoint": str(res.checkpoint), "run_id": res.run_id,
            "model_version": res.model_version, "seconds": round(res.seconds, 1)}


@task(name="train-voice-encoder", cache_policy=NO_CACHE)
def train_voice_task(params: TrainParams) -> dict[str, Any]:
    import mlflow.pytorch

    from s2f.train.config import TrainConfig
    from s2f.train.decoder_loop import decoder_ckpt_dir, load_decoder
    from s2f.train.loop import train_voice_encoder
    from s2f.train.tracking import FACE_DECODER_MODEL

    layout = DataLayout(params.data_dir)
    decoder = None
    if params.decoder == "checkpoint":
        decoder = load_decoder(decoder_ckpt_dir(layout))
    elif params.decoder == "registry":
        decoder = mlflow.pytorch.load_model(f"models:/{FACE_DECODER_MODEL}@{params.decoder_alias}")
    classifier = None
    if params.vggface_weights is not None:
        from s2f.features import load_vggface

        classifier = load_vggface(params.vggface_weights).fc8
    over = _overrides(params)
    over["decoder"] = params.decoder
    cfg = TrainConfig.preset_config(params.config, **over)
    res = train_voice_encoder(cfg, layout, decoder=decoder, classifier=classifier,
                              resume=params.resume)
    return {"step": res.step, "train_loss": res.train_loss, "val": res.val,
            "checkpoint": str(res.checkpoint), "run_id": res.run_id,
            "model_version": res.model_version, "seconds": round(res.seconds, 1)}


@flow(name="train-decoder")
def train_decoder_flow(params: TrainDecoderParams) -> dict[str, Any]:
    """Train the face decoder; returns losses, checkpoint, MLflow run and model version."""
    summary = train_decoder_task(params)
    get_run_logger().info("face decoder: %s", summary)
    return summary


@flow(name="train")
def train_flow(params: TrainParams) -> dict[str, Any]:
    """Train the voice encoder against the frozen face decoder."""
    summary = train_voice_task(params)
    logger = get_run_logger()
    logger.info("voice encoder: %s", summary)
    if params.vggface_weights is None:
        logger.info("distillation term off: the face encoder has no classification layer")
    return summary


def run_from_cli(args: argparse.Namespace) -> int:
    """`s2f train-decoder` / `s2f train`: run the flow and print its summary."""
    common = dict(data_dir=args.data_dir, config=args.config, steps=args.steps,
                  resume=args.resume, encoder=args.encoder, device=args.device,
                  track=not args.no_track)
    try:
        if args.command == "train-decoder":
            state = train_decoder_flow(TrainDecoderParams(**common), return_state=True)
        else:
            state = train_flow(TrainParams(**common, decoder=args.decoder,
                                           vggface_weights=args.vggface_weights),
                               return_state=True)
    except ValueError as exc:
        print(f"s2f {args.command}: {exc}")
        return 2
    if not state.is_completed():
        print(f"{args.command} failed: {state.message}")
        return 1
    summary = state.result()
    for k, v in summary.items():
        print(f"  {k:<14} {v}")
    return 0
