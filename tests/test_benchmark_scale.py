"""`python -m benchmarks.scale` runs end to end on small sizes: every stage in its child process
prints a row, the re-sharded stages reuse every row (the numbers themselves are the
benchmark's, not checked here).

    pytest tests/test_benchmark_scale.py
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_every_stage_reports_a_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.scale import LABELS, main

    assert main(["--rows", "300,600", "--shard-size", "100", "--stream-batches", "2",
                 "--no-evaluation", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = out.split("one child process per step")[-1].split("where it grows")[0].splitlines()
    for kind in ("ingest", "ingest_reshard", "status", "preprocess_plan", "preprocess_reshard",
                 "train_index", "face_stream"):
        lines = [line for line in table if line.startswith(LABELS[kind] + " ")]
        assert len(lines) == 2 and not any("error" in line for line in lines), (kind, lines)
    assert "600 rows reused" in out and "600 clips reused, 0 run" in out
    assert "where it grows" in out
