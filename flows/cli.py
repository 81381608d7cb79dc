"""`s2f`: the command line of the speech2face pipeline.

    s2f demo            [--data-dir DIR]        corpus -> ingest -> preprocess -> ... end to end
    s2f demo-corpus     --out DIR               build the offline demo corpus (faces + voices)
    s2f ingest          --manifest CSV ...      validate an AVSpeech manifest, probe media, cut audio
    s2f preprocess      --data-dir DIR          decode frames, detect/align faces, face features
    s2f status          --data-dir DIR          one row per manifest line: furthest stage, reason

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


def _cmd_status(args: argparse.Namespace) -> int:
    from storage.layout import DataLayout
    from storage.status import print_status

    return print_status(DataLayout(args.data_dir), fmt=args.format, out=sys.stdout)


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.runtime import configure

    configure(args.data_dir)
    from flows.pipeline import run_demo_from_cli

    return run_demo_from_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2f",
        description="Speech2Face pipeline (Oh et al., CVPR 2019): learn the face behind a voice "
                    "from talking-head videos. Stages hand each other Parquet tables under one "
                    "data directory; each stage is a Prefect flow; models are tracked in MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `s2f COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="build the demo corpus and run the whole pipeline on it",
                       description="Build the built-in demo corpus under DATA_DIR/demo_corpus "
                                   "(if absent) and run every stage on it, end to end.")
    _data_dir(p)
    p.add_argument("--identities", type=int, default=120, help="identities in the corpus (default 120)")
    p.add_argument("--clips-per-identity", type=int, default=3, help="clips per identity (default 3)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("demo-corpus", help="build the offline demo corpus of talking-head clips",
                       description="Synthesise AVSpeech-like talking-head clips offline: real "
                                   "photographs morphed into new identities, each speaking with "
                                   "an espeak-ng voice whose parameters are a documented function "
                                   "of the face. Writes media/, avspeech_train.csv, "
                                   "avspeech_test.csv, identities.parquet and DATA_CARD.md.")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--identities", type=int, default=120, help="number of identities (default 120)")
    p.add_argument("--clips-per-identity", type=int, default=3, help="clips per identity (default 3)")
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

    p = sub.add_parser("status", help="one row per manifest line: furthest stage and why",
                       description="Report every manifest line with the furthest stage it reached, "
                                   "its status and the reason it stopped, then counts by status.")
    _data_dir(p)
    p.add_argument("--format", choices=["table", "csv"], default="table", help="output format")
    p.set_defaults(handler=_cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
