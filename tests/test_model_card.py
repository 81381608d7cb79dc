"""The model card: written from the evaluation, equal to the `evaluations` table, in MLflow."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import ENCODER_NAME, register_models, tracked_eval_data
from mlflow import MlflowClient

from s2f.evaluation.data import data_summary
from s2f.evaluation.record import read_evaluations
from s2f.evaluation.run import evaluate_model
from s2f.release.model_card import publish_model_card, write_model_card

_NUM = r"([0-9.]+|n/a)"


def test_card_numbers_equal_the_evaluations_table_and_reach_the_registry(tmp_path: Path) -> None:
    data = tracked_eval_data(tmp_path)
    register_models(data, "challenger", noise=0.7,
                    params={"encoder": "dlib-resnet", "dev_fraction": "0.1", "seconds": "3.0"})
    evaluate_model(data.layout, n_boot=100)
    (row,) = read_evaluations(data.layout)  # the table, not the in-memory result
    m = row["metrics"]
    card = publish_model_card(data.layout, row)

    recall_rows = re.findall(
        rf"^\| (\d+) \| {_NUM} \| {_NUM} \[{_NUM}, {_NUM}\] \| {_NUM} \[{_NUM}, {_NUM}\] "
        rf"\| {_NUM} \[{_NUM}, {_NUM}\] \|$", card, flags=re.M)
    assert [int(r[0]) for r in recall_rows] == [1, 2, 5, 10]  # K < 14 identities
    for k, chance, *cells in recall_rows:
        expected = [m[f"chance_at_{k}"]]
        for name in (f"recall_at_{k}_3s", f"recall_at_{k}_6s", f"mean_face_recall_at_{k}"):
            expected += [m[name], m[f"{name}_ci_low"], m[f"{name}_ci_high"]]
        assert [float(c) for c in (chance, *cells)] == pytest.approx(expected, abs=5e-5)
    cos = re.search(rf"^\| voice, 6s \| {_NUM} ± {_NUM} \|", card, flags=re.M)
    assert cos and float(cos.group(1)) == pytest.approx(m["cosine_deg_mean_6s"], abs=5e-5)
    paper = re.search(rf"^\| voice, 6s \| cosine \| {_NUM} \[{_NUM}, {_NUM}\] \| {_NUM} \[{_NUM}, "
                      rf"{_NUM}\] \| {_NUM} \[{_NUM}, {_NUM}\] \| {_NUM} \[{_NUM}, {_NUM}\] \|$",
                      card, flags=re.M)
    assert paper and float(paper.group(10)) == pytest.approx(m["paper_recall_at_10_cosine_6s"],
                                                             abs=5e-5)
    assert "| paper (reference), 6 s | cosine |" in card and "shuffled-voice control" in card
    nose = re.search(r"^\| nasal_index \| (-?[0-9.]+|n/a) \|", card, flags=re.M)
    assert nose and (nose.group(1) == "n/a" and np.isnan(m["cranio_nasal_index_r"])
                     or float(nose.group(1)) == pytest.approx(m["cranio_nasal_index_r"], abs=5e-4))

    for needed in ("## Intended use", "## Out of scope", "Identifying, recognising, locating",
                   "Forensic", "hiring",
                   "## What the model cannot recover", "A recognisable face",
                   "composition of the training data", "is unknown", "invalid_row: 1",
                   "test: 28 clips / 14 videos", "train: 36 clips / 18 videos",
                   f"test snapshot id: {row['split_snapshot_id']}",
                   f"Training data snapshot id: {data_summary(data.layout)['train_snapshot_id']}",
                   "`dlib-resnet`", "no activation", "< 0.1 goes to dev"):
        assert needed in card, needed

    client = MlflowClient()
    version = client.get_model_version(ENCODER_NAME, row["model_version"])
    # The registry's description column holds 5,000 characters: the full card, or the compact
    # one with the same headline tables when the full card is longer.
    assert len(version.description) <= 5000
    assert version.description == card or (len(card) > 5000 and "see `model_card.md`" in
                                           version.description)
    for line in ("| 10 |", "| voice, 6s |", "## Out of scope", "## Known biases"):
        # the first such line: the headline tables come before the paper-protocol table
        in_card = next(x for x in card.splitlines() if x.startswith(line))
        assert in_card in version.description.splitlines()
    logged = client.download_artifacts(row["mlflow_run_id"], "model_card.md", str(tmp_path))
    assert Path(logged).read_text() == card


def test_compact_card_drops_only_the_detail_tables(tmp_path: Path) -> None:
    row = {"model_name": "m", "model_version": "1", "split_snapshot_id": "abc",
           "metrics": {"recall_at_1_6s": 0.5, "chance_at_1": 0.1, "cranio_nose_width_r": 0.3,
                       "cranio_nose_width_p": 0.01}}
    full = write_model_card(row, {}, {})
    compact = write_model_card(row, {}, {}, compact=True)
    assert "| nose_width |" in full and "| nose_width |" not in compact
    assert "## Known biases and limitations" in compact and "| 1 | 0.1000 |" in compact
