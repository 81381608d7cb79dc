"""SIGKILL training at random points after a checkpoint, resume, and end with the weights of an
uninterrupted run (training is deterministic on CPU: same seed, same batch plan per epoch,
RNG state in the checkpoint).

Library-level kills of the voice encoder and the face decoder (a child running the training
loop with `resume=True`, as `s2f train --resume` does) take most of the kills; one kill of
`s2f train --resume` (the Prefect flow, process group) checks the flow's resume, its clean-up
of torn checkpoint temporaries, and that the dead run's stage lock is free at once.

    pytest tests/reliability/test_crash_train.py
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from s2f.train.synthetic import SyntheticCorpus, build
from storage.layout import DataLayout
from storage.lock import read_holder

from .helpers import popen, python, subprocess_env
from .stage_helpers import TRAIN_DRIVER, kill_when, temps

VOICE = {"preset": "small", "seconds": 1.0, "channels": [4] * 6 + [8] * 3, "fc_width": 32,
         "batch_size": 4, "steps": 16, "checkpoint_every": 2, "val_every": 1000,
         "log_every": 2, "dev_fraction": 0.2, "decoder": "random", "device": "cpu",
         "track": False, "register_model": False}
DECODER = {"steps": 8, "checkpoint_every": 2, "batch_size": 4, "image_size": 32,
           "device": "cpu", "track": False, "register_model": False}
CASES = {"voice": (VOICE, [41, 42, 43]), "decoder": (DECODER, [51])}
# What `s2f train --steps 4 --checkpoint-every 2 --decoder random --no-track --device cpu`
# trains: the small preset as the CLI builds it.
CLI_STEPS = 4
CLI_CONFIG = {"preset": "small", "encoder": "dlib-resnet", "device": "cpu", "track": False,
              "register_model": False, "steps": CLI_STEPS, "checkpoint_every": 2,
              "decoder": "random"}
KILLS: list[str] = []  # what each kill hit, printed for docs/reliability.md


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """Synthetic clips (FLAC), faces and face features: training only reads them."""
    layout = DataLayout(tmp_path_factory.mktemp("crash-train")).ensure()
    build(layout, SyntheticCorpus(identities=10, clips_per_identity=2, dim=8, seconds=1.0,
                                  shard_size=8))
    return layout


def _train(kind: str, layout: DataLayout, ckpt: Path, config: dict[str, Any]) -> list[str]:
    return python("-c", TRAIN_DRIVER, kind, str(layout.root), str(ckpt), json.dumps(config))


def _load(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "last.pt", weights_only=True)


_SEEN: dict[Path, tuple[tuple[int, int], int]] = {}  # last.pt -> ((inode, mtime), step)


def _step(ckpt: Path) -> int:
    """The step of the last checkpoint; it is only ever replaced by a rename, so reading it
    while the run writes the next one is safe (a torn file would fail to load here)."""
    path = ckpt / "last.pt"
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    version = (st.st_ino, st.st_mtime_ns)  # each save is a new file renamed over last.pt
    if path not in _SEEN or _SEEN[path][0] != version:
        _SEEN[path] = (version, int(_load(ckpt)["step"]))
    return _SEEN[path][1]


def _latest_run(model_dir: Path) -> Path:
    """The run folder that the model folder's LATEST names (the flow trains into
    checkpoints/voice_encoder/<run identity>); the model folder until a run has saved."""
    latest = model_dir / "LATEST"
    return model_dir / latest.read_text().strip() if latest.is_file() else model_dir


def _assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"{name} differs"


def _run_to_end(args: list[str]) -> str:
    done = subprocess.run(args, env=subprocess_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode()


@pytest.mark.parametrize("kind", list(CASES))
def test_library_killed_after_checkpoints_then_resumed(corpus: DataLayout, tmp_path: Path,
                                                       kind: str) -> None:
    config, seeds = CASES[kind]
    every, steps = config["checkpoint_every"], config["steps"]
    _run_to_end(_train(kind, corpus, tmp_path / "reference", config))
    reference = _load(tmp_path / "reference")
    assert reference["step"] == steps

    ckpt = tmp_path / "ckpt"
    args = _train(kind, corpus, ckpt, config)
    last = 0
    for seed in seeds:
        proc = popen(args, subprocess_env(), tmp_path / f"{kind}-{seed}.log")
        # Once this run has written a checkpoint of its own, 0-0.3 s on (0-3 steps on an idle
        # machine: the kills stay well short of the end).
        hit = kill_when(proc, lambda last=last: _step(ckpt) > last, np.random.default_rng(seed),
                        0.3)
        step = _step(ckpt)  # last.pt loads: never a torn checkpoint
        KILLS.append(f"{kind} seed {seed}: {'killed' if hit else 'finished'} at checkpoint "
                     f"{step}/{steps}")
        assert hit, KILLS
        assert last < step < steps and step % every == 0, KILLS
        last = step
    # A torn temporary beside last.pt, as a kill during a save leaves it: never read.
    (ckpt / ".last.pt.tmp-999999-deadbeef").write_bytes((ckpt / "last.pt").read_bytes()[:100])
    out = _run_to_end(args)
    assert f"finished at step {steps}" in out
    _assert_same_weights(_load(ckpt), reference)
    print("\n".join(KILLS))


@pytest.mark.slow
def test_train_flow_killed_then_resumed(prefect_server: None, corpus: DataLayout,
                                        tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    reference_ckpt = tmp_path / "reference"
    _run_to_end(_train("voice", corpus, reference_ckpt, CLI_CONFIG))
    # The flow trains into <data-dir>/checkpoints: a data directory of its own, same tables.
    layout = DataLayout(tmp_path / "data").ensure()
    build(layout, SyntheticCorpus(identities=10, clips_per_identity=2, dim=8, seconds=1.0,
                                  shard_size=8))
    model_dir = layout.root / "checkpoints" / "voice_encoder"
    cli = python("-m", "flows.cli", "train", "--data-dir", str(layout.root), "--resume",
                 "--steps", str(CLI_STEPS), "--checkpoint-every", "2", "--decoder", "random",
                 "--no-track", "--device", "cpu")
    env = subprocess_env(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_LOGGING_LEVEL="WARNING")
    proc = popen(cli, env, tmp_path / "flow.log")
    # After the first checkpoint (step 2), 0-0.5 s on: during step 3 (~2 s a step).
    hit = kill_when(proc, lambda: _step(_latest_run(model_dir)) >= 2, np.random.default_rng(61),
                    0.5)
    assert hit, (tmp_path / "flow.log").read_text()[-3000:]
    ckpt = _latest_run(model_dir)
    step = _step(ckpt)
    KILLS.append(f"flow: killed at checkpoint {step}/{CLI_STEPS}")
    assert 2 <= step < CLI_STEPS
    assert read_holder(layout, "train").get("pid") == proc.pid  # named, but not held
    (ckpt / ".last.pt.tmp-999999-deadbeef").write_bytes((ckpt / "last.pt").read_bytes()[:100])

    resumed = subprocess.run(cli, env=env, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert f"step           {CLI_STEPS}" in resumed.stdout.decode()
    _assert_same_weights(_load(ckpt), _load(reference_ckpt))
    assert temps(layout.root) == [], "the flow removes a killed run's checkpoint temporaries"
    assert read_holder(layout, "train") == {}
    print("\n".join(KILLS))
