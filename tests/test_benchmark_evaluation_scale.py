"""`python -m benchmarks.evaluation_scale` runs end to end on a small size: every stage in its
child process prints a row (the numbers themselves are the benchmark's, not checked here).

    pytest tests/test_benchmark_evaluation_scale.py
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_every_stage_reports_a_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.evaluation_scale import LABELS, main

    assert main(["--rows", "1200", "--n-boot", "20", "--shard-size", "500",
                 "--max-identity-distances", "1e9", "--work", str(tmp_path)]) == 0
    table = capsys.readouterr().out.split("evaluation scale:")[-1].splitlines()
    rows = {label: [line for line in table if line.startswith(label)]
            for label in LABELS.values()}
    for label, lines in rows.items():
        assert len(lines) == 1 and "error" not in lines[0], (label, lines)
        assert "skipped" not in lines[0], lines[0]
    assert main(["--rows", "1200", "--n-boot", "20", "--max-identity-distances", "10",
                 "--work", str(tmp_path)]) == 0
    assert "identity retrieval + CIs         1,200 skipped: 2.9e+05 query × pool distances" \
        in capsys.readouterr().out
