"""Evaluation's GPU path against the CPU's, with only the training stack (`pytest -m gpu`; no
MLflow, Prefect or matplotlib needed, as on the lent GPU machine; skipped without CUDA).

- the retrieval ranks computed on the GPU (`metrics.device_ranks`, float64) equal numpy's on
  the CPU for L2, L1 and cosine (random features: no ties; a rank may differ only where two
  float64 distances agree to the last bits: at most 1 in 1,000, by one place);
- a real voice encoder's features (`encode_waves`, float32; cuDNN may use TF32) on the GPU
  follow the CPU's: per-clip cosine above 0.9999.

The whole evaluation on the GPU vs the CPU: tests/test_evaluation_device.py (needs MLflow).

    pytest -m gpu tests/test_gpu_evaluation.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2f.evaluation import metrics
from s2f.registry.inference import LoadedModel, ModelRef

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CONTROL = ModelRef(uri="benchmark", name=None, version=None, run_id=None)


@pytest.mark.parametrize("distance", ["l2", "l1", "cosine"])
def test_ranks_on_the_gpu_equal_the_cpu_s(distance: str) -> None:
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(3000, 256)).astype(np.float32)
    pred = pool[:2000] + 2.0 * rng.normal(size=(2000, 256)).astype(np.float32)
    target = np.arange(2000)
    cpu = metrics.distance_ranks(pred, pool, target, distance)  # type: ignore[arg-type]
    gpu = metrics.distance_ranks(pred, pool, target, distance,  # type: ignore[arg-type]
                                 device=torch.device("cuda"))
    assert (cpu > 0).any() and (cpu == 0).any()
    differ = cpu != gpu
    assert differ.mean() <= 1e-3 and np.abs(cpu - gpu).max() <= 1


def test_a_voice_encoder_s_features_on_the_gpu_follow_the_cpu_s() -> None:
    from s2f.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig
    from s2f.registry.inference import encode_waves

    torch.manual_seed(0)
    net = VoiceEncoder(VoiceEncoderConfig(seconds=1.0, channels=(8,) * 6 + (16,) * 3,
                                          fc_width=32, out_dim=16,
                                          final_activation="none")).eval()
    waves = [np.random.default_rng(i).normal(size=20_000).astype(np.float32) for i in range(12)]
    on_cpu = encode_waves(LoadedModel(CONTROL, net), waves, 1.0)
    on_gpu = encode_waves(LoadedModel(CONTROL, net.cuda()), waves, 1.0, batch_size=32)
    cos = (on_cpu * on_gpu).sum(1) / np.linalg.norm(on_cpu, axis=1) / np.linalg.norm(on_gpu, axis=1)
    assert cos.min() > 0.9999  # TF32 convolutions: ~1e-3 relative per value at most
