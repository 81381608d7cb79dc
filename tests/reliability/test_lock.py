"""One run per (stage, data directory), with real processes: a second run is refused with a
message naming the holder, a SIGKILLed holder frees the lock at once, and two ingests (or two
preprocess runs) started together overlap for certain (the first holder is SIGSTOPped while it
holds) and never produce a corrupted or double-counted table; a second
preprocess, train-decoder or train run is refused by the CLI (exit 3) and the flow.

    pytest tests/reliability/test_lock.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from ingest_helpers import make_good

from storage.io import shard_paths
from storage.layout import DataLayout
from storage.lock import StageLocked, read_holder, stage_lock

from .helpers import check_clips, python, subprocess_env

HOLD = """
import sys
from contextlib import ExitStack
from storage.layout import DataLayout
from storage.lock import stage_lock
with ExitStack() as stack:
    for stage in sys.argv[2:]:
        stack.enter_context(stage_lock(DataLayout(sys.argv[1]).ensure(), stage))
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin (or kills us)
"""


def _holder(data_dir: Path, *stages: str) -> subprocess.Popen[bytes]:
    """A process holding the locks of `stages` (default: ingest) until its stdin closes."""
    proc = subprocess.Popen(python("-c", HOLD, str(data_dir), *(stages or ("ingest",))),
                            env=subprocess_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
    return proc


@pytest.fixture()
def small(tmp_path: Path) -> dict:
    media = tmp_path / "media"
    make_good(media / "goodmp4____.mp4")
    lines = [f"goodmp4____,{i / 100:.2f},{i / 100 + 0.5:.2f},0.5,0.5" for i in range(60)]
    lines += ["bad line", "", "missingvid_,0,1,0.5,0.5"]
    manifest = tmp_path / "lock_train.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return {"media": media, "manifest": manifest}


def _cli(small: dict, data_dir: Path) -> list[str]:
    return python("-m", "flows.cli", "ingest", "--manifest", str(small["manifest"]),
                  "--media-root", str(small["media"]), "--data-dir", str(data_dir),
                  "--shard-size", "8")


def _session_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return subprocess_env(PREFECT_API_URL=PREFECT_API_URL.value(),
                          PREFECT_LOGGING_LEVEL="WARNING")


def _stop_the_holder(procs: list[subprocess.Popen[bytes]], layout: DataLayout, stage: str,
                     timeout_s: float = 240.0) -> subprocess.Popen[bytes]:
    """Wait until one of `procs` holds `stage`'s lock and SIGSTOP it while it does, so the other
    run's attempt is certain to overlap the hold (before: the tests accepted two exit codes 0,
    "they did not overlap", and so could not fail on a lock that let both in)."""
    by_pid = {p.pid: p for p in procs}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = read_holder(layout, stage).get("pid")
        if pid in by_pid:
            os.kill(pid, signal.SIGSTOP)
            if read_holder(layout, stage).get("pid") == pid:  # stopped while still holding
                return by_pid[pid]
            os.kill(pid, signal.SIGCONT)  # it released just then: wait for the next holder
        assert not all(p.poll() is not None for p in procs), "both exited before holding"
        time.sleep(0.02)
    raise AssertionError(f"no run took the {stage} lock within {timeout_s} s")


def _overlapping_runs(procs: list[subprocess.Popen[bytes]], layout: DataLayout, stage: str
                      ) -> tuple[subprocess.Popen[bytes], str, str]:
    """Hold the first holder stopped until the other run has exited; then let it finish.
    Returns the holder, the other's stderr and the holder's stderr."""
    holder = _stop_the_holder(procs, layout, stage)
    other = next(p for p in procs if p is not holder)
    try:
        _, other_err = other.communicate(timeout=300)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    _, holder_err = holder.communicate(timeout=300)
    return holder, other_err.decode(), holder_err.decode()


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data").ensure()
    holder = _holder(layout.root)
    try:
        with pytest.raises(StageLocked) as refused:
            with stage_lock(layout, "ingest"):
                pytest.fail("two holders of one stage lock")
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "another ingest run is using this data directory" in message
        assert refused.value.holder["data_dir"] == str(layout.root)
        # Other stages and other data directories are not blocked.
        with stage_lock(layout, "preprocess"), stage_lock(DataLayout(tmp_path / "other"), "ingest"):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    assert read_holder(layout, "ingest") == {}  # cleared on release
    with stage_lock(layout, "ingest") as me:
        assert me["pid"] == os.getpid() and read_holder(layout, "ingest")["pid"] == os.getpid()


def test_a_sigkilled_holder_releases_the_lock(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data").ensure()
    holder = _holder(layout.root)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert read_holder(layout, "ingest")["pid"] == holder.pid  # its name stays behind...
    started = time.monotonic()
    with stage_lock(layout, "ingest") as me:  # ...but the kernel dropped its flock
        assert time.monotonic() - started < 1.0
        assert read_holder(layout, "ingest")["pid"] == me["pid"] == os.getpid()


def test_second_ingest_is_refused_by_cli_and_flow(prefect_server: None, small: dict,
                                                   tmp_path: Path) -> None:
    from flows.ingest import IngestParams, ingest_flow

    data_dir = tmp_path / "data"
    holder = _holder(data_dir)
    try:
        refused = subprocess.run(_cli(small, data_dir), env=_session_env(), capture_output=True,
                                 timeout=300, cwd=tmp_path)
        assert refused.returncode == 3, refused.stderr.decode()[-2000:]
        err = refused.stderr.decode()
        assert f"pid {holder.pid}" in err and "another ingest run" in err
        params = IngestParams(manifests=[small["manifest"]], media_root=small["media"],
                              data_dir=data_dir, shard_size=8)
        with pytest.raises(StageLocked, match=f"pid {holder.pid}"):
            ingest_flow(params)
        # Refused before any work: nothing written.
        assert shard_paths(DataLayout(data_dir), "clips") == []
        assert list((data_dir / "audio").iterdir()) == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    done = subprocess.run(_cli(small, data_dir), env=_session_env(), capture_output=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    frame = check_clips(data_dir, {"lock_train": small["manifest"]})
    assert frame.height == 62 and (frame["status"] == "ok").sum() == 60


@pytest.mark.slow
def test_two_ingests_started_together(prefect_server: None, small: dict, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = _session_env()
    procs = [subprocess.Popen(_cli(small, data_dir), env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    holder, other_err, holder_err = _overlapping_runs(procs, DataLayout(data_dir), "ingest")
    other = next(p for p in procs if p is not holder)
    # The overlap is certain: the refused run tried while the holder held the lock.
    assert (holder.returncode, other.returncode) == (0, 3), (holder_err[-1500:], other_err)
    assert "another ingest run" in other_err and f"pid {holder.pid}" in other_err, other_err
    frame = check_clips(data_dir, {"lock_train": small["manifest"]})
    assert frame.height == 62
    assert frame.filter(pl.col("status") == "ok")["clip_key"].n_unique() == 60


# -- preprocess and training ------------------------------------------------------------------

@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from .stage_helpers import face_corpus

    return face_corpus(tmp_path_factory.mktemp("lock-faces"))


def _stage_cli(stage: str, data_dir: Path) -> list[str]:
    if stage == "preprocess":
        return python("-m", "flows.cli", "preprocess", "--data-dir", str(data_dir),
                      "--device", "cpu")
    return python("-m", "flows.cli", stage, "--data-dir", str(data_dir), "--steps", "2",
                  "--no-track", "--device", "cpu",
                  *(["--decoder", "random"] if stage == "train" else []))


@pytest.mark.slow
def test_second_preprocess_and_train_are_refused(prefect_server: None, faces: dict,
                                                 tmp_path: Path) -> None:
    from flows.params import TrainDecoderParams, TrainParams
    from flows.preprocess import PreprocessParams, preprocess_flow
    from flows.train import train_decoder_flow, train_flow
    from s2f.preprocess.shards import OUTPUT_TABLES

    from .stage_helpers import ingest_clips

    layout = ingest_clips(faces, tmp_path / "data")
    holder = _holder(layout.root, "preprocess", "train-decoder", "train")
    try:
        for stage in ("preprocess", "train"):  # the CLI: exit 3, the holder named
            refused = subprocess.run(_stage_cli(stage, layout.root), env=_session_env(),
                                     capture_output=True, timeout=300, cwd=tmp_path)
            err = refused.stderr.decode()
            assert refused.returncode == 3, (stage, err[-2000:])
            assert f"s2f {stage}: another {stage} run is using this data directory" in err
            assert f"pid {holder.pid} on host {socket.gethostname()}" in err
        # The flows themselves (as the pipeline and deployments run them) raise.
        with pytest.raises(StageLocked, match=f"another preprocess run.*pid {holder.pid}"):
            preprocess_flow(PreprocessParams(data_dir=layout.root, device="cpu"))
        common = {"data_dir": layout.root, "steps": 2, "track": False, "device": "cpu"}
        with pytest.raises(StageLocked, match=f"another train-decoder run.*pid {holder.pid}"):
            train_decoder_flow(TrainDecoderParams(**common))
        with pytest.raises(StageLocked, match=f"another train run.*pid {holder.pid}"):
            train_flow(TrainParams(**common, decoder="random"))
        # Refused before any work: no output shard, no checkpoint.
        assert all(shard_paths(layout, t) == [] for t in OUTPUT_TABLES)
        assert not (layout.root / "checkpoints").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # Released: the next run gets the data directory (a full run after a refusal, with the
    # tables checked, is the next test's).
    for stage in ("preprocess", "train-decoder", "train"):
        with stage_lock(layout, stage) as me:
            assert read_holder(layout, stage)["pid"] == me["pid"] == os.getpid()
    assert all(shard_paths(layout, t) == [] for t in OUTPUT_TABLES)


@pytest.mark.slow
def test_two_preprocess_runs_started_together(prefect_server: None, faces: dict,
                                              tmp_path: Path) -> None:
    from .stage_helpers import check_preprocess, ingest_clips

    layout = ingest_clips(faces, tmp_path / "data")
    env = _session_env()
    procs = [subprocess.Popen(_stage_cli("preprocess", layout.root), env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    holder, other_err, holder_err = _overlapping_runs(procs, layout, "preprocess")
    other = next(p for p in procs if p is not holder)
    # The overlap is certain: the refused run tried while the holder held the lock.
    assert (holder.returncode, other.returncode) == (0, 3), (holder_err[-1500:], other_err)
    assert "another preprocess run" in other_err and f"pid {holder.pid}" in other_err, other_err
    tables = check_preprocess(layout)
    assert tables["preprocess"].height == 12 and tables["faces"].height == 24
