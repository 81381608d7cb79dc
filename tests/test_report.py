"""The report `s2f demo` prints: every number equals the `evaluations` row it was made from."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from eval_helpers import ENCODER_NAME, ConstantEncoder, register, register_models, tracked_eval_data

from s2f.evaluation.data import training_mean_feature
from s2f.evaluation.record import read_evaluations
from s2f.evaluation.run import evaluate_model
from s2f.release.promote import promote
from s2f.release.report import demo_report

_NUM = r"-?[0-9.]+(?:e-?\d+)?|n/a"


def _row(text: str, label: str) -> list[str]:
    """The cells of the first table line whose first column is `label` (columns: 2+ spaces
    apart; sections come in order, so the first is the section the label belongs to)."""
    line = next(x for x in text.splitlines() if re.match(rf"\s+{re.escape(label)}\s{{2,}}", x))
    return re.split(r"\s{2,}", line.strip())[1:]


def _floats(cell: str) -> list[float]:
    return [float(x) for x in re.findall(_NUM, cell)]


def test_report_numbers_are_the_evaluation_rows(tmp_path: Path) -> None:
    data = tracked_eval_data(tmp_path)
    register_models(data, "challenger")
    evaluate_model(data.layout, n_boot=50)  # the test row, for the report
    first = asdict(promote(data.layout, n_boot=50))  # evaluates the challenger on dev
    assert [r["role"] for r in read_evaluations(data.layout)] == ["test", "dev"]
    (row,) = [r for r in read_evaluations(data.layout) if r["role"] == "test"]
    m = row["metrics"]
    text = demo_report(row, first, [("Parquet tables", str(data.layout.root / "tables")),
                                    ("Prefect UI", "prefect server start\nthen open URL")])

    # (a) feature similarity: mean ± std of cosine, L2, L1 per input length and the baseline
    for label, prefix, suffix in (("voice, 3 s", "", "_3s"), ("voice, 6 s", "", "_6s"),
                                  ("mean face (baseline)", "mean_face_", "")):
        cells = [_floats(c) for c in _row(text, label)]
        expected = [[m[f"{prefix}{k}_mean{suffix}"], m[f"{prefix}{k}_std{suffix}"]]
                    for k in ("cosine_deg", "l2", "l1")]
        assert cells == [pytest.approx(e, abs=5e-4) for e in expected], label

    # (b) retrieval: the K below the pool of 14 test identities, chance and CIs beside them
    flat = " ".join(text.split())  # headings are wrapped
    assert "among a pool of 14 faces" in flat
    ks = [int(line.split()[0]) for line in text.split("(b)")[1].split("(c)")[0].splitlines()
          if re.match(r"\s+\d+\s", line)]
    assert ks == [1, 2, 5, 10]
    for k in ks:
        cells = [_floats(c) for c in _row(text, str(k))]
        expected = [[m[f"chance_at_{k}"]]]
        for name in (f"recall_at_{k}_3s", f"recall_at_{k}_6s", f"mean_face_recall_at_{k}"):
            expected.append([m[name], m[f"{name}_ci_low"], m[f"{name}_ci_high"]])
        assert cells == [pytest.approx(e, abs=5e-4) for e in expected], k
    assert "recall@20, @50: not reported, K >= pool size 14" in text

    # (c) craniofacial r and p, (d) voice-parameter read-outs, (e) diversity
    cranio = sorted(k[7:-2] for k in m if k.startswith("cranio_") and k.endswith("_r"))
    assert len(cranio) >= 5
    for name in cranio:
        r, p, p_bonferroni, random_r = _row(text, name)
        assert _floats(r) == pytest.approx([m[f"cranio_{name}_r"]], abs=5e-4, nan_ok=True)
        assert _floats(p) == pytest.approx([m[f"cranio_{name}_p"]], rel=0.06, nan_ok=True)
        assert _floats(p_bonferroni) == pytest.approx([m[f"cranio_{name}_p_bonferroni"]],
                                                      rel=0.06, nan_ok=True)
        assert _floats(random_r) == pytest.approx(
            [m[f"cranio_random_pair_{name}{end}"] for end in ("", "_low", "_high")], abs=5e-4,
            nan_ok=True)
    # (b2) the paper's protocol: one row per input and distance, the paper's as reference rows
    assert "the paper's protocol: pool = the true features of 28 test clips" in flat
    cells = [_floats(c) for c in _row(text, "voice 6 s")[1:]]
    assert cells[-1] == pytest.approx([m["paper_recall_at_10_l2_6s"],
                                       m["paper_recall_at_10_l2_6s_ci_low"],
                                       m["paper_recall_at_10_l2_6s_ci_high"]], abs=5e-4)
    assert "paper (reference), 6 s" in text
    # (b3) controls: no shuffled control in this run, the report says so
    assert _row(text, "shuffled-voice control")[0] == "not run"
    assert "learnable by construction" in flat
    pitch = [_floats(c) for c in _row(text, "pitch_hz")]
    assert [c[0] for c in pitch] == pytest.approx(
        [m["voice_pitch_hz_ridge_r"], m["voice_pitch_hz_ridge_true_r"]], abs=5e-4)
    div, spread = _row(text, "voice features, 6 s")
    assert float(div) == pytest.approx(m["diversity_6s"], abs=5e-4)
    assert _floats(spread) == pytest.approx([m["spread_pred_deg_6s"], m["spread_true_deg"]],
                                            abs=5e-3)
    assert float(_row(text, "decoder images")[0]) == pytest.approx(m["recon_image_diversity"],
                                                                   abs=5e-4)

    # (f) the decision with its reasons, (g) the places, multi-line ones indented
    assert f"PROMOTED: {ENCODER_NAME} v1 is now the champion (champion before: none)" in text
    assert all(f"  - {reason}" in text for reason in first["reasons"])
    assert f"Parquet tables  {data.layout.root / 'tables'}" in text
    assert re.search(r"^  Prefect UI      prefect server start\n {18}then open URL$", text,
                     flags=re.M), text[-500:]

    # A collapsed challenger next: the gate refuses it and the report says why.
    mean = torch.from_numpy(training_mean_feature(data.layout, "dlib-resnet"))
    register(ConstantEncoder(mean), ENCODER_NAME, "challenger")
    second = asdict(promote(data.layout, n_boot=50))
    row2 = read_evaluations(data.layout)[-1]
    assert row2["role"] == "dev"
    text = demo_report(row2, second, [])
    assert (f"NOT PROMOTED (rejected): {ENCODER_NAME} v2 stays challenger; the champion is "
            "still v1") in text
    assert "collapsed" in second["reasons"][-1] and f"  - {second['reasons'][-1]}" in text
    assert float(_row(text, "voice features, 6 s")[0]) == pytest.approx(
        row2["metrics"]["diversity_6s"], abs=5e-4)
