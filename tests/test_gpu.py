"""The CUDA fast path of the training loops (`pytest -m gpu`; skipped without CUDA).

Needs only the training stack (torch, numpy, pyarrow, polars, pydantic, av, kornia): it runs
on a GPU machine without Prefect, MLflow, DALI or dlib. What it checks on the GPU:
- the compiled bf16 training step (`torch_compile`) follows the eager one: same losses to bf16
  rounding over a few steps of the same batches (the kernels differ, the maths does not);
- the real loop with loader workers (pinned batches, validation, checkpoint, EMA) runs;
- the pinned batches of the worker loader are the stream's own;
- the face decoder's bf16 loop runs.

    pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from s2f.media.audio import AudioConfig
from s2f.train.config import DecoderTrainConfig, TrainConfig
from s2f.train.data import PairStream
from s2f.train.synthetic import SyntheticCorpus, build
from storage.layout import DataLayout

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CORPUS = SyntheticCorpus(identities=20, clips_per_identity=2, test_identities=2, dim=8,
                         seconds=1.5, faces=True, shard_size=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("gpu")).ensure()
    build(layout, CORPUS)
    return layout


def tiny(**over: object) -> TrainConfig:
    base: dict[str, object] = dict(
        seconds=1.0, channels=[8] * 6 + [16] * 3, fc_width=32, batch_size=8, steps=6,
        checkpoint_every=3, val_every=3, log_every=2, dev_fraction=0.2, decoder="random",
        track=False, register_model=False, device="cuda", audio_loader="pyav")
    base.update(over)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_compiled_step_follows_the_eager_one(corpus: DataLayout, tmp_path: Path) -> None:
    from s2f.train.readback import host_floats
    from s2f.train.voice import VoiceTrainer

    def losses(compiled: bool) -> list[float]:
        tr = VoiceTrainer(tiny(torch_compile=compiled), corpus, None, ckpt_dir=tmp_path)
        batches = tr.training_batches()
        pending = [tr.train_step(b) for _, (_, _, b) in zip(range(4), batches, strict=False)]
        batches.close()
        return [t["loss"] for t in host_floats(pending)]

    eager, compiled = losses(False), losses(True)
    assert all(np.isfinite(compiled))
    # bf16 autocast: ~3 significant digits per op; 4 steps of lr 1e-3 keep the runs within 2 %
    np.testing.assert_allclose(compiled, eager, rtol=2e-2)


def test_loop_with_loader_workers(corpus: DataLayout, tmp_path: Path) -> None:
    from s2f.train.voice import train_voice_encoder

    res = train_voice_encoder(tiny(loader_workers=2), corpus, ckpt_dir=tmp_path)
    assert res.step == 6 and np.isfinite(res.train_loss)
    assert [s for s, _ in res.history["val_loss"]] == [3, 6]
    assert next(res.model.parameters()).is_cuda


def test_pinned_worker_batches_are_the_streams(corpus: DataLayout) -> None:
    from s2f.train.prefetch import prefetched

    s = PairStream(corpus, "dlib-resnet", "train", AudioConfig(seconds=1.0), 4, seed=2,
                   dev_fraction=0.2, random_crop=True)
    gen = prefetched(s, workers=2, pin=True)
    got = [b for _, (_, _, b) in zip(range(3), gen, strict=False)]
    gen.close()
    want = [b for _, (_, _, b) in zip(range(3), s.forever(), strict=False)]
    for g, w in zip(got, want, strict=True):
        assert g.waves.is_pinned() and g.features.is_pinned()
        assert g.clip_keys == w.clip_keys and torch.equal(g.waves, w.waves)


def test_face_decoder_bf16_loop(corpus: DataLayout, tmp_path: Path) -> None:
    from s2f.train.decoder import train_face_decoder

    res = train_face_decoder(DecoderTrainConfig(steps=4, batch_size=4, log_every=2,
                                                device="cuda", bf16=True, track=False,
                                                register_model=False, dev_fraction=0.2),
                             corpus, ckpt_dir=tmp_path)
    assert res.step == 4 and np.isfinite(res.train_loss)


def test_compiled_decoder_step_follows_the_eager_one(corpus: DataLayout, tmp_path: Path) -> None:
    from s2f.train.decoder import DecoderTrainer
    from s2f.train.readback import host_floats

    def losses(compiled: bool) -> list[float]:
        cfg = DecoderTrainConfig(steps=4, batch_size=4, device="cuda", torch_compile=compiled,
                                 track=False, register_model=False, dev_fraction=0.2)
        tr = DecoderTrainer(cfg, corpus, ckpt_dir=tmp_path / str(compiled))
        assert (tr.train_model is not tr.model) == compiled
        batches = tr.training_batches()
        pending = [tr.train_step(b) for _, (_, _, b) in zip(range(4), batches, strict=False)]
        return [t["loss"] for t in host_floats(pending)]

    eager, compiled = losses(False), losses(True)
    assert all(np.isfinite(compiled))
    # fp32 with TF32 convolutions either way; fused kernels reorder sums: well within 1 %
    np.testing.assert_allclose(compiled, eager, rtol=1e-2)


def test_dali_audio_path(corpus: DataLayout) -> None:
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed here")
    s = PairStream(corpus, "dlib-resnet", "train", AudioConfig(seconds=1.0), 4,
                   dev_fraction=0.2, loader="dali")
    assert s.load(s.plan(0)[0]).waves.shape == (4, 16000)
