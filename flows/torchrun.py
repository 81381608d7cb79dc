"""`torchrun` entry point: train the voice encoder on several processes with `s2f train`'s flags.

    # one node, 8 GPUs (NCCL, one GPU per process)
    torchrun --standalone --nproc-per-node 8 -m flows.torchrun --data-dir D --config paper
    # two nodes: run on each, same endpoint (a host:port on the first node)
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-id s2f \\
             --rdzv-endpoint node0:29400 -m flows.torchrun --data-dir D --config paper
    # CPU processes (gloo), e.g. to try it on a laptop
    torchrun --standalone --nproc-per-node 2 -m flows.torchrun --data-dir D --device cpu

Every rank parses the same flags as `s2f train` (`--config`, `--steps`, `--resume`,
`--decoder`, `--set KEY=VALUE`, ...), joins the process group (`s2f.train.distributed.init`)
and runs the `train` task's body (`flows.train.train_voice`) without Prefect. `batch_size` is
the global batch, so the same config is the same optimisation at any process count. Rank 0
holds the data directory's `train` stage lock, writes `DATA_DIR/checkpoints/voice_encoder`,
logs the MLflow run and registers the model; every rank prints one line
`rank R/W: step S, weights sha1 H` (equal digests: identical replicas), rank 0 the summary.
Exit codes as `s2f train`: 0 done, 1 failed, 2 bad parameters, 3 the stage lock is held.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

from flows.params import TrainParams
from s2f.train import distributed


def main(argv: list[str] | None = None) -> int:
    from flows.cli import build_parser, command_params
    from flows.runtime import configure

    args = build_parser().parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    parsed = command_params(args, "flows.torchrun")
    if parsed is None:
        return 2
    params = parsed[1]
    assert isinstance(params, TrainParams)
    layout = configure(params.data_dir)
    from flows.train import run_summary, train_voice
    from s2f.train.checkpoint import checkpoint_dir
    from storage.io import remove_stale_temps
    from storage.lock import StageLocked, stage_lock

    ctx = distributed.init(params.device)
    try:
        with ExitStack() as stack:
            refused = None
            if ctx.is_main:  # one job per data directory, as `s2f train` (a per-host flock)
                try:
                    stack.enter_context(stage_lock(layout, "train"))
                    remove_stale_temps([checkpoint_dir(layout, "voice_encoder")])
                except StageLocked as exc:
                    refused = str(exc)
            refused = ctx.broadcast(refused)
            if refused is not None:
                print(f"flows.torchrun: {refused}", file=sys.stderr)
                return 3
            res = train_voice(params)
            print(f"rank {ctx.rank}/{ctx.world}: step {res.step}, weights sha1 "
                  f"{distributed.state_digest(res.model)}", flush=True)
            ctx.barrier()  # rank 0's checkpoint and registration are done for every rank
        if ctx.is_main:
            for k, v in run_summary(res).printed().items():
                print(f"  {k:<14} {v}")
        return 0
    finally:
        distributed.teardown()


if __name__ == "__main__":
    raise SystemExit(main())
