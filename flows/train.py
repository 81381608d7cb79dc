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
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from storage.io import remove_stale_temps
from storage.layout import DataLayout
from storage.lock import StageLocked, stage_lock

if TYPE_CHECKING:
    from s2f.train.checkpoint import RunResult
    from s2f.train.voice import TrainResult


class TrainDecoderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(description="the pipeline's data directory")
    config: Literal["small", "paper"] = Field("small", description="model preset")
    encoder: str = Field("dlib-resnet", description="face encoder whose features are decoded")
    steps: int | None = Field(None, ge=1, description="training steps (default: the preset's)")
    resume: bool = Field(False, description="continue from the last checkpoint")
    checkpoint_every: int | None = Field(None, ge=1, description="steps between checkpoints "
                                                                 "(default: the preset's)")
    device: str = Field("auto", description="auto | cpu | cuda")
    track: bool = Field(True, description="log to MLflow and register the model")


class TrainParams(TrainDecoderParams):
    decoder: Literal["checkpoint", "registry", "random"] = Field(
        "checkpoint", description="where the frozen face decoder comes from")
    decoder_alias: str = Field("challenger", description="registry alias for decoder=registry")
    vggface_weights: Path | None = Field(None, description="VGG-Face weights: fc8 = f_VGG")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="TrainConfig fields set last (--set KEY=VALUE)")


def _overrides(params: TrainDecoderParams) -> dict[str, Any]:
    over: dict[str, Any] = {"encoder": params.encoder, "device": params.device,
                            "track": params.track, "register_model": params.track}
    if params.steps is not None:
        over["steps"] = params.steps
    if params.checkpoint_every is not None:
        over["checkpoint_every"] = params.checkpoint_every
    return over


@task(name="train-face-decoder", cache_policy=NO_CACHE)
def train_decoder_task(params: TrainDecoderParams) -> dict[str, Any]:
    from s2f.train.config import DecoderTrainConfig
    from s2f.train.decoder import train_face_decoder

    cfg = DecoderTrainConfig(preset=params.config, **_overrides(params))
    return run_summary(train_face_decoder(cfg, DataLayout(params.data_dir),
                                          resume=params.resume))


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`KEY=VALUE` strings → {key: value}; a value is JSON when it parses (numbers, true,
    lists), else the string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def train_voice(params: TrainParams) -> TrainResult:
    """The `train` task's work, without Prefect: also what every rank of a torchrun job runs
    (`flows.torchrun`)."""
    from s2f.registry.inference import load_registered_model
    from s2f.train.checkpoint import checkpoint_dir
    from s2f.train.config import TrainConfig
    from s2f.train.decoder import load_decoder
    from s2f.train.tracking import FACE_DECODER_MODEL
    from s2f.train.voice import train_voice_encoder

    layout = DataLayout(params.data_dir)
    decoder = None
    if params.decoder == "checkpoint":
        decoder = load_decoder(checkpoint_dir(layout, "face_decoder"))
    elif params.decoder == "registry":
        decoder = load_registered_model(  # pickle-free, like every registered-model load
            f"models:/{FACE_DECODER_MODEL}@{params.decoder_alias}").module
    classifier = None
    if params.vggface_weights is not None:
        from s2f.faces.features import load_vggface

        classifier = load_vggface(params.vggface_weights).fc8
    over = _overrides(params)
    over["decoder"] = params.decoder
    over.update(params.overrides)
    cfg = TrainConfig.preset_config(params.config, **over)
    return train_voice_encoder(cfg, layout, decoder=decoder, classifier=classifier,
                               resume=params.resume)


def run_summary(res: RunResult[Any]) -> dict[str, Any]:
    """What the flows return and `s2f train` prints."""
    return {"step": res.step, "train_loss": res.train_loss, "val": res.val,
            "checkpoint": str(res.checkpoint), "run_id": res.run_id,
            "model_version": res.model_version, "seconds": round(res.seconds, 1)}


@task(name="train-voice-encoder", cache_policy=NO_CACHE)
def train_voice_task(params: TrainParams) -> dict[str, Any]:
    return run_summary(train_voice(params))


def _remove_temps(ckpt_dir: Path) -> None:
    """Under the stage lock: checkpoint temporaries are a killed run's (never read: resume
    reads `last.pt`, which is only ever replaced by a rename)."""
    removed = remove_stale_temps([ckpt_dir])
    if removed:
        get_run_logger().info("removed %d checkpoint temporaries of killed runs", len(removed))


@flow(name="train-decoder")
def train_decoder_flow(params: TrainDecoderParams) -> dict[str, Any]:
    """Train the face decoder; returns losses, checkpoint, MLflow run and model version.
    Raises StageLocked if another train-decoder run holds this data directory."""
    from s2f.train.checkpoint import checkpoint_dir

    layout = DataLayout(params.data_dir).ensure()
    # Two runs would overwrite each other's checkpoints (and resume from a mixture).
    with stage_lock(layout, "train-decoder"):
        _remove_temps(checkpoint_dir(layout, "face_decoder"))
        summary = train_decoder_task(params)
    get_run_logger().info("face decoder: %s", summary)
    return summary


@flow(name="train")
def train_flow(params: TrainParams) -> dict[str, Any]:
    """Train the voice encoder against the frozen face decoder.
    Raises StageLocked if another train run holds this data directory."""
    from s2f.train.checkpoint import checkpoint_dir

    layout = DataLayout(params.data_dir).ensure()
    with stage_lock(layout, "train"):
        _remove_temps(checkpoint_dir(layout, "voice_encoder"))
        summary = train_voice_task(params)
    logger = get_run_logger()
    logger.info("voice encoder: %s", summary)
    if params.vggface_weights is None:
        logger.info("distillation term off: the face encoder has no classification layer")
    return summary


def _common(args: argparse.Namespace) -> dict[str, Any]:
    return dict(data_dir=args.data_dir, config=args.config, steps=args.steps,
                resume=args.resume, encoder=args.encoder, device=args.device,
                track=not args.no_track, checkpoint_every=getattr(args, "checkpoint_every", None))


def train_params(args: argparse.Namespace) -> TrainParams:
    """`s2f train`'s arguments as TrainParams (also read by `flows.torchrun`)."""
    return TrainParams(**_common(args), decoder=args.decoder,
                       vggface_weights=args.vggface_weights,
                       overrides=parse_overrides(getattr(args, "set", None)))


def run_from_cli(args: argparse.Namespace) -> int:
    """`s2f train-decoder` / `s2f train`: run the flow and print its summary. 0 when it
    finished, 1 when it failed, 2 for bad parameters, 3 when another run of the same stage
    holds the data directory."""
    try:
        if args.command == "train-decoder":
            state = train_decoder_flow(TrainDecoderParams(**_common(args)), return_state=True)
        else:
            state = train_flow(train_params(args), return_state=True)
    except ValueError as exc:
        print(f"s2f {args.command}: {exc}")
        return 2
    if state.is_failed() and isinstance(exc := state.result(raise_on_failure=False), StageLocked):
        print(f"s2f {args.command}: {exc}", file=sys.stderr)
        return 3
    if not state.is_completed():
        print(f"{args.command} failed: {state.message}")
        return 1
    summary = state.result()
    for k, v in summary.items():
        print(f"  {k:<14} {v}")
    return 0
