"""`python -m benchmarks.train_gpu --tiny` (the CPU stand-in of the GPU benchmark) runs end to end.

It builds its synthetic corpus, times the real `train_step`, the loader and `train_voice_encoder`
with tracking off, and writes one JSON row per model. ~30 s on 2 loaded cores. The same for
`python -m benchmarks.gpu_variants --tiny` (issue 27's side-by-side table).

    pytest tests/test_benchmark_train_gpu.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_tiny_benchmark_reports_every_rate(tmp_path: Path) -> None:
    from benchmarks.train_gpu import main

    out = tmp_path / "rows.json"
    assert main(["--tiny", "--workers", "0", "--skip-decoder", "--work", str(tmp_path / "w"),
                 "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["final_step"] == 12 and row["validations_in_window"] >= 1
    for k in ("model_only_samples_s", "loader_samples_s", "e2e_samples_s"):
        assert row[k] > 0, k
    assert row["compile"] is False and row["model_only_peak_gib"] is None  # CPU: no compile


@pytest.mark.slow
def test_tiny_variants_benchmark_prints_every_row(tmp_path: Path) -> None:
    from benchmarks.gpu_variants import main

    out = tmp_path / "variants.json"
    assert main(["--tiny", "--only", "eager", "compile, batch 128", "--work",
                 str(tmp_path / "w"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["evaluation encoder on cpu", "eager",
                                            "compile, batch 128"]
    assert rows[0]["clips_s"] > 0 and rows[0]["rank_queries_s"] > 0
    assert all(r["samples_s"] > 0 and r["compiled"] is False for r in rows[1:])  # CPU
