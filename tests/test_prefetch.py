"""The multi-process loader (`s2f.train.prefetch`) yields the stream's own batches, bit for bit.

Same clip keys, same random windows, same features, in the same order, across an epoch
boundary, from a resume point and for one rank's slice; and a short training run with loader
workers ends with exactly the weights of the in-process loader (no tolerance: the same bytes
reach the same arithmetic). Spawns worker processes: ~30 s on 2 loaded cores.

    pytest tests/test_prefetch.py
"""

from __future__ import annotations

import pytest
import torch

from s2f.media.audio import AudioConfig
from s2f.train.data import PairStream
from s2f.train.prefetch import prefetched
from s2f.train.synthetic import SyntheticCorpus, build
from s2f.train.voice import resolve_loader, train_voice_encoder
from storage.layout import DataLayout

CORPUS = SyntheticCorpus(identities=12, clips_per_identity=2, test_identities=2, dim=8,
                         seconds=0.6, faces=False, shard_size=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("prefetch")).ensure()
    build(layout, CORPUS)
    return layout


def stream(layout: DataLayout, part: tuple[int, int] = (0, 1)) -> PairStream:
    return PairStream(layout, "dlib-resnet", "train", AudioConfig(seconds=0.25), 4, seed=3,
                      dev_fraction=0.2, random_crop=True, part=part)


def same(a: list, b: list) -> None:
    assert [(e, i) for e, i, _ in a] == [(e, i) for e, i, _ in b]
    for (_, _, x), (_, _, y) in zip(a, b, strict=True):
        assert x.clip_keys == y.clip_keys
        assert torch.equal(x.waves, y.waves) and torch.equal(x.features, y.features)


@pytest.mark.parametrize("part", [(0, 1), (1, 2)])
def test_workers_yield_the_streams_batches(corpus: DataLayout, part: tuple[int, int]) -> None:
    s = stream(corpus, part)
    per_epoch = len(s)
    n = per_epoch + 3  # crosses into the next epoch (new order, new windows)
    want = [x for _, x in zip(range(n), s.forever(1, 1), strict=False)]
    gen = prefetched(s, 1, 1, workers=2)
    got = [x for _, x in zip(range(n), gen, strict=False)]
    gen.close()
    same(got, want)
    assert {e for e, _, _ in got} == {1, 2}


def test_one_epoch_with_a_limit(corpus: DataLayout) -> None:
    s = stream(corpus)
    want = [(0, i, b) for i, b in s.batches(0)][:2]
    same(list(prefetched(s, forever=False, workers=2, limit=2)), want)
    same(list(prefetched(s, forever=False, workers=0, limit=2)), want)


def test_dali_wants_the_in_process_loader() -> None:
    with pytest.raises(ValueError, match="loader_workers=0"):
        resolve_loader("dali", cuda=True, workers=2)
    assert resolve_loader("auto", cuda=True, workers=2) == "pyav"


def test_workers_train_the_same_weights(corpus: DataLayout, tmp_path) -> None:
    from s2f.train.config import TrainConfig

    def run(workers: int) -> dict[str, torch.Tensor]:
        cfg = TrainConfig(seconds=1.0, channels=[4] * 6 + [8] * 3, fc_width=32, batch_size=4,
                          steps=4, checkpoint_every=100, val_every=2, log_every=2,
                          dev_fraction=0.2, decoder="random", track=False,
                          register_model=False, loader_workers=workers, device="cpu")
        res = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / str(workers))
        ck = torch.load(res.checkpoint, weights_only=True)
        assert res.history["val_loss"]
        return {**ck["model"], **{f"ema.{k}": v for k, v in ck["ema"].items()}}

    a, b = run(0), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
