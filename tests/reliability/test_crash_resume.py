"""SIGKILL ingestion at random points, resume, and get exactly what an uninterrupted run gets.

Library-level kills (`python -m s2f.ingest.shard`, what each flow task runs) are cheap, so they
take most of the kills; one kill of the full `s2f ingest` Prefect flow (its own ephemeral API
server, killed with its whole process group) checks the flow's resume, its clean-up of
temporary files and, while it runs, that nothing it started listens beyond 127.0.0.1.

    pytest tests/reliability/test_crash_resume.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
from ingest_helpers import make_garbage, make_good

from storage.io import TEMP_GLOB, scan, shard_paths
from storage.layout import DataLayout
from storage.lock import read_holder

from .helpers import check_clips, popen, python, run_shards, subprocess_env

SHARD_SIZE = 16
N_LINES = 320
LIBRARY_KILL_SEEDS = [11, 12, 13, 14]
# Counts for docs/reliability.md, filled as the tests run.
KILLS: list[str] = []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A manifest of a few hundred lines over a few real media files (some bad lines, blanks,
    duplicates, missing and corrupt media) and the clips table of an uninterrupted run."""
    root = tmp_path_factory.mktemp("crash")
    media = root / "media"
    make_good(media / "goodmp4____.mp4")
    make_good(media / "goodwebm___.webm", "vp9")
    make_good(media / "goodmkv____.mkv", "h264", "flac")
    make_garbage(media / "garbage____.mp4")
    rng = np.random.default_rng(7)
    ids = ["goodmp4____", "goodwebm___", "goodmkv____", "garbage____", "missingvid_"]
    lines = []
    for _ in range(N_LINES):
        kind = rng.random()
        if kind < 0.05:
            lines.append("")
        elif kind < 0.1:
            lines.append("not,a,valid,row")
        else:
            start = round(float(rng.uniform(0, 1.2)), 2)  # some segments repeat: duplicates
            end = round(start + float(rng.choice([0.3, 0.5, 0.75])), 2)
            lines.append(f"{rng.choice(ids, p=[0.3, 0.25, 0.25, 0.1, 0.1])},{start},{end},0.5,0.5")
    manifest = root / "crash_train.csv"
    manifest.write_text("\n".join(lines) + "\n")
    reference_dir = root / "reference"
    run_shards(manifest, media, reference_dir, SHARD_SIZE)
    reference = check_clips(reference_dir, {"crash_train": manifest})
    return {"media": media, "manifest": manifest, "reference": reference}


def _rows(data_dir: Path) -> pl.DataFrame:
    # Everything a row holds is a function of the inputs (audio paths are relative), so a
    # resumed table must equal the uninterrupted one column for column.
    return scan(DataLayout(data_dir), "clips").collect().sort("manifest", "line_no")


def _assert_same_as_reference(data_dir: Path, corpus: dict) -> None:
    frame = check_clips(data_dir, {"crash_train": corpus["manifest"]})
    assert frame.height == corpus["reference"].height
    assert _rows(data_dir).equals(corpus["reference"].sort("manifest", "line_no"))


def _temps(data_dir: Path) -> list[Path]:
    return [p for p in Path(data_dir).rglob(TEMP_GLOB) if "prefect" not in p.parts]


def _kill_after_progress(proc: subprocess.Popen[bytes], data_dir: Path, rng: np.random.Generator,
                         timeout_s: float = 120.0) -> str:
    """Wait until the run has written two more shards, then SIGKILL its process group a random
    fraction of one shard's time later (the interval between those two shards), so the kill
    lands inside a shard's work however fast this machine writes shards (a fixed delay let a
    fast idle machine finish the whole manifest before the kill); returns what happened."""
    layout = DataLayout(data_dir)
    before = len(shard_paths(layout, "clips"))
    deadline = time.monotonic() + timeout_s
    first: tuple[float, int] | None = None  # (when, how many) the first new shard appeared
    interval = 0.0
    while time.monotonic() < deadline and proc.poll() is None:
        n = len(shard_paths(layout, "clips"))
        if first is None and n > before:
            first = (time.monotonic(), n)
        elif first is not None and n > first[1]:
            interval = (time.monotonic() - first[0]) / (n - first[1])
            break
        time.sleep(0.005)
    time.sleep(float(rng.uniform(0.0, 1.0)) * interval)
    if proc.poll() is not None:
        return f"finished (rc {proc.returncode}) before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return f"killed after {len(shard_paths(layout, 'clips')) - before} new shards"


def _check_after_kill(data_dir: Path) -> None:
    """What a reader may see between a kill and the resume: complete shards only."""
    layout = DataLayout(data_dir)
    for path in shard_paths(layout, "clips"):
        assert not path.name.startswith(".")
    frame = scan(layout, "clips").collect()  # every listed shard readable; temps not listed
    assert frame.select(pl.struct("manifest", "line_no").is_unique().all()).item()


def test_library_killed_repeatedly_then_resumed(corpus: dict, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = python("-m", "s2f.ingest.shard", str(corpus["manifest"]), str(corpus["media"]),
                  str(data_dir), str(SHARD_SIZE))
    env = subprocess_env()
    killed = 0
    for seed in LIBRARY_KILL_SEEDS:
        proc = popen(args, env, tmp_path / f"run-{seed}.log")
        outcome = _kill_after_progress(proc, data_dir, np.random.default_rng(seed))
        KILLS.append(f"library seed {seed}: {outcome}")
        killed += outcome.startswith("killed")
        _check_after_kill(data_dir)
    print("\n".join(KILLS))
    assert killed >= 3, KILLS
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    _assert_same_as_reference(data_dir, corpus)
    # The library run leaves a killed run's temporaries where they are (never read: the
    # shard glob skips them); the flow removes them under its lock (next test).
    assert all(p.name.startswith(".") for p in _temps(data_dir))


def _listening(pid: int) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening inet socket of a process and its children."""
    out = []
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((proc.pid, conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


@pytest.mark.slow
def test_full_flow_killed_then_resumed(prefect_server: None, corpus: dict, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    data_dir = tmp_path / "data"
    cli = python("-m", "flows.cli", "ingest", "--manifest", str(corpus["manifest"]),
                 "--media-root", str(corpus["media"]), "--data-dir", str(data_dir),
                 "--shard-size", str(SHARD_SIZE))
    # First run: as a user runs it, with its own ephemeral Prefect server under the data dir.
    proc = popen(cli, subprocess_env(PREFECT_LOGGING_LEVEL="WARNING"), tmp_path / "flow.log")
    layout = DataLayout(data_dir)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(shard_paths(layout, "clips")) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "flow.log").read_text()[-3000:]
    sockets = _listening(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    KILLS.append(f"flow: killed with {len(shard_paths(layout, 'clips'))} shards written")
    # The ephemeral API server was up (the flow was writing shards) and bound to loopback only.
    assert sockets, "no listening socket found for the ephemeral Prefect server"
    assert {ip for _, ip, _ in sockets} == {"127.0.0.1"}, sockets
    _check_after_kill(data_dir)
    # The dead run's lock names it, but the kernel released the flock with its process.
    assert read_holder(layout, "ingest").get("pid") == proc.pid

    # Plant the leftovers of a kill in the middle of writing (a torn Parquet temp, a pack temp).
    shard = shard_paths(layout, "clips")[0]
    torn = shard.parent / f".{shard.name}.tmp-999999-deadbeef"
    torn.write_bytes(shard.read_bytes()[:100])
    pack_dir = layout.root / "audio" / "packs" / shard.parent.name
    (pack_dir / ".shard-00000-x.tar.tmp-999999-deadbeef").write_bytes(b"fLaC")

    # Resume against the session's server (same code path, no second server start-up).
    resumed = subprocess.run(cli, env=subprocess_env(PREFECT_API_URL=PREFECT_API_URL.value()),
                             cwd=tmp_path, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert "unchanged, skipped" in resumed.stdout.decode()
    _assert_same_as_reference(data_dir, corpus)
    assert _temps(data_dir) == [], "the flow leaves no temporary file behind"
    assert read_holder(layout, "ingest") == {}  # released and cleared on a clean exit
