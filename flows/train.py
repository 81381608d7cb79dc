"""Prefect flows `train-decoder`, `train` and `train-seeds`: thin wrappers over `s2f.train`.

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

`train_seeds_flow` (the pipeline's `train` stage) trains the voice encoder once per seed
(`seeds`: the TrainConfig seed of the first, +1 for each next; every one is registered, the last
gets `challenger` for now) and, with `shuffled_control`, one more voice encoder with
`shuffle_voices=True` (the face features permuted across training identities: no voice-face
link is left to learn) with the same steps and schedule (`control_steps` sets others). The
control trains with the first seed; it is not registered
(it must never be promoted or served): it is scored on dev and test right after training, in
the same task, from memory, and its rows in the `evaluations` table have kind
`shuffled_control` and its training run's id. `flows.evaluate.evaluate_seeds_flow` then picks
the dev-best seed.

    s2f demo --seeds 3          # three seeds + the shuffled control, then the gate
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.guards import flow_guard, stage_guard
from flows.params import TrainDecoderParams, TrainParams, TrainSeedsParams
from flows.summaries import ControlSummary, TrainSeedsSummary, TrainSummary
from s2f.devices import Placement, pinned, side_by_side
from s2f.registry.names import FACE_DECODER_NAME, VOICE_ENCODER_NAME, model_uri
from storage.io import remove_stale_temps
from storage.layout import DataLayout
from storage.lock import StageLocked

if TYPE_CHECKING:
    from s2f.train.checkpoint import RunResult
    from s2f.train.voice import TrainResult


def _overrides(params: TrainDecoderParams) -> dict[str, Any]:
    over: dict[str, Any] = {"encoder": params.encoder, "device": params.device,
                            "track": params.track, "register_model": params.track}
    if params.steps is not None:
        over["steps"] = params.steps
    if params.checkpoint_every is not None:
        over["checkpoint_every"] = params.checkpoint_every
    return over


@task(name="train-face-decoder", cache_policy=NO_CACHE)
def train_decoder_task(params: TrainDecoderParams) -> TrainSummary:
    from s2f.train.config import DecoderTrainConfig
    from s2f.train.decoder import train_face_decoder

    cfg = DecoderTrainConfig(preset=params.config, **_overrides(params))
    return run_summary(train_face_decoder(cfg, DataLayout(params.data_dir),
                                          resume=params.resume), "train-decoder")


def train_voice(params: TrainParams) -> TrainResult:
    """The `train` task's work, without Prefect: also what every rank of a torchrun job runs
    (`flows.torchrun`)."""
    from s2f.registry.inference import load_registered_model
    from s2f.train.checkpoint import checkpoint_dir
    from s2f.train.config import TrainConfig
    from s2f.train.decoder import load_decoder
    from s2f.train.voice import train_voice_encoder

    layout = DataLayout(params.data_dir)
    decoder = None
    if params.decoder == "checkpoint":
        decoder = load_decoder(checkpoint_dir(layout, "face_decoder"))
    elif params.decoder == "registry":
        decoder = load_registered_model(  # pickle-free, like every registered-model load
            model_uri(FACE_DECODER_NAME, params.decoder_alias)).module
    classifier = None
    if params.vggface_weights is not None:
        from s2f.faces.features import load_vggface

        classifier = load_vggface(params.vggface_weights).fc8
    over = _overrides(params)
    over["decoder"] = params.decoder
    over.update(params.frontend_overrides())
    over.update(params.overrides)
    cfg = TrainConfig.preset_config(params.config, **over)
    with pinned(params.device):  # a side-by-side run's thread: "cuda" is its own GPU
        return train_voice_encoder(cfg, layout, decoder=decoder, classifier=classifier,
                                   resume=params.resume)


def run_summary(res: RunResult[Any], stage: str = "train") -> TrainSummary:
    """What the flows return and `s2f train` prints."""
    name = FACE_DECODER_NAME if stage == "train-decoder" else VOICE_ENCODER_NAME
    return TrainSummary(stage=stage, step=res.step, train_loss=res.train_loss, val=res.val,
                        checkpoint=str(res.checkpoint), run_id=res.run_id,
                        model_version=res.model_version, seconds=round(res.seconds, 1),
                        model_uri=f"models:/{name}/{res.model_version}"
                        if res.model_version else None)


@task(name="train-voice-encoder", cache_policy=NO_CACHE)
def train_voice_task(params: TrainParams) -> TrainSummary:
    return run_summary(train_voice(params))


def _remove_temps(ckpt_dir: Path) -> None:
    """Under the stage lock: checkpoint temporaries are a killed run's (never read: resume
    reads `last.pt`, which is only ever replaced by a rename)."""
    removed = remove_stale_temps([ckpt_dir])
    if removed:
        get_run_logger().info("removed %d checkpoint temporaries of killed runs", len(removed))


@flow(name="train-decoder", **flow_guard("train-decoder"))
def train_decoder_flow(params: TrainDecoderParams) -> TrainSummary:
    """Train the face decoder; returns losses, checkpoint, MLflow run and model version.
    Raises StageLocked if another train-decoder run holds this data directory."""
    from s2f.train.checkpoint import checkpoint_dir

    layout = DataLayout(params.data_dir).ensure()
    # Two runs would overwrite each other's checkpoints (and resume from a mixture).
    with stage_guard(layout, "train-decoder"):
        _remove_temps(checkpoint_dir(layout, "face_decoder"))
        summary = train_decoder_task(params)
    get_run_logger().info("face decoder: %s", summary.printed())
    return summary


@flow(name="train", **flow_guard("train"))
def train_flow(params: TrainParams) -> TrainSummary:
    """Train the voice encoder against the frozen face decoder.
    Raises StageLocked if another train run holds this data directory."""
    from s2f.train.checkpoint import checkpoint_dir

    layout = DataLayout(params.data_dir).ensure()
    with stage_guard(layout, "train"):
        _remove_temps(checkpoint_dir(layout, "voice_encoder"))
        summary = train_voice_task(params)
    logger = get_run_logger()
    logger.info("voice encoder: %s", summary.printed())
    if params.vggface_weights is None:
        logger.info("distillation term off: the face encoder has no classification layer")
    return summary


@task(name="train-shuffled-control", cache_policy=NO_CACHE)
def control_task(params: TrainSeedsParams, device: str | None = None,
                 lock_held: bool = False) -> ControlSummary:
    """Train the shuffled-voice control and score it on dev and test (kind shuffled_control).
    `device`: its GPU beside the seeds ("cuda:N", also where it is scored); None: the seeds'
    device setting. `lock_held`: the caller holds the train lock (side by side)."""
    from s2f.train.config import TrainConfig

    tp = params.control_params(TrainConfig.preset_config(params.train.config).steps)
    if device is not None:
        tp = tp.model_copy(update={"device": device})
    layout = DataLayout(tp.data_dir)
    with nullcontext() if lock_held else stage_guard(layout, "train"):
        result = train_voice(tp)
    with pinned(tp.device):
        return _score_control(params, tp, layout, result)


def _score_control(params: TrainSeedsParams, tp: TrainParams, layout: DataLayout,
                   result: TrainResult) -> ControlSummary:
    """The trained control scored on dev and test, from memory (it is never registered)."""
    from s2f.evaluation.run import evaluate
    from s2f.registry.inference import LoadedModel, ModelRef

    scores: dict[str, Any] = {"steps": tp.steps}
    run_params: dict[str, str] = {"encoder": tp.encoder, "seed": str(tp.overrides.get("seed", 0))}
    if result.run_id:
        from mlflow import MlflowClient

        run_params = dict(MlflowClient().get_run(result.run_id).data.params)
    ref = ModelRef(uri=f"runs:/{result.run_id}" if result.run_id else "control (untracked)",
                   name=None, version=None, run_id=result.run_id)
    loaded = LoadedModel(ref, result.model.eval().cpu(), run_params)
    for role in ("dev", "test"):
        row = evaluate(layout, ref.uri, None, role=role,  # type: ignore[arg-type]
                       n_boot=params.bootstrap, kind="shuffled_control", encoder=loaded,
                       device=tp.device)  # scored where it trained
        scores[f"{role}_evaluation_id"] = row["evaluation_id"]
        scores[f"{role}_recall_at_10_6s"] = row["metrics"].get("recall_at_10_6s")
    return ControlSummary(**run_summary(result).model_dump(), **scores)


def gpus_to_spread_over(device: str) -> int:
    """The GPUs seeds and control may train on side by side: every visible one when the
    device is auto or cuda; none for cpu or a device named by index (one after another)."""
    from s2f.devices import visible_cuda_devices

    return visible_cuda_devices() if device in ("auto", "cuda") else 0


@flow(name="train-seeds", **flow_guard("train-seeds"))
def train_seeds_flow(params: TrainSeedsParams) -> TrainSeedsSummary:
    """One voice encoder per seed (registered), then the shuffled control (scored, unregistered).
    Returns the last seed's summary with `seeds` (each seed's) and `control` beside it.
    With two or more GPUs visible the runs train side by side, one per GPU
    (`train_side_by_side`); otherwise one after another, each seed its own `train` flow run."""
    waves = side_by_side(params.seeds + params.shuffled_control,
                         gpus_to_spread_over(params.train.device))
    if any(p.device is not None for wave in waves for p in wave):
        return train_side_by_side(params, waves)
    logger = get_run_logger()
    runs: list[TrainSummary] = []
    for i in range(params.seeds):
        tp = params.seed_params(i)
        summary = train_flow.with_options(flow_run_name=f"train seed {tp.overrides['seed']}")(tp)
        summary = summary.model_copy(update={"seed": tp.overrides["seed"]})
        runs.append(summary)
        logger.info("seed %s: version %s", summary.seed, summary.model_version)
    control = control_task(params) if params.shuffled_control else None
    return TrainSeedsSummary(**runs[-1].model_dump(), seeds=runs, control=control)


def train_side_by_side(params: TrainSeedsParams, waves: list[list[Placement]]
                       ) -> TrainSeedsSummary:
    """Each wave's runs (seeds 0..n-1, then the control) as concurrent tasks, each on its
    placement's GPU, under one train lock held for all of them (per-run checkpoint folders
    keep them apart). The registry's `challenger` ends on whichever seed registered last
    (the evaluate stage moves it to the dev-best seed anyway)."""
    from s2f.train.checkpoint import checkpoint_dir

    logger = get_run_logger()
    layout = DataLayout(params.train.data_dir).ensure()
    runs: dict[int, TrainSummary] = {}
    control: ControlSummary | None = None
    with stage_guard(layout, "train"):
        _remove_temps(checkpoint_dir(layout, "voice_encoder"))
        for wave in waves:
            futures: dict[int, Any] = {}
            for p in wave:
                if p.run == params.seeds:  # the control comes after the seeds
                    futures[p.run] = control_task.with_options(
                        task_run_name=f"shuffled control on {p.device}").submit(
                        params, p.device, lock_held=True)
                    continue
                tp = params.seed_params(p.run).model_copy(update={"device": p.device})
                futures[p.run] = train_voice_task.with_options(
                    task_run_name=f"train seed {tp.overrides['seed']} on {p.device}").submit(tp)
            for run, future in futures.items():
                if run == params.seeds:
                    control = future.result()
                    continue
                seed = params.seed_params(run).overrides["seed"]
                runs[run] = future.result().model_copy(update={"seed": seed})
                logger.info("seed %s: version %s (side by side)", seed, runs[run].model_version)
    seeds = [runs[i] for i in range(params.seeds)]
    return TrainSeedsSummary(**seeds[-1].model_dump(), seeds=seeds, control=control)


def run_train_decoder_from_cli(params: TrainDecoderParams) -> int:
    """`s2f train-decoder`: see `_run_from_cli`."""
    return _run_from_cli("train-decoder", train_decoder_flow, params)


def run_train_from_cli(params: TrainParams) -> int:
    """`s2f train`: see `_run_from_cli`."""
    return _run_from_cli("train", train_flow, params)


def _run_from_cli(command: str, stage_flow: Any, params: TrainDecoderParams) -> int:
    """Run the flow and print its summary. 0 when it finished, 1 when it failed, 3 when another
    run of the same stage holds the data directory."""
    state = stage_flow(params, return_state=True)
    if state.is_failed() and isinstance(exc := state.result(raise_on_failure=False), StageLocked):
        print(f"s2f {command}: {exc}", file=sys.stderr)
        return 3
    if not state.is_completed():
        print(f"{command} failed: {state.message}")
        return 1
    for k, v in state.result().printed().items():
        print(f"  {k:<14} {v}")
    return 0
