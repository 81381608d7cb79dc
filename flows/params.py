"""Every setting of the pipeline, once: each stage's pydantic parameters (defaults, ranges, help
text) and the one list of stages. The `s2f` command line is generated from these models
(`flows.cli`), the deployments in prefect.yaml fill them in, and the flows take them.

    from flows.params import PipelineParams
    params = PipelineParams(data_dir="s2f-data", stages=["train", "evaluate"])
    params.stage_params()   # each selected stage's own parameters, validated

Light on purpose (pydantic and a few constants): `s2f --help` imports it, and Prefect must not
be imported before `flows.runtime.configure()` has set its environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.runtime import DEFAULT_DATA_DIR
from s2f.corpus import DEMO_CLIPS_PER_IDENTITY, DEMO_IDENTITIES
from s2f.devices import DEFAULT_DEVICE, DEVICE_PATTERN
from s2f.evaluation.metrics import DEFAULT_BOOTSTRAP
from s2f.ingest.download import DEFAULT_URL_TEMPLATE
from s2f.ingest.manifest import DEFAULT_SHARD_SIZE, SPLITS, manifest_name_of, split_of
from s2f.registry.names import (
    CHALLENGER,
    CHAMPION,
    FACE_DECODER_NAME,
    MAX_PREDICT_SECONDS,
    MIN_PREDICT_SECONDS,
    VOICE_ENCODER_NAME,
)
from s2f.registry.names import model_uri as registry_uri  # `model_uri` is a field name below
from s2f.release import DEFAULT_MIN_DIVERSITY


class Params(BaseModel):
    """Base of every parameter model: an unknown key is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


# -- settings shared by several stages (one definition each) ----------------------------------

class DataDirParams(Params):
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="the pipeline's data directory: "
                                                         "tables, audio, MLflow and Prefect state")


class BootstrapParams(Params):
    bootstrap: int = Field(DEFAULT_BOOTSTRAP, ge=10,
                           description="bootstrap resamples of the evaluation's CIs")


class GateParams(Params):
    margin: float = Field(0.0, ge=0.0, description="recall@10 gain the challenger needs over "
                                                   "the champion")
    min_diversity: float = Field(DEFAULT_MIN_DIVERSITY, ge=0.0,
                                 description="promotion floor on the spread of the predictions "
                                             "/ the spread of the true faces (0 lets a collapsed "
                                             "model through: smoke tests)")


class StepsParams(Params):
    decoder_steps: int | None = Field(None, ge=1, description="face decoder training steps "
                                                              "(default: the preset's)")
    train_steps: int | None = Field(None, ge=1, description="voice encoder training steps "
                                                            "(default: the preset's)")


class SeedsParams(Params):
    seeds: int = Field(1, ge=1, le=20, description="voice-encoder seeds to train and evaluate; "
                                                   "the dev-best seed goes to the gate")
    control_steps: int | None = Field(None, ge=1, description="training steps of the "
                                                              "shuffled-voice control (default: "
                                                              "the voice encoder's, so the "
                                                              "comparison is like for like)")


class CorpusSizeParams(Params):
    identities: int = Field(DEMO_IDENTITIES, ge=1, description="identities in the demo corpus")
    clips_per_identity: int = Field(DEMO_CLIPS_PER_IDENTITY, ge=1,
                                    description="clips per identity")
    seed: int = Field(0, description="corpus seed; same seed, same corpus")


class FaceParams(Params):
    frames: int = Field(3, ge=1, le=64, description="frames sampled per clip")
    detector: Literal["hog", "cnn"] = Field("hog", description="dlib face detector")
    encoder: Literal["dlib-resnet", "vggface"] = Field("dlib-resnet", description="face encoder")
    vggface_weights: Path | None = Field(None, description="converted VGG-Face weights (.pt) "
                                                           "for --encoder vggface")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="decode (NVDEC) and align on the GPU when there is one")


class ShardingParams(Params):
    download: bool = Field(False, description="fetch missing media with yt-dlp "
                                              "(validated ids only)")
    shard_size: int | None = Field(
        None, ge=1, le=100_000,
        description=f"manifest lines per shard (default: the data directory's current shard "
                    f"size, else {DEFAULT_SHARD_SIZE}); another size reuses finished clips")


# -- task runner of the shard-level stages (flows.runners builds it) --------------------------

RunnerKind = Literal["default", "thread", "dask"]
ENV_KIND = "S2F_TASK_RUNNER"
ENV_ADDRESS = "S2F_DASK_ADDRESS"
ENV_WORKERS = "S2F_DASK_WORKERS"


class RunnerParams(Params):
    """Task-runner choice for the shard-level stages."""

    kind: RunnerKind = Field("default", description="task runner of ingest/preprocess "
                                                    "(default: each flow's own, or "
                                                    "S2F_TASK_RUNNER)")
    max_workers: int | None = Field(None, ge=1, le=256, description="threads for kind=thread")
    dask_address: str | None = Field(None, description="scheduler of a running Dask cluster "
                                                       "(default: S2F_DASK_ADDRESS, else a "
                                                       "LocalCluster)")
    dask_workers: int = Field(2, ge=1, le=256, description="LocalCluster worker processes")
    dask_threads_per_worker: int = Field(1, ge=1, le=64,
                                         description="threads per LocalCluster worker")

    def resolved(self) -> RunnerParams:
        """`default` resolved against the environment (S2F_TASK_RUNNER, S2F_DASK_ADDRESS,
        S2F_DASK_WORKERS); explicit settings win."""
        kind = self.kind
        if kind == "default":
            env_kind = os.environ.get(ENV_KIND, "").strip().lower()
            if env_kind and env_kind not in ("default", "thread", "dask"):
                raise ValueError(f"{ENV_KIND}={env_kind!r}: expected thread or dask")
            kind = env_kind or "default"  # type: ignore[assignment]
        update: dict[str, Any] = {"kind": kind}
        if kind == "dask":
            update["dask_address"] = self.dask_address or os.environ.get(ENV_ADDRESS) or None
            if ENV_WORKERS in os.environ and "dask_workers" not in self.model_fields_set:
                update["dask_workers"] = int(os.environ[ENV_WORKERS])
        return self.model_copy(update=update)


# -- the stages' own parameters ---------------------------------------------------------------

class IngestParams(DataDirParams, ShardingParams):
    """Everything `ingest_flow` needs, validated before any work starts."""

    manifests: list[Path] = Field(min_length=1, description="AVSpeech CSV (no header); "
                                                            "repeat for several")
    media_root: Path = Field(description="directory holding <youtube_id>.(mp4|webm|mkv)")
    split: str | None = Field(None, description="split of every manifest given (train | dev | "
                                                "test; default: the last word of each file "
                                                "name, e.g. avspeech_latest_train.csv -> train)")
    url_template: str = Field(DEFAULT_URL_TEMPLATE, description="download URL; {id} is replaced")
    download_retries: int = Field(2, ge=0, le=10, description="retries after a failed download")
    download_retry_delay_s: float = Field(
        5.0, ge=0, le=3600, description="first retry delay; doubles on each further retry")

    @field_validator("manifests")
    @classmethod
    def _manifests_exist(cls, paths: list[Path]) -> list[Path]:
        for path in paths:
            if not path.is_file():
                raise ValueError(f"manifest not found: {path}")
            manifest_name_of(path)  # names a table directory: must be a safe name
        names = [path.stem for path in paths]
        if len(set(names)) != len(names):
            raise ValueError(f"two manifests share a file stem: {names}")
        return [path.resolve() for path in paths]

    @field_validator("split")
    @classmethod
    def _split_known(cls, split: str | None) -> str | None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        return split

    def check_split_names(self) -> None:
        """Without an explicit split, every manifest's name must say its split (`split_of`)."""
        if self.split is None:
            for path in self.manifests:
                split_of(path.name)

    @field_validator("media_root")
    @classmethod
    def _media_root_is_dir(cls, path: Path) -> Path:
        if path.exists() and not path.is_dir():
            raise ValueError(f"media root is not a directory: {path}")
        return path.resolve()

    @field_validator("url_template")
    @classmethod
    def _template_has_id(cls, template: str) -> str:
        if "{id}" not in template or not template.startswith(("http://", "https://")):
            raise ValueError("url_template must be an http(s) URL containing {id}")
        return template

    def check_media_root(self) -> None:
        if not self.download and not self.media_root.is_dir():
            raise ValueError(f"media root not found: {self.media_root} (use --download to "
                             "create it and fetch the media)")


class PreprocessParams(DataDirParams, FaceParams):
    """Everything `preprocess_flow` needs, validated before any work starts."""

    retries: int = Field(2, ge=0, le=10, description="retries of a crashed shard task")
    workers: int = Field(0, ge=0, le=256,
                         description="processes per shard (0: one per CPU core)")

    @model_validator(mode="after")
    def _vggface_needs_weights(self) -> PreprocessParams:
        if self.encoder == "vggface" and (self.vggface_weights is None
                                          or not self.vggface_weights.is_file()):
            from s2f.faces.features import VggFaceWeightsMissing, load_vggface

            try:  # the library's message says what to get and where to pass it
                load_vggface(self.vggface_weights)
            except VggFaceWeightsMissing as exc:
                raise ValueError(str(exc)) from None
        return self


class TrainDecoderParams(DataDirParams):
    config: Literal["small", "paper"] = Field("small", description="model preset (default "
                                                                   "small: CPU-sized)")
    encoder: str = Field("dlib-resnet", description="face encoder whose features are used")
    steps: int | None = Field(None, ge=1, description="training steps (default: the preset's)")
    resume: bool = Field(False, description="continue from the last checkpoint")
    checkpoint_every: int | None = Field(None, ge=1, description="steps between checkpoints "
                                                                 "(default: the preset's)")
    device: str = Field("auto", description="auto | cpu | cuda")
    track: bool = Field(True, description="log to MLflow and register the model")


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


class TrainParams(TrainDecoderParams):
    decoder: Literal["checkpoint", "registry", "random"] = Field(
        "checkpoint", description="frozen face decoder: last checkpoint, the registry's "
                                  "challenger, or a fixed random projection (smoke tests only)")
    decoder_alias: str = Field(CHALLENGER, description="registry alias for decoder=registry")
    vggface_weights: Path | None = Field(None, description="VGG-Face weights: its fc8 turns the "
                                                           "distillation term on")
    # None: TrainConfig's default (the one source: s2f.train.config, which imports torch)
    voice_frontend: Literal["paper", "ge2e"] | None = Field(
        None, description="voice front-end: paper (the paper's CNN, trained from scratch) or "
                          "ge2e (resemblyzer's pretrained GE2E speaker encoder + a trained MLP "
                          "head); default: paper")
    ge2e_head_width: int | None = Field(None, ge=1, le=65_536,
                                        description="hidden width of the ge2e head (default: "
                                                    "TrainConfig's, 256)")
    ge2e_finetune: bool | None = Field(None, description="also train the ge2e speaker encoder "
                                                         "(default: frozen)")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="set any TrainConfig field, last (VALUE as JSON when "
                                          "it parses: --set batch_size=64 --set lr=2e-3); "
                                          "repeatable. Multi-GPU: the same flags under "
                                          "torchrun -m flows.torchrun")


    def frontend_overrides(self) -> dict[str, Any]:
        """The front-end flags that were given, as TrainConfig fields."""
        return {k: v for k in ("voice_frontend", "ge2e_head_width", "ge2e_finetune")
                if (v := getattr(self, k)) is not None}


class TrainSeedsParams(SeedsParams, BootstrapParams):
    train: TrainParams = Field(description="the voice encoder's training parameters")
    shuffled_control: bool = Field(False, description="also train the shuffled-voice control")

    def seed_params(self, i: int) -> TrainParams:
        base = int(self.train.overrides.get("seed", 0))
        return self.train.model_copy(update={"overrides": {**self.train.overrides,
                                                           "seed": base + i}})

    def control_params(self, preset_steps: int) -> TrainParams:
        """The control: the voice encoder's parameters (steps, schedule, selection, seed)
        with the face features shuffled; `control_steps` only when asked."""
        steps = self.control_steps or self.train.steps or preset_steps
        over = {**self.train.overrides, "shuffle_voices": True, "register_model": False,
                "run_name": "control: shuffled voices"}
        return self.train.model_copy(update={"steps": steps, "overrides": over})


class EvaluateParams(DataDirParams, BootstrapParams):
    model_uri: str = Field(registry_uri(VOICE_ENCODER_NAME, CHALLENGER),
                           description="voice encoder to evaluate")
    decoder_uri: str | None = Field(registry_uri(FACE_DECODER_NAME, CHALLENGER),
                                    description="face decoder; None skips reconstructions")
    identities: Path | None = Field(None, description="identities.parquet (default: "
                                                      "DATA_DIR/demo_corpus's, if present)")
    model_card: bool = Field(True, description="publish the model card to the registry")
    device: str = Field(DEFAULT_DEVICE, pattern=DEVICE_PATTERN,
                        description="auto | cpu | cuda | cuda:N: where the voice encoder, "
                                    "the decoder and the retrieval ranking run (auto: the GPU "
                                    "when there is one)")
    roles: list[Literal["dev", "test"]] = Field(
        default_factory=lambda: ["dev", "test"], min_length=1,
        description="splits to score: dev (for the gate), test (once per version, reported)")


class EvaluateSeedsParams(Params):
    evaluate: EvaluateParams
    versions: list[str] | None = Field(None, description="voice-encoder versions to evaluate "
                                                         "(None: the challenger only)")


class PromoteParams(DataDirParams, GateParams, BootstrapParams):
    allow_different_data: bool = Field(False, description="compare evaluations made on "
                                                          "different test snapshots (recorded)")
    evaluate_missing: bool = Field(True, description="evaluate versions without a row")
    decoder_uri: str | None = Field(None, description="decoder for missing evaluations "
                                                      "(default: the decoder's challenger)")


class PredictParams(DataDirParams):
    audio: list[Path] = Field(min_length=1, description="audio or video files")
    out: Path = Field(description="output directory")
    model_uri: str = Field(registry_uri(VOICE_ENCODER_NAME, CHAMPION), description="voice encoder")
    decoder_uri: str = Field(registry_uri(FACE_DECODER_NAME, CHAMPION), description="face decoder")
    seconds: float = Field(6.0, ge=MIN_PREDICT_SECONDS, le=MAX_PREDICT_SECONDS,
                           description="input length; shorter speech is repeated")


class StatusParams(DataDirParams):
    format: Literal["table", "csv"] = Field("table", description="output format")


class GcParams(DataDirParams):
    yes: bool = Field(False, description="remove them (without it: a dry run that lists what "
                                         "would be removed and its bytes)")


class DemoCorpusParams(CorpusSizeParams):
    out: Path = Field(description="output directory")


class IngestPairsParams(DataDirParams):
    """`ingest_pairs_flow`: a directory laid out like the Speech2Face project page -> `clips`."""

    pairs: Path = Field(description="directory with avspeech_res/, voxceleb/ and/or retrieve/ "
                                    "(a clone of the page's repository, or the shared copy)")
    split_seed: int = Field(0, description="seed of the person split (train/dev/test)")
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.1, 0.2), description="train, dev, test fractions of the persons (test only: "
                                     "0 0 1, for scoring another directory)")
    shard_size: int = Field(256, ge=1, le=100_000, description="pairs per shard")

    @field_validator("pairs")
    @classmethod
    def _pairs_is_dir(cls, path: Path) -> Path:
        if not path.is_dir():
            raise ValueError(f"pairs directory not found: {path}")
        return path.resolve()

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, f: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(f) < 0 or abs(sum(f) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, not {f}")
        return f


class RealPairsParams(DataDirParams, StepsParams, GateParams, SeedsParams, BootstrapParams):
    """`s2f real-pairs`: train and score on real voice-face pairs, or score on another dir."""

    pairs: Path | None = Field(None, description="pairs directory to train and evaluate on "
                                                 "(the page's layout: avspeech_res/, voxceleb/, "
                                                 "retrieve/)")
    score_on: Path | None = Field(None, description="instead: score this data dir's champion "
                                                    "(else challenger) on every pair of this "
                                                    "directory, all as test")
    split_seed: int = Field(0, description="seed of the person split")
    config: Literal["small", "paper"] = Field("small", description="model preset (default "
                                                                   "small: CPU-sized)")
    shuffled_control: bool = Field(True, description="train and score the shuffled-voice "
                                                     "control (same steps as the model)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="training device")
    voice_frontend: Literal["paper", "ge2e"] | None = Field(
        None, description="voice front-end: paper (the paper's CNN from scratch, the default) "
                          "or ge2e (a pretrained GE2E speaker encoder + a trained head)")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="set any TrainConfig field of the voice encoder "
                                          "(--set standardize_targets=true --set "
                                          "cosine_weight=1); repeatable")

    @model_validator(mode="after")
    def _one_source(self) -> RealPairsParams:
        if (self.pairs is None) == (self.score_on is None):
            raise ValueError("give exactly one of --pairs DIR (train and evaluate) and "
                             "--score-on DIR (score this data dir's model on another directory)")
        for path in (self.pairs, self.score_on):
            if path is not None and not path.is_dir():
                raise ValueError(f"pairs directory not found: {path}")
        return self


# The demo's voice-encoder training: the small preset plus these TrainConfig fields (the
# model and the shuffled control alike; logged as the run's params). Why: at the preset's lr
# 1e-3 with raw targets, 247-250 of the 256 fc1 ReLU units of the small CNN are dead within
# the first 60 steps (never positive on any training clip), so its predictions span 6
# dimensions of 128. Predicting z-scores of the face feature (the scaler starts every
# prediction at the train mean) at lr 1e-4 keeps 211 of 256 alive; on the demo corpus's dev
# split (seed 0, 800 steps) val loss 6.69 -> 6.41, cosine 23.0 -> 22.2 deg, recall@10 0.275 ->
# 0.350 (README, "How it is trained"). Real pairs and `s2f train` keep the preset as it is.
DEMO_TRAIN_OVERRIDES: dict[str, Any] = {"lr": 1e-4, "standardize_targets": True}


class DemoParams(DataDirParams, CorpusSizeParams, StepsParams, GateParams, SeedsParams):
    shuffled_control: bool = Field(True, description="train and score the shuffled-voice "
                                                     "control")


# -- the stages, in pipeline order ------------------------------------------------------------

Stage = Literal["ingest", "preprocess", "train-decoder", "train", "evaluate", "promote"]


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline: its flow, how the parent flow runs it, what it reads."""

    name: Stage
    flow: str                 # "module:attribute", imported when it runs (torch, MLflow)
    builder: str              # PipelineParams method that builds its parameters
    shard_level: bool         # its shard tasks run on the pipeline's task runner (or Dask)
    tracked: bool             # logs to MLflow: a row of the `pipeline-mlflow` artifact
    input_table: str          # hashed into the manifest snapshot when no manifest is read


STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "flows.ingest:ingest_flow", "ingest_params", True, False, "clips"),
    StageSpec("preprocess", "flows.preprocess:preprocess_flow", "preprocess_params", True, False,
              "clips"),
    StageSpec("train-decoder", "flows.train:train_decoder_flow", "train_decoder_params", False,
              True, "face_features"),
    StageSpec("train", "flows.train:train_seeds_flow", "train_seeds_params", False, True,
              "face_features"),
    StageSpec("evaluate", "flows.evaluate:evaluate_seeds_flow", "evaluate_seeds_params", False,
              True, "face_features"),
    StageSpec("promote", "flows.promote:promote_flow", "promote_params", False, True,
              "face_features"),
)
STAGE_NAMES: list[Stage] = [s.name for s in STAGES]
assert tuple(STAGE_NAMES) == get_args(Stage), "STAGES and Stage list the same stages"


def stage_spec(name: str) -> StageSpec:
    return STAGES[STAGE_NAMES.index(name)]  # type: ignore[arg-type]


class PipelineParams(DataDirParams, ShardingParams, FaceParams, StepsParams, BootstrapParams,
                     GateParams, SeedsParams):
    """Every knob of a pipeline run; validated before any stage starts."""

    manifests: list[Path] = Field(default_factory=list, description="AVSpeech CSV to ingest; "
                                                                    "repeat for several")
    manifest_dir: Path | None = Field(
        None, description="also ingest every *.csv in this directory (sorted): drop or append "
                          "manifests here and the nightly run picks up the new rows")
    media_root: Path | None = Field(None, description="directory holding "
                                                      "<youtube_id>.(mp4|webm|mkv)")
    stages: list[Stage] = Field(default_factory=lambda: list(STAGE_NAMES), min_length=1,
                                description="stages to run; they always run in pipeline order")
    preprocess_workers: int | None = Field(
        None, ge=0, le=256, description="processes per preprocess shard (0: one per core); "
                                        "default: 0, or 1 under Dask (its workers are the "
                                        "parallelism, and they cannot start processes)")
    runner: RunnerParams = Field(default_factory=RunnerParams,
                                 description="task runner of the shard-level stages")
    config: Literal["small", "paper"] = Field("small", description="model preset for training")
    resume: bool = Field(False, description="continue training from the last checkpoints")
    track: bool = Field(True, description="log to MLflow and register the models "
                                          "(evaluate and promote need the registry)")
    shuffled_control: bool = Field(False, description="also train and score the shuffled-voice "
                                                      "control (unregistered)")
    voice_frontend: Literal["paper", "ge2e"] | None = Field(
        None, description="voice front-end of the train stage (default: TrainConfig's, paper)")
    train_overrides: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields for the train stage (s2f train "
                                          "--set KEY=VALUE)")

    @field_validator("stages")
    @classmethod
    def _no_repeats(cls, stages: list[Stage]) -> list[Stage]:
        if len(set(stages)) != len(stages):
            raise ValueError(f"a stage is listed twice: {stages}")
        return [s for s in STAGE_NAMES if s in stages]

    def manifest_paths(self) -> list[Path]:
        paths = list(self.manifests)
        if self.manifest_dir is not None:
            if not self.manifest_dir.is_dir():
                raise ValueError(f"manifest_dir not found: {self.manifest_dir}")
            paths += sorted(p for p in self.manifest_dir.glob("*.csv") if p.is_file())
        return list(dict.fromkeys(p.resolve() for p in paths))

    def ingest_params(self) -> IngestParams:
        manifests = self.manifest_paths()
        if not manifests or self.media_root is None:
            raise ValueError("the ingest stage needs manifests (or a manifest_dir holding "
                             "*.csv) and a media root")
        params = IngestParams(manifests=manifests, media_root=self.media_root,
                              data_dir=self.data_dir, download=self.download,
                              shard_size=self.shard_size)
        params.check_media_root()
        return params

    def preprocess_params(self) -> PreprocessParams:
        workers = self.preprocess_workers
        if workers is None:
            workers = 1 if self.runner.resolved().kind == "dask" else 0
        return PreprocessParams(data_dir=self.data_dir, frames=self.frames,
                                detector=self.detector, encoder=self.encoder,
                                vggface_weights=self.vggface_weights, device=self.device,
                                workers=workers)

    def _train_common(self, steps: int | None) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "config": self.config, "encoder": self.encoder,
                "steps": steps, "resume": self.resume, "device": self.device,
                "track": self.track}

    def train_decoder_params(self) -> TrainDecoderParams:
        return TrainDecoderParams(**self._train_common(self.decoder_steps))

    def train_params(self) -> TrainParams:
        return TrainParams(**self._train_common(self.train_steps),
                           vggface_weights=self.vggface_weights,
                           voice_frontend=self.voice_frontend, overrides=self.train_overrides)

    def train_seeds_params(self) -> TrainSeedsParams:
        return TrainSeedsParams(train=self.train_params(), seeds=self.seeds,
                                shuffled_control=self.shuffled_control,
                                control_steps=self.control_steps, bootstrap=self.bootstrap)

    def evaluate_seeds_params(self) -> EvaluateSeedsParams:
        return EvaluateSeedsParams(evaluate=EvaluateParams(data_dir=self.data_dir,
                                                           bootstrap=self.bootstrap,
                                                           device=self.device))

    def promote_params(self) -> PromoteParams:
        return PromoteParams(data_dir=self.data_dir, margin=self.margin,
                             min_diversity=self.min_diversity, bootstrap=self.bootstrap)

    def stage_params(self) -> dict[str, BaseModel]:
        """Each selected stage's own parameters, in pipeline order; raises on the first bad one."""
        if not self.track and {"evaluate", "promote"} & set(self.stages) \
                and {"train-decoder", "train"} & set(self.stages):
            raise ValueError("evaluate/promote read the models that training registers: "
                             "keep track=true when training in the same run")
        return {stage: getattr(self, stage_spec(stage).builder)() for stage in self.stages}


# -- guard rails of scheduled runs (flows/guards.py; the flows' decorators read these) ---------
# Why: a run that hangs (a stuck download, a wedged GPU) must end, so that the schedule's
# `concurrency_limit` (CANCEL_NEW) frees the next run instead of cancelling it night after
# night. Each stage flow has a timeout; the stages one deployment runs add up to less than its
# schedule's period (tests/test_guards.py checks it for every scheduled deployment in
# prefect.yaml). Tasks have none: they run in worker threads, where Prefect cannot stop them
# (see flows/guards.py). A flow's timeout cannot interrupt C code until it returns either.
HOUR = 3600
FLOW_TIMEOUT_SECONDS: dict[str, int] = {
    "ingest": 8 * HOUR, "ingest-pairs": 8 * HOUR, "preprocess": 14 * HOUR,
    "train-decoder": 24 * HOUR, "train": 48 * HOUR, "train-seeds": 96 * HOUR,
    "evaluate": 6 * HOUR, "evaluate-seeds": 12 * HOUR, "promote": 6 * HOUR,
    "real-pairs": 96 * HOUR, "real-pairs-score-on": 24 * HOUR,
}
# Cross-host locks (with a Prefect server: global concurrency limits): how long a stage waits
# for its slot before it refuses with StageLocked, as the flock refuses at once; how many
# downloads may run at the same time on all hosts together.
STAGE_SLOT_WAIT_SECONDS = 3.0
MAX_CONCURRENT_DOWNLOADS = 4
