"""Multi-process training under torchrun (gloo on CPU) is the one-process optimisation.

One process trains the tiny voice encoder 2 of 6 steps (global batch 4) into the data
directory's checkpoint; `torchrun --nproc-per-node 2 -m flows.torchrun --resume` carries on to
step 6 with 2 pairs per rank (synchronised BatchNorm, DDP-averaged gradients, validation at
steps 4 and 6 summed over ranks; every rank loads rank 0's copy of the checkpoint). Golden
check: the weights equal those of one process training all 6 steps, to float rounding; both
ranks end bit-identical (their weight digests); only rank 0 logged (one MLflow run, one
registered version) and wrote the checkpoint, whose state dict has no DDP `module.` prefix. One torchrun launch: ~45 s of CPU time, 80 s wall on 2 loaded cores.

Why it is deterministic on any x86_64 CPU: the two computations are not the same float32
arithmetic. Each rank convolves 2 pairs, the reference 4; torchrun sets OMP_NUM_THREADS=1 in its
workers while pytest ran the reference on every core; oneDNN picks its kernels (and so its
summation order) by ISA (AVX2, AVX-512, AMX) and thread count. float32 rounding (~1e-7 relative)
then reaches the max-pools, and where two inputs of a pool are that close the winner flips and
the gradient goes elsewhere: it passed at 1e-7 on the AMD EPYC it was written on and failed at
>2e-5 on a Xeon with AVX-512/AMX. So the encoder trains in float64 here (`float64=True`: the
spectrogram is cast up, its output back down to float32 for the loss, which is identical per
sample on both sides), and the reference runs on one thread like the ranks. Rounding in the
encoder is then ~1e-16 relative; what is left are the float32 loss gradients (~1e-7 relative,
batch-size dependent GEMM blocking) entering float64 weights through Adam (lr 1e-3, step
~lr·g/sqrt(v)), ~1e-10 per weight per step; a pool tie closer than that is ~1e-4 likely over
the whole run, and the tolerance below leaves 4 orders of magnitude above it.

    pytest tests/test_train_ddp.py

The CUDA/NCCL path (one GPU per process, nn.SyncBatchNorm) is the same code but needs GPUs;
it is not run here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from s2f.train.config import TrainConfig
from s2f.train.synthetic import SyntheticCorpus, build
from s2f.train.voice import train_voice_encoder
from storage.layout import DataLayout

ROOT = Path(__file__).resolve().parents[1]
CORPUS = SyntheticCorpus(identities=20, clips_per_identity=2, test_identities=2, dim=8,
                         seconds=0.6, faces=False, shard_size=8)
# The tiny model of tests/test_train.py; validation every 2 steps (summed over ranks) feeds
# the best-validation selection. Contiguous memory: torch's CPU BatchNorm2d in training mode is
# ~1e-4 (relative) off in channels-last (8e-8 contiguous), enough for the max-pools after it
# to pick other winners among near-ties, so one-process channels-last gradients are not the
# ones two processes compute (GlobalBatchNorm2d sums in float64).
TINY: dict[str, object] = dict(
    seconds=1.0, channels=[4] * 6 + [8] * 3, fc_width=32, batch_size=4, checkpoint_every=1000,
    val_every=2, log_every=2, dev_fraction=0.2, channels_last=False, float64=True)
# measured in float64: 1.4e-10 here, AMD EPYC, 2 loaded cores (float32: 1e-7 here, >2e-5 on a Xeon with AMX); without
# synchronised BatchNorm the runs differ by 1e-2, so 1e-6 still catches any real bug
ATOL = 1e-6


def torchrun(data: Path, steps: int, *extra: str, mlflow_uri: str) -> str:
    sets = [f"{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "flows.torchrun", "--data-dir", str(data), "--device", "cpu",
           "--decoder", "random", "--steps", str(steps),
           *(a for kv in sets for a in ("--set", kv)), *extra]
    # one thread per rank, whatever the caller's environment says (torchrun's own default)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout


def tiny(steps: int) -> TrainConfig:
    """What `flows.torchrun` builds from the flags above (plus no tracking)."""
    return TrainConfig.preset_config("small", steps=steps, device="cpu", decoder="random",
                                     track=False, register_model=False, **TINY)  # type: ignore[arg-type]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    layout = DataLayout(tmp_path / "data").ensure()
    build(layout, CORPUS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank: the same kernels and summation order
    try:
        # into the run's own folder (checkpoints/voice_encoder/<identity>), which torchrun's
        # `--resume` finds: the same identity, whatever the number of processes
        first = train_voice_encoder(tiny(6), layout, stop_after=2)
        assert first.step == 2
        ckpt_dir = first.checkpoint.parent
        one = train_voice_encoder(tiny(6), layout, ckpt_dir=tmp_path / "one")
    finally:
        torch.set_num_threads(threads)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = torchrun(layout.root, 6, "--resume", mlflow_uri=uri)
    digests = dict(re.findall(r"rank (\d)/2: step 6, weights sha1 (\w+)", out))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]  # identical replicas

    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.pt"]
    ddp = torch.load(ckpt_dir / "last.pt", weights_only=True)
    ref = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    assert ref["model"]["features.0.1.weight"].dtype == torch.float64
    assert ddp["step"] == ref["step"] == 6 and ddp["batch"] == ref["batch"]
    assert list(ddp["model"]) == list(ref["model"])  # no "module." prefix, same BatchNorm keys
    worst = 0.0
    for k, v in ref["model"].items():
        torch.testing.assert_close(ddp["model"][k], v, atol=ATOL, rtol=0, msg=k)
        worst = max(worst, float((ddp["model"][k].double() - v.double()).abs().max()))
    print(f"largest |ddp - one process| weight difference: {worst:.2e}")
    assert ddp["best"]["step"] == ref["best"]["step"] == one.best_step
    assert ddp["best"]["val_loss"] == pytest.approx(ref["best"]["val_loss"], rel=1e-5)

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("speech2face")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # rank 1 logged nothing
    assert runs[0].data.params["world_size"] == "2"
    assert runs[0].data.params["resumed_at"] == "2"
    versions = client.search_model_versions("name='speech2face-voice-encoder'")
    assert len(versions) == 1 and versions[0].run_id == runs[0].info.run_id


def test_rank_slices_split_every_batch() -> None:
    from s2f.train.distributed import rank_slice

    for n in (8, 7, 1):
        batch = np.arange(100, 100 + n)
        for world in (1, 2, 3):
            parts = [rank_slice(batch, r, world) for r in range(world)]
            assert np.array_equal(np.concatenate(parts), batch)  # contiguous, in order
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_batchnorm_swaps_keep_the_weights() -> None:
    from torch import nn

    from s2f.models.voice_encoder import VoiceEncoder
    from s2f.train.distributed import GlobalBatchNorm2d, convert_global_batchnorm, plain_copy

    model = VoiceEncoder(tiny(1).encoder_config(out_dim=8)).eval()
    x = torch.randn(2, 2, model.cfg.num_frames, 257)
    before, want = dict(model.state_dict()), model(x)
    synced = convert_global_batchnorm(model)
    kinds = {type(m) for m in synced.modules() if isinstance(m, nn.BatchNorm2d)}
    assert kinds == {GlobalBatchNorm2d}
    assert synced.state_dict().keys() == before.keys()
    plain = plain_copy(synced)
    assert {type(m) for m in plain.modules() if isinstance(m, nn.BatchNorm2d)} == {nn.BatchNorm2d}
    for k, v in plain.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(plain(x), want, rtol=0, atol=0)


def test_set_flags_parse_as_json_or_text() -> None:
    from flows.params import parse_overrides

    assert parse_overrides(["batch_size=64", "channels=[4,8]", "bf16=false", "run_name=a=b"]) \
        == {"batch_size": 64, "channels": [4, 8], "bf16": False, "run_name": "a=b"}
    with pytest.raises(ValueError):
        parse_overrides(["batch_size"])
