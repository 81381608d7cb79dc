"""`s2f`: the command line of the speech2face pipeline.

    s2f demo            [--data-dir DIR]        corpus -> ingest -> preprocess -> ... end to end
    s2f demo-corpus     --out DIR               build the offline demo corpus (faces + voices)
    s2f pipeline        --data-dir DIR ...      the chosen stages as one Prefect run (Dask optional)
    s2f ingest          --manifest CSV ...      validate an AVSpeech manifest, probe media, cut audio
    s2f preprocess      --data-dir DIR          decode frames, detect/align faces, face features
    s2f train-decoder   --data-dir DIR          train the face decoder on faces + face features
    s2f train           --data-dir DIR          train the voice encoder [--config small|paper]
    s2f status          --data-dir DIR          one row per manifest line: furthest stage, reason
    s2f evaluate        --data-dir DIR          the paper's metrics on the test split -> MLflow, table
    s2f promote         --data-dir DIR          challenger -> champion only if better and not collapsed
    s2f predict         AUDIO... --out DIR      voice/video file -> labelled face image + feature

Every command that touches a data directory keeps Prefect's and MLflow's state inside it
(SQLite), unless PREFECT_API_URL / MLFLOW_TRACKING_URI point at servers.
This module stays light: Prefect and the heavy libraries are imported only once a command runs,
after `flows.runtime.configure()` has set their environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from flows.runtime import DEFAULT_DATA_DIR
from s2f.corpus import DEMO_CLIPS_PER_IDENTITY, DEMO_IDENTITIES

Handler = Callable[[argparse.Namespace], int]


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"the pipeline's data directory: tables, audio, MLflow and Prefect state "
                        f"(default: ./{DEFAULT_DATA_DIR})")


def _cmd_demo_corpus(args: argparse.Namespace) -> int:
    from s2f.corpus.build import CorpusConfig, build_demo_corpus

    summary = build_demo_corpus(CorpusConfig(
        out=args.out, identities=args.identities, clips_per_identity=args.clips_per_identity,
        seed=args.seed))
    print(summary.describe())
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.ingest import run_from_cli

    return run_from_cli(args)


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.preprocess import run_from_cli

    return run_from_cli(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.train import run_from_cli

    return run_from_cli(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from storage.layout import DataLayout
    from storage.status import print_status

    return print_status(DataLayout(args.data_dir), fmt=args.format, out=sys.stdout)


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.pipeline import run_demo_from_cli

    return run_demo_from_cli(args)


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.pipeline import run_pipeline_from_cli

    return run_pipeline_from_cli(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.evaluate import run_evaluate_from_cli

    return run_evaluate_from_cli(args)


def _cmd_promote(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.evaluate import run_promote_from_cli

    return run_promote_from_cli(args)


def _cmd_predict(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.evaluate import run_predict_from_cli

    return run_predict_from_cli(args)


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

    p = sub.add_parser("demo", help="build the demo corpus and run the whole pipeline on it",
                       description="Build the built-in demo corpus under DATA_DIR/demo_corpus "
                                   "(if absent), run every stage on it end to end, predict faces "
                                   "for a few test voices, and print the report: the paper's "
                                   "tables from the evaluations table, the promotion decision, "
                                   "and where the images, tables, model card and the MLflow and "
                                   "Prefect UIs are (saved under DATA_DIR/reports too). Run it "
                                   "again to train and evaluate a new version; the gate decides.")
    _data_dir(p)
    p.add_argument("--identities", type=int, default=DEMO_IDENTITIES,
                   help=f"identities in the corpus (default {DEMO_IDENTITIES})")
    p.add_argument("--clips-per-identity", type=int, default=DEMO_CLIPS_PER_IDENTITY,
                   help=f"clips per identity (default {DEMO_CLIPS_PER_IDENTITY})")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    p.add_argument("--decoder-steps", type=int, default=None,
                   help="face decoder training steps (default: the small preset's)")
    p.add_argument("--train-steps", type=int, default=None,
                   help="voice encoder training steps (default: the small preset's)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="recall@10 gain the new model needs over the champion (default 0)")
    p.add_argument("--min-diversity", type=float, default=0.2,
                   help="promotion floor on the spread of the predictions / the spread of the "
                        "true faces (default 0.2; 0 lets a collapsed model through: smoke tests)")
    p.add_argument("--seeds", type=int, default=1,
                   help="voice-encoder seeds to train and evaluate (default 1); the report gives "
                        "mean ± sd over seeds and the dev-best seed goes to the gate")
    p.add_argument("--control-steps", type=int, default=None,
                   help="training steps of the shuffled-voice control (default: a quarter of "
                        "the voice encoder's)")
    p.add_argument("--no-control", action="store_true",
                   help="skip the shuffled-voice control (saves its training time)")
    p.set_defaults(handler=_cmd_demo)

    stages = ["ingest", "preprocess", "train-decoder", "train", "evaluate", "promote"]
    p = sub.add_parser("pipeline", help="run the chosen stages as one Prefect flow run",
                       description="Run the selected stages (in pipeline order) as subflows of "
                                   "one `speech2face-pipeline` run, the same flow the "
                                   "deployments in prefect.yaml run. Every parameter is checked "
                                   "before the first stage starts. Shard-level stages (ingest, "
                                   "preprocess) can run on Dask: --runner dask [--dask-address "
                                   "tcp://HOST:8786 | --dask-workers N], or S2F_TASK_RUNNER=dask.")
    _data_dir(p)
    p.add_argument("--stages", nargs="+", choices=stages, default=stages, metavar="STAGE",
                   help=f"stages to run (default all: {' '.join(stages)})")
    p.add_argument("--manifest", type=Path, action="append", default=None,
                   help="AVSpeech CSV to ingest; repeat for several")
    p.add_argument("--manifest-dir", type=Path, default=None,
                   help="also ingest every *.csv in this directory")
    p.add_argument("--media-root", type=Path, default=None,
                   help="directory holding <youtube_id>.(mp4|webm|mkv)")
    p.add_argument("--download", action="store_true", help="fetch missing media with yt-dlp")
    p.add_argument("--shard-size", type=int, default=256, help="manifest lines per shard")
    p.add_argument("--frames", type=int, default=3, help="frames sampled per clip")
    p.add_argument("--detector", choices=["hog", "cnn"], default="hog", help="dlib detector")
    p.add_argument("--encoder", default="dlib-resnet", help="dlib-resnet or vggface")
    p.add_argument("--vggface-weights", type=Path, default=None, help="VGG-Face weights (.pt)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--config", choices=["small", "paper"], default="small",
                   help="model preset for training")
    p.add_argument("--decoder-steps", type=int, default=None, help="face decoder steps")
    p.add_argument("--train-steps", type=int, default=None, help="voice encoder steps")
    p.add_argument("--bootstrap", type=int, default=1000, help="evaluation bootstrap resamples")
    p.add_argument("--runner", choices=["default", "thread", "dask"], default="default",
                   help="task runner of ingest/preprocess (default: each flow's own, or "
                        "S2F_TASK_RUNNER)")
    p.add_argument("--dask-address", default=None,
                   help="scheduler of a running Dask cluster (default: S2F_DASK_ADDRESS, else "
                        "a LocalCluster)")
    p.add_argument("--dask-workers", type=int, default=None,
                   help="LocalCluster worker processes (default 2)")
    p.set_defaults(handler=_cmd_pipeline)

    p = sub.add_parser("demo-corpus", help="build the offline demo corpus of talking-head clips",
                       description="Synthesise AVSpeech-like talking-head clips offline: real "
                                   "photographs morphed into new identities, each speaking with "
                                   "an espeak-ng voice whose parameters are a documented function "
                                   "of the face. Writes media/, avspeech_train.csv, "
                                   "avspeech_dev.csv, avspeech_test.csv (split by real person), "
                                   "identities.parquet and DATA_CARD.md.")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--identities", type=int, default=DEMO_IDENTITIES,
                   help=f"number of identities (default {DEMO_IDENTITIES})")
    p.add_argument("--clips-per-identity", type=int, default=DEMO_CLIPS_PER_IDENTITY,
                   help=f"clips per identity (default {DEMO_CLIPS_PER_IDENTITY})")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same corpus (default 0)")
    p.set_defaults(handler=_cmd_demo_corpus)

    p = sub.add_parser("ingest", help="ingest AVSpeech-format manifests into the clips table",
                       description="Validate every manifest line (youtube_id,start,end,x,y), find "
                                   "or download the media, probe it and cut the segment's audio "
                                   "to 16 kHz mono FLAC. Every line ends in `clips` with a status "
                                   "and a reason. Re-running is idempotent.")
    p.add_argument("--manifest", type=Path, action="append", required=True,
                   help="AVSpeech CSV (no header); repeat for several")
    p.add_argument("--media-root", type=Path, required=True,
                   help="directory holding <youtube_id>.(mp4|webm|mkv)")
    _data_dir(p)
    p.add_argument("--download", action="store_true",
                   help="fetch missing media with yt-dlp (validated ids only)")
    p.add_argument("--shard-size", type=int, default=256, help="manifest lines per shard (default 256)")
    p.add_argument("--split", choices=("train", "dev", "test"), default=None,
                   help="split of every --manifest given (default: the last word of each "
                        "file name, e.g. avspeech_latest_train.csv -> train)")
    p.add_argument("--url-template", default=None,
                   help="download URL with {id} (default https://www.youtube.com/watch?v={id})")
    p.set_defaults(handler=_cmd_ingest)

    p = sub.add_parser("preprocess", help="decode frames, crop faces, compute face features",
                       description="For every ok clip: decode K frames with NVIDIA DALI (PyAV "
                                   "where DALI cannot), detect faces with dlib, align and crop "
                                   "them to 224x224 with kornia, and compute face features. "
                                   "Works on shards; a re-run skips finished shards.")
    _data_dir(p)
    p.add_argument("--frames", type=int, default=3, help="frames sampled per clip (default 3)")
    p.add_argument("--detector", choices=["hog", "cnn"], default="hog",
                   help="dlib face detector (default hog)")
    p.add_argument("--encoder", default="dlib-resnet",
                   help="face encoder: dlib-resnet (default) or vggface")
    p.add_argument("--vggface-weights", type=Path, default=None,
                   help="converted VGG-Face weights (.pt) for --encoder vggface")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="decode (NVDEC) and align on the GPU when there is one (default auto)")
    p.set_defaults(handler=_cmd_preprocess)

    for name, what in (("train-decoder", "the face decoder (Cole et al.) on faces + features"),
                       ("train", "the voice encoder against the frozen face decoder")):
        p = sub.add_parser(name, help=f"train {what}",
                           description=f"Train {what}; log to MLflow (experiment speech2face) "
                                       "and register the model with alias challenger. "
                                       "Checkpoints under DATA_DIR/checkpoints; --resume "
                                       "continues from the last one.")
        _data_dir(p)
        p.add_argument("--config", choices=["small", "paper"], default="small",
                       help="model preset (default small: CPU-sized)")
        p.add_argument("--steps", type=int, default=None, help="training steps (default: preset)")
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        p.add_argument("--checkpoint-every", type=int, default=None,
                       help="steps between checkpoints (default: the preset's)")
        p.add_argument("--encoder", default="dlib-resnet",
                       help="face encoder whose features are used (default dlib-resnet)")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
        p.add_argument("--no-track", action="store_true", help="no MLflow logging/registration")
        if name == "train":
            p.add_argument("--decoder", choices=["checkpoint", "registry", "random"],
                           default="checkpoint",
                           help="frozen face decoder: last checkpoint (default), the registry's "
                                "challenger, or a fixed random projection (smoke tests only)")
            p.add_argument("--vggface-weights", type=Path, default=None,
                           help="VGG-Face weights: its fc8 turns the distillation term on")
            p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="set any TrainConfig field, last (VALUE as JSON when it parses: "
                                "--set batch_size=64 --set lr=2e-3); repeatable. Multi-GPU: "
                                "the same flags under torchrun -m flows.torchrun")
        p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("status", help="one row per manifest line: furthest stage and why",
                       description="Report every manifest line with the furthest stage it reached, "
                                   "its status and the reason it stopped, then counts by status.")
    _data_dir(p)
    p.add_argument("--format", choices=["table", "csv"], default="table", help="output format")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("evaluate", help="score a registered voice encoder on the test split",
                       description="Feature similarity (3 s and 6 s input), recall@K with "
                                   "bootstrap CIs against the test identities, the mean-face "
                                   "baseline, diversity, craniofacial correlations and figures, "
                                   "logged to MLflow and to the `evaluations` table; publishes "
                                   "the model card to the registry.")
    _data_dir(p)
    p.add_argument("--model-uri", default="models:/speech2face-voice-encoder@challenger",
                   help="voice encoder (default: %(default)s)")
    p.add_argument("--decoder-uri", default="models:/speech2face-face-decoder@challenger",
                   help="face decoder (default: %(default)s)")
    p.add_argument("--no-decoder", action="store_true",
                   help="skip the reconstruction metrics and the face grid")
    p.add_argument("--identities", type=Path, default=None,
                   help="identities.parquet (default: DATA_DIR/demo_corpus's, if present)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("promote", help="move `champion` to the challenger if it is better",
                       description="Compare speech2face-voice-encoder@challenger with @champion "
                                   "on the same test snapshot: promote only when recall@10 "
                                   "(6 s) gains more than --margin without a worse cosine "
                                   "distance, and never a collapsed model (diversity below "
                                   "--min-diversity). Exit 1 when the challenger is refused.")
    _data_dir(p)
    p.add_argument("--margin", type=float, default=0.0, help="recall@10 gain needed (default 0)")
    p.add_argument("--min-diversity", type=float, default=0.2,
                   help="floor on prediction spread / true-feature spread (default 0.2)")
    p.add_argument("--allow-different-data", action="store_true",
                   help="compare evaluations made on different test snapshots (recorded)")
    p.add_argument("--no-evaluate", action="store_true",
                   help="use existing evaluations only; never evaluate a missing one")
    p.add_argument("--decoder-uri", default=None,
                   help="decoder for missing evaluations (default: the decoder's challenger)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(handler=_cmd_promote)

    p = sub.add_parser("predict", help="voice or video file(s) -> face image, feature, sidecar",
                       description="Decode any common audio/video file (wav, flac, mp3, m4a, "
                                   "mp4, webm) to 16 kHz mono, check it holds at least 1 s of "
                                   "speech, and write OUT/<name>.png (labelled with the model "
                                   "and a notice that it is a statistical reconstruction, not "
                                   "the speaker's face), <name>.npy and <name>.json.")
    p.add_argument("audio", type=Path, nargs="+", help="audio or video files")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    _data_dir(p)
    p.add_argument("--model-uri", default="models:/speech2face-voice-encoder@champion",
                   help="voice encoder (default: %(default)s)")
    p.add_argument("--decoder-uri", default="models:/speech2face-face-decoder@champion",
                   help="face decoder (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=6.0,
                   help="input length; shorter speech is repeated (default 6)")
    p.set_defaults(handler=_cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        from s2f.progress import set_quiet

        set_quiet(True)  # through the environment: task workers and subprocesses inherit it
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
