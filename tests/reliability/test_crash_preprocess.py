"""SIGKILL preprocessing at random points, resume, and get exactly what an uninterrupted run
gets: the `preprocess`, `faces` and `face_features` tables equal column for column.

Library-level kills (a child running what each flow task runs, shard by shard) take most of
the kills; one kill of the full `s2f preprocess` Prefect flow (process group) checks the flow's
resume (finished shards skipped, files untouched), its clean-up of torn temporary files, and
that the dead run's stage lock is free at once.

    pytest tests/reliability/test_crash_preprocess.py
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from s2f.preprocess.shards import OUTPUT_TABLES
from storage.io import shard_paths
from storage.layout import DataLayout
from storage.lock import read_holder

from .helpers import popen, python, subprocess_env
from .stage_helpers import (
    MANIFEST,
    PREPROCESS_DRIVER,
    check_partial,
    check_preprocess,
    face_corpus,
    ingest_clips,
    kill_when,
    temps,
)

LIBRARY_KILL_SEEDS = [21, 22, 23]
KILLS: list[str] = []  # what each kill hit, printed for docs/reliability.md


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Face clips, their clips table, and the output tables of an uninterrupted run of the
    same driver the crash test kills."""
    root = tmp_path_factory.mktemp("crash-pp")
    corpus = face_corpus(root)
    reference = ingest_clips(corpus, root / "reference")
    done = subprocess.run(python("-c", PREPROCESS_DRIVER, str(reference.root)),
                          env=subprocess_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    tables = check_preprocess(reference)
    # Not a vacuous comparison: 12 ok clips, 8 with a face (3 frames each), 4 without.
    assert tables["preprocess"]["status"].value_counts().sort("status").rows() == \
        [("no_face", 4), ("ok", 8)]
    assert tables["faces"].height == 24 and tables["face_features"].height == 8
    return {**corpus, "reference": tables}


def _assert_same_as_reference(layout: DataLayout, corpus: dict) -> None:
    tables = check_preprocess(layout)
    for table in OUTPUT_TABLES:
        # Every column is a function of the inputs (paths in rows are clip keys, not files).
        assert tables[table].equals(corpus["reference"][table]), table


def _more_marked(layout: DataLayout, before: int):  # noqa: ANN202 - a predicate
    return lambda: len(shard_paths(layout, "preprocess")) > before


def test_library_killed_repeatedly_then_resumed(corpus: dict, tmp_path: Path) -> None:
    layout = ingest_clips(corpus, tmp_path / "data")
    n_shards = len(shard_paths(layout, "clips"))
    args = python("-c", PREPROCESS_DRIVER, str(layout.root))
    killed = 0
    for seed in LIBRARY_KILL_SEEDS:
        before = len(shard_paths(layout, "preprocess"))
        proc = popen(args, subprocess_env(), tmp_path / f"run-{seed}.log")
        # After at least one more finished shard, 0-0.8 s on (a shard takes about 1 s on an
        # idle machine): in the middle of the next shard, or between the writes of its files.
        hit = kill_when(proc, _more_marked(layout, before), np.random.default_rng(seed), 0.8)
        counts = check_partial(layout)
        killed += hit
        KILLS.append(f"library seed {seed}: {'killed' if hit else 'finished'} with "
                     f"{counts['preprocess']}/{n_shards} shards marked done, "
                     f"{counts['unmarked']} written but unmarked")
        assert counts["preprocess"] > before, "no progress between kills"
    print("\n".join(KILLS))
    assert killed == len(LIBRARY_KILL_SEEDS), KILLS
    assert len(shard_paths(layout, "preprocess")) < n_shards, "nothing left to resume"
    # A kill between a shard's writes (faces and face_features renamed, the preprocess marker
    # not yet) is a narrow window: make that state for sure by removing one marker.
    shard_paths(layout, "preprocess")[0].unlink()
    assert check_partial(layout)["unmarked"] == 1
    marked = len(shard_paths(layout, "preprocess"))
    done = subprocess.run(args, env=subprocess_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    redone = done.stdout.decode().count("done ")
    assert redone == n_shards - marked, "the resumed run redoes exactly the unmarked shards"
    _assert_same_as_reference(layout, corpus)


@pytest.mark.slow
def test_flow_killed_then_resumed(prefect_server: None, corpus: dict, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    layout = ingest_clips(corpus, tmp_path / "data")
    n_shards = len(shard_paths(layout, "clips"))
    cli = python("-m", "flows.cli", "preprocess", "--data-dir", str(layout.root),
                 "--device", "cpu")
    env = subprocess_env(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_LOGGING_LEVEL="WARNING")
    proc = popen(cli, env, tmp_path / "flow.log")
    hit = kill_when(proc, lambda: len(shard_paths(layout, "preprocess")) >= 2,
                    np.random.default_rng(31), 0.5)
    assert hit, (tmp_path / "flow.log").read_text()[-3000:]
    counts = check_partial(layout)
    KILLS.append(f"flow: killed with {counts['preprocess']}/{n_shards} shards marked done, "
                 f"{counts['unmarked']} unmarked")
    assert 2 <= counts["preprocess"] < n_shards
    # The dead run's lock still names it, but the kernel dropped its flock with the process.
    assert read_holder(layout, "preprocess").get("pid") == proc.pid

    # Plant what a kill in the middle of a write leaves: torn Parquet temporaries beside
    # finished shards. Readers never list them; the resumed flow removes them.
    finished = shard_paths(layout, "preprocess")
    for table in OUTPUT_TABLES:
        shard = layout.table_dir(table) / MANIFEST / finished[0].name
        (shard.parent / f".{shard.name}.tmp-999999-deadbeef").write_bytes(shard.read_bytes()[:64])
    assert len(temps(layout.root)) >= 3
    check_partial(layout)  # the torn files are not read
    mtimes = {p: p.stat().st_mtime_ns for t in OUTPUT_TABLES for p in shard_paths(layout, t)
              if (layout.table_dir("preprocess") / MANIFEST / p.name) in finished}

    resumed = subprocess.run(cli, env=env, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    _assert_same_as_reference(layout, corpus)
    assert temps(layout.root) == [], "the flow leaves no temporary file behind"
    # Shards finished before the kill were skipped, not rewritten.
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert read_holder(layout, "preprocess") == {}  # released and cleared on a clean exit
    print("\n".join(KILLS))
