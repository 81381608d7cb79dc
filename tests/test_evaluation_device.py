"""Evaluation's device setting (issue 27): `EvaluateParams.device` / `evaluate_model(device=)`
reach the models and the retrieval ranking; the ranking on a torch device gives the CPU's ranks.

On the CPU: the torch ranking (run on the CPU device) equals numpy's, rank for rank, ties
included; `device="cpu"` and the default scores are the same numbers; a bad device name is
refused before anything loads. With CUDA (`pytest -m gpu`, a machine with MLflow): the same
evaluation on the GPU against the CPU, every metric within 1e-4 relative (the ranking is
float64 on both; the voice encoder runs in float32, where cuDNN may use TF32: the recall
values, fractions of 28 clips, come out equal). The GPU checks that need no MLflow (ranks,
a real encoder's features) are in tests/test_gpu_evaluation.py.

    pytest -q tests/test_evaluation_device.py
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import tone_encoder, tracked_eval_data

from s2f.devices import DeviceError
from s2f.evaluation import metrics
from s2f.evaluation.run import evaluate_model
from s2f.evaluation.scores import paper_retrieval_scores, retrieval_scores
from s2f.registry.inference import LoadedModel, ModelRef

CPU = torch.device("cpu")
CONTROL = ModelRef(uri="control (untracked)", name=None, version=None, run_id=None)


def features(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("distance", ["l2", "l1", "cosine"])
def test_ranks_on_a_torch_device_equal_numpy_s(distance: str) -> None:
    pool = features(300, 64, 0)
    pred = pool[:200] + 2.5 * features(200, 64, 1)
    target = np.arange(200)
    cpu = metrics.distance_ranks(pred, pool, target, distance)  # type: ignore[arg-type]
    dev = metrics.distance_ranks(pred, pool, target, distance,  # type: ignore[arg-type]
                                 device=CPU)
    assert cpu.dtype == dev.dtype == np.int64
    assert (cpu > 0).any() and (cpu == 0).any()  # a ranking with hits and misses
    np.testing.assert_array_equal(dev, cpu)
    blocks = metrics.device_ranks(pred, pool, target, distance, CPU,  # type: ignore[arg-type]
                                  block_rows=7)
    np.testing.assert_array_equal(blocks, cpu)  # blocks that do not divide the queries


def test_ties_count_against_the_model_on_the_device_too() -> None:
    pool = features(10, 8, 2)
    pool[5] = pool[3]  # the true face of query 3 has a twin
    pred = pool[[3, 4]].copy()
    for distance in ("l2", "l1", "cosine"):
        ranks = metrics.distance_ranks(pred, pool, np.array([3, 4]), distance,  # type: ignore[arg-type]
                                       device=CPU)
        assert ranks.tolist() == [1, 0], distance
    cos = metrics.retrieval_ranks(pred, pool, np.array([3, 4]), device=CPU)
    np.testing.assert_array_equal(cos, metrics.retrieval_ranks(pred, pool, np.array([3, 4])))
    with pytest.raises(ValueError, match="unknown retrieval distance"):
        metrics.device_ranks(pred, pool, np.array([3, 4]), "l3", CPU)  # type: ignore[arg-type]


def test_score_tables_on_a_device_equal_the_cpu_s() -> None:
    true = features(40, 16, 3)
    pred = true + features(40, 16, 4)
    pred[7] = np.nan  # a clip without a prediction is left out on both paths
    pool, target = true[::2], np.arange(40) // 2
    for device in (None, CPU):
        flat, rows = retrieval_scores(pred, pool, target, "model", 6.0, 50, 0, device=device)
        paper, paper_rows = paper_retrieval_scores(pred, true, "model", 6.0, 50, 0,
                                                   distractors=features(5, 16, 5), device=device)
        if device is None:
            expected = (flat, rows, paper, paper_rows)
    assert (flat, rows, paper, paper_rows) == expected


def _evaluate(tmp_path: Path, **kwargs: object) -> dict[str, float]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tracked_eval_data(tmp_path)
    loaded = LoadedModel(CONTROL, tone_encoder(data, noise=0.3), {"encoder": "dlib-resnet"})
    return evaluate_model(data.layout, decoder_uri=None, role="test", n_boot=20, record=False,
                          encoder=loaded, **kwargs).metrics  # type: ignore[arg-type]


def same_numbers(a: dict[str, float], b: dict[str, float], rel: float = 0.0) -> list[str]:
    """The metric names whose values differ by more than `rel` (NaN equals NaN)."""
    assert a.keys() == b.keys()
    return [k for k in a if not (math.isnan(a[k]) and math.isnan(b[k]))
            and abs(a[k] - b[k]) > rel * max(abs(b[k]), 1e-2)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the default is the GPU there")
def test_cpu_given_is_the_default_path_on_a_machine_without_cuda(tmp_path: Path) -> None:
    default = _evaluate(tmp_path / "a")
    given = _evaluate(tmp_path / "b", device="cpu")
    assert default["recall_at_1_6s"] > default["mean_face_recall_at_1"]  # scored, not empty
    assert same_numbers(given, default) == []


def test_a_bad_device_name_is_refused_before_anything_loads(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from flows.params import EvaluateParams

    with pytest.raises(DeviceError, match="'gpu'"):
        evaluate_model(tmp_path / "nowhere", "models:/none/1", device="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="device"):
        EvaluateParams(device="gpu")
    assert EvaluateParams(device="cuda:1").device == "cuda:1"
    assert EvaluateParams().device == "auto"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluation_on_the_gpu_gives_the_cpu_s_numbers(tmp_path: Path) -> None:
    cpu = _evaluate(tmp_path / "cpu", device="cpu")
    gpu = _evaluate(tmp_path / "gpu", device="cuda")
    assert same_numbers(gpu, cpu, rel=1e-4) == []
