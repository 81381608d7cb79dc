"""`s2f`: the command line of the speech2face pipeline.

    s2f demo            [--data-dir DIR]        corpus -> ingest -> preprocess -> ... end to end
    s2f real-pairs      --pairs DIR             real voice-face pairs -> train, evaluate, report
    s2f demo-corpus     --out DIR               build the offline demo corpus (faces + voices)
    s2f pipeline        --data-dir DIR ...      the chosen stages as one Prefect run (Dask optional)
    s2f ingest          --manifest CSV ...      validate an AVSpeech manifest, probe media, cut audio
    s2f preprocess      --data-dir DIR          decode frames, detect/align faces, face features
    s2f train-decoder   --data-dir DIR          train the face decoder on faces + face features
    s2f train           --data-dir DIR          train the voice encoder [--config small|paper]
    s2f status          --data-dir DIR          one row per manifest line: furthest stage, reason
    s2f gc              --data-dir DIR [--yes]  list (remove) shards and audio no live shard needs
    s2f evaluate        --data-dir DIR          the paper's metrics on the test split -> MLflow, table
    s2f promote         --data-dir DIR          challenger -> champion only if better and not collapsed
    s2f predict         AUDIO... --out DIR      voice/video file -> labelled face image + feature

Generated: `COMMANDS` names each command's parameter model (`flows.params`), its handler and the
model fields it exposes as flags. A flag's type, choices, default and help come from the model's
field; argparse's default is None, so the model fills in whatever the user did not give.

Every command that touches a data directory keeps Prefect's and MLflow's state inside it
(SQLite), unless PREFECT_API_URL / MLFLOW_TRACKING_URI point at servers. This module stays
light: handlers (Prefect, torch, MLflow) are imported only once a command runs, after
`flows.runtime.configure()` has set their environment.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from flows import params as P

_SWITCH = object()  # Flag.const's "not a switch"


@dataclass(frozen=True)
class Flag:
    """One command-line flag for one field of the command's parameter model."""

    field: str                       # the model's field; "runner.kind" for a nested model's
    name: str | None = None          # default: --<field with dashes>
    const: Any = _SWITCH             # a switch (no value) that sets the field to `const`
    append: bool = False             # repeatable: one value per use
    nargs: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None  # default: the field's Literal values
    positional: bool = False
    convert: Callable[[Any], Any] | None = None  # the given value(s) -> the field's value
    help: str | None = None          # a switch's own help (the field's describes the field)

    @property
    def dest(self) -> str:
        return (self.name or self.field).lstrip("-").replace("-", "_").replace(".", "_")


@dataclass(frozen=True)
class Command:
    name: str
    model: type[BaseModel]
    handler: str                     # "module:function", imported when the command runs
    help: str
    description: str
    flags: tuple[Flag, ...]
    data_dir: bool = True            # configure Prefect and MLflow under the data directory


# -- the commands ---------------------------------------------------------------------------

_TRAIN_FLAGS = (Flag("data_dir"), Flag("config"), Flag("steps"), Flag("resume"),
                Flag("checkpoint_every"), Flag("encoder"), Flag("device"),
                Flag("track", "--no-track", const=False,
                     help="no MLflow logging/registration"))
_FACE_FLAGS = (Flag("frames"), Flag("detector"), Flag("encoder", metavar="ENCODER"),
               Flag("vggface_weights"), Flag("device"))
_TRAIN_DESCRIPTION = ("Train {what}; log to MLflow (experiment speech2face) and register the "
                      "model with alias challenger. Checkpoints under DATA_DIR/checkpoints; "
                      "--resume continues from the last one.")

COMMANDS: tuple[Command, ...] = (
    Command("demo", P.DemoParams, "flows.demo:run_demo_from_cli",
            "build the demo corpus and run the whole pipeline on it",
            "Build the built-in demo corpus under DATA_DIR/demo_corpus (if absent), run every "
            "stage on it end to end, predict faces for a few test voices, and print the report: "
            "the paper's tables from the evaluations table, the promotion decision, and where "
            "the images, tables, model card and the MLflow and Prefect UIs are (saved under "
            "DATA_DIR/reports too). Run it again to train and evaluate a new version; the gate "
            "decides.",
            (Flag("data_dir"), Flag("identities"), Flag("clips_per_identity"), Flag("seed"),
             Flag("decoder_steps"), Flag("train_steps"), Flag("margin"), Flag("min_diversity"),
             Flag("seeds"), Flag("control_steps"),
             Flag("shuffled_control", "--no-control", const=False,
                  help="skip the shuffled-voice control (saves its training time)"))),
    Command("pipeline", P.PipelineParams, "flows.pipeline:run_pipeline_from_cli",
            "run the chosen stages as one Prefect flow run",
            "Run the selected stages (in pipeline order) as subflows of one "
            "`speech2face-pipeline` run, the same flow the deployments in prefect.yaml run. "
            "Every parameter is checked before the first stage starts. Shard-level stages "
            "(ingest, preprocess) can run on Dask: --runner dask [--dask-address "
            "tcp://HOST:8786 | --dask-workers N], or S2F_TASK_RUNNER=dask.",
            (Flag("data_dir"), Flag("stages", nargs="+", metavar="STAGE"),
             Flag("manifests", "--manifest", append=True), Flag("manifest_dir"),
             Flag("media_root"), Flag("download"), Flag("shard_size"), *_FACE_FLAGS,
             Flag("config"), Flag("decoder_steps"), Flag("train_steps"), Flag("bootstrap"),
             Flag("runner.kind", "--runner"), Flag("runner.dask_address", "--dask-address"),
             Flag("runner.dask_workers", "--dask-workers"))),
    Command("real-pairs", P.RealPairsParams, "flows.real_pairs:run_real_pairs_from_cli",
            "train and score on real voice-face pairs, beside the paper's reconstructions",
            "With --pairs DIR (a directory laid out like the Speech2Face project page: "
            "avspeech_res/, voxceleb/, retrieve/; a clone of the page's repository works as it "
            "is): ingest the pairs into the clips table split by person (stratified by gender), "
            "preprocess the faces, train the face decoder and the voice encoder (N seeds and "
            "the shuffled-voice control at the same steps), evaluate on dev (picks the seed) and "
            "test (once), promote, and print the report: our rows beside the paper's own "
            "reconstructions (Face_exg0, Face_f2f) scored the same way, the mean face, the "
            "F0-only ridge, gender-only, the control and chance, with gender and age agreement "
            "(saved under DATA_DIR/reports with a contact sheet). With --score-on OTHER_DIR: "
            "score DATA_DIR's champion (else challenger) on every pair of OTHER_DIR, all as "
            "test. The data is read where it is, never copied into a release.",
            (Flag("pairs"), Flag("score_on"), Flag("data_dir"), Flag("seeds"),
             Flag("split_seed"), Flag("config"), Flag("decoder_steps"), Flag("train_steps"),
             Flag("control_steps"), Flag("device"), Flag("voice_frontend"),
             Flag("overrides", "--set", append=True, metavar="KEY=VALUE",
                  convert=P.parse_overrides),
             Flag("margin"), Flag("min_diversity"), Flag("bootstrap"),
             Flag("shuffled_control", "--no-control", const=False,
                  help="skip the shuffled-voice control (saves its training time)"))),
    Command("demo-corpus", P.DemoCorpusParams, "flows.cli:run_demo_corpus",
            "build the offline demo corpus of talking-head clips",
            "Synthesise AVSpeech-like talking-head clips offline: real photographs morphed into "
            "new identities, each speaking with an espeak-ng voice whose parameters are a "
            "documented function of the face. Writes media/, avspeech_train.csv, "
            "avspeech_dev.csv, avspeech_test.csv (split by real person), identities.parquet and "
            "DATA_CARD.md.",
            (Flag("out"), Flag("identities"), Flag("clips_per_identity"), Flag("seed")),
            data_dir=False),
    Command("ingest", P.IngestParams, "flows.ingest:run_from_cli",
            "ingest AVSpeech-format manifests into the clips table",
            "Validate every manifest line (youtube_id,start,end,x,y), find or download the "
            "media, probe it and cut the segment's audio to 16 kHz mono FLAC. Every line ends "
            "in `clips` with a status and a reason. Re-running is idempotent.",
            (Flag("manifests", "--manifest", append=True), Flag("media_root"), Flag("data_dir"),
             Flag("download"), Flag("shard_size"), Flag("split", choices=P.SPLITS),
             Flag("url_template"))),
    Command("preprocess", P.PreprocessParams, "flows.preprocess:run_from_cli",
            "decode frames, crop faces, compute face features",
            "For every ok clip: decode K frames with NVIDIA DALI (PyAV where DALI cannot), "
            "detect faces with dlib, align and crop them to 224x224 with kornia, and compute "
            "face features. Works on shards; a re-run skips finished shards.",
            (Flag("data_dir"), *_FACE_FLAGS)),
    Command("train-decoder", P.TrainDecoderParams, "flows.train:run_train_decoder_from_cli",
            "train the face decoder (Cole et al.) on faces + features",
            _TRAIN_DESCRIPTION.format(what="the face decoder (Cole et al.) on faces + features"),
            _TRAIN_FLAGS),
    Command("train", P.TrainParams, "flows.train:run_train_from_cli",
            "train the voice encoder against the frozen face decoder",
            _TRAIN_DESCRIPTION.format(what="the voice encoder against the frozen face decoder"),
            (*_TRAIN_FLAGS, Flag("decoder"), Flag("vggface_weights"), Flag("voice_frontend"),
             Flag("ge2e_head_width"),
             Flag("ge2e_finetune", const=True, help="also train the pretrained ge2e speaker "
                                                    "encoder (default: frozen)"),
             Flag("overrides", "--set", append=True, metavar="KEY=VALUE",
                  convert=P.parse_overrides))),
    Command("status", P.StatusParams, "flows.cli:run_status",
            "one row per manifest line: furthest stage and why",
            "Report every manifest line with the furthest stage it reached, its status and the "
            "reason it stopped, then counts by status.",
            (Flag("data_dir"), Flag("format")), data_dir=False),
    Command("gc", P.GcParams, "flows.cli:run_gc",
            "list, then remove, what no live shard needs (dry run by default)",
            "List what the data directory holds that no live shard needs, with its bytes: "
            "shards of an earlier shard size that ingest and preprocess moved aside (once live "
            "shards hold all their lines), preprocess outputs whose clips shard is gone, and "
            "audio no clips row names. Nothing is removed without --yes; a live shard is never "
            "listed. Holds the ingest and preprocess locks: exit 3 while one of them runs.",
            (Flag("data_dir"), Flag("yes")), data_dir=False),
    Command("evaluate", P.EvaluateParams, "flows.evaluate:run_evaluate_from_cli",
            "score a registered voice encoder on the test split",
            "Feature similarity (3 s and 6 s input), recall@K with bootstrap CIs against the "
            "test identities, the mean-face baseline, diversity, craniofacial correlations and "
            "figures, logged to MLflow and to the `evaluations` table; publishes the model card "
            "to the registry.",
            (Flag("data_dir"), Flag("model_uri"), Flag("decoder_uri"),
             Flag("decoder_uri", "--no-decoder", const=None,
                  help="skip the reconstruction metrics and the face grid"),
             Flag("identities"),
             Flag("bootstrap"))),
    Command("promote", P.PromoteParams, "flows.promote:run_promote_from_cli",
            "move `champion` to the challenger if it is better",
            "Compare speech2face-voice-encoder@challenger with @champion on the same dev "
            "snapshot: promote only when recall@10 (6 s) gains more than --margin without a "
            "worse cosine distance, and never a collapsed model (diversity below "
            "--min-diversity). Exit 1 when the challenger is refused.",
            (Flag("data_dir"), Flag("margin"), Flag("min_diversity"),
             Flag("allow_different_data"), Flag("evaluate_missing", "--no-evaluate", const=False,
                  help="use existing evaluations only; never evaluate a missing one"),
             Flag("decoder_uri"), Flag("bootstrap"))),
    Command("predict", P.PredictParams, "flows.predict:run_predict_from_cli",
            "voice or video file(s) -> face image, feature, sidecar",
            "Decode any common audio/video file (wav, flac, mp3, m4a, mp4, webm) to 16 kHz "
            "mono, check it holds at least 1 s of speech, and write OUT/<name>.png (labelled "
            "with the model and a notice that it is a statistical reconstruction, not the "
            "speaker's face), <name>.npy and <name>.json.",
            (Flag("audio", positional=True, nargs="+"), Flag("out"), Flag("data_dir"),
             Flag("model_uri"), Flag("decoder_uri"), Flag("seconds"))),
)
COMMAND_BY_NAME = {c.name: c for c in COMMANDS}


# -- the three commands that are not flows ------------------------------------------------------

def run_demo_corpus(params: P.DemoCorpusParams) -> int:
    from s2f.corpus.build import CorpusConfig, build_demo_corpus

    print(build_demo_corpus(CorpusConfig(
        out=params.out, identities=params.identities,
        clips_per_identity=params.clips_per_identity, seed=params.seed)).describe())
    return 0


def run_status(params: P.StatusParams) -> int:
    from storage.layout import DataLayout
    from storage.status import print_status

    return print_status(DataLayout(params.data_dir), fmt=params.format, out=sys.stdout)


def run_gc(params: P.GcParams) -> int:
    from storage.gc import print_gc
    from storage.layout import DataLayout
    from storage.lock import StageLocked

    if not (params.data_dir / "tables").is_dir():
        print(f"s2f gc: {params.data_dir} holds no tables", file=sys.stderr)
        return 2
    try:
        return print_gc(DataLayout(params.data_dir), params.yes)
    except StageLocked as exc:
        print(f"s2f gc: {exc}", file=sys.stderr)
        return 3


# -- generating the parser from the models ----------------------------------------------------

def _field(model: type[BaseModel], dotted: str) -> FieldInfo:
    """The FieldInfo of `runner.kind`-style names (a nested model's field)."""
    head, _, rest = dotted.partition(".")
    info = model.model_fields[head]
    return _field(info.annotation, rest) if rest else info  # type: ignore[arg-type]


def _base_type(annotation: Any) -> tuple[Any, tuple[str, ...] | None]:
    """(the argparse type, the Literal choices) of `X | None`, `list[X]`, `Literal[...]`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        return _base_type(args[0])
    if origin is typing.Literal:
        return str, tuple(str(a) for a in args)
    return annotation, None


def _default_text(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if default is PydanticUndefined or default is None or isinstance(default, bool | dict):
        return ""
    if "default" in (info.description or ""):
        return ""
    if isinstance(default, list):
        return f" (default: {' '.join(map(str, default))})" if default else ""
    return f" (default {default})"


def _add_flag(parser: argparse.ArgumentParser, model: type[BaseModel], flag: Flag) -> None:
    info = _field(model, flag.field)
    help_text = flag.help or (info.description or "") + _default_text(info)
    if flag.const is not _SWITCH or info.annotation is bool:
        parser.add_argument(flag.name or "--" + flag.field.replace("_", "-"), dest=flag.dest,
                            action="store_true", default=None, help=help_text)
        return
    kind, choices = _base_type(info.annotation)
    if flag.convert is not None:
        kind = str  # e.g. KEY=VALUE strings, turned into the field's value by `convert`
    options: dict[str, Any] = {"type": kind, "help": help_text,
                               "choices": flag.choices or choices}
    if flag.metavar:
        options["metavar"] = flag.metavar
    if flag.nargs:
        options["nargs"] = flag.nargs
    if flag.positional:
        parser.add_argument(flag.dest, **options)
        return
    if flag.append:
        options["action"] = "append"
    parser.add_argument(flag.name or "--" + flag.field.replace("_", "-"), dest=flag.dest,
                        default=None, required=info.is_required(), **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2f",
        description="Speech2Face pipeline (Oh et al., CVPR 2019): learn the face behind a voice "
                    "from talking-head videos. Stages hand each other Parquet tables under one "
                    "data directory; each stage is a Prefect flow; models are tracked in MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `s2f COMMAND --help` for a command's options.",
    )
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or progress log lines (also: S2F_QUIET=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        for flag in command.flags:
            _add_flag(p, command.model, flag)
    return parser


def _values(command: Command, args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as the model's (nested) fields; switches set their const."""
    values: dict[str, Any] = {}
    for flag in command.flags:
        given = getattr(args, flag.dest)
        if given is None:
            continue
        value = flag.const if flag.const is not _SWITCH else given
        if flag.convert is not None:
            value = flag.convert(value)
        *parents, leaf = flag.field.split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return values


def command_params(args: argparse.Namespace, prog: str) -> tuple[Command, BaseModel] | None:
    """The parsed command and its validated parameters, or None after saying what is wrong
    (pydantic's message names the field)."""
    command = COMMAND_BY_NAME[args.command]
    try:
        return command, command.model.model_validate(_values(command, args))
    except ValueError as exc:  # pydantic's ValidationError, or a convert's (--set KEY=VALUE)
        print(f"{prog}: invalid parameters:\n{exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        from s2f.progress import set_quiet

        set_quiet(True)  # through the environment: task workers and subprocesses inherit it
    parsed = command_params(args, f"s2f {args.command}")
    if parsed is None:
        return 2
    command, params = parsed
    prog = f"s2f {args.command}"
    if command.data_dir and not _configured(prog, params.data_dir):  # type: ignore[attr-defined]
        return 2
    module, function = command.handler.split(":")
    try:
        return int(getattr(importlib.import_module(module), function)(params) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a full disk ends with one line; anything else keeps its traceback
        from storage.space import prefect_database_note, storage_full_message

        line = storage_full_message(exc, getattr(params, "data_dir", None) or Path("."))
        if line is None:
            raise
        print(f"{prog}: {line}", file=sys.stderr)
        if (note := prefect_database_note()) and "Prefect's database" not in line:
            print(f"{prog}: {note}", file=sys.stderr)
        return 1


def _configured(prog: str, data_dir: Path) -> bool:
    """`flows.runtime.configure`, or False after one line on why the data directory cannot be
    used: not writable, or below the free-space reserve (`storage.space`). Said before Prefect
    and MLflow open their databases in it."""
    from flows.runtime import configure
    from storage.layout import DataDirNotWritable
    from storage.space import DiskFull

    try:
        configure(data_dir)
    except DataDirNotWritable as exc:
        print(f"{prog}: {exc.strerror}", file=sys.stderr)
    except DiskFull as exc:
        print(f"{prog}: the data directory {exc.filename} cannot be used: {exc.strerror}",
              file=sys.stderr)
    except ValueError as exc:  # S2F_MIN_FREE_MB is not a number
        print(f"{prog}: {exc}", file=sys.stderr)
    else:
        return True
    return False


if __name__ == "__main__":
    raise SystemExit(main())

