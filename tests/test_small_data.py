"""The small-data options of issue 28 that `tests/test_voice_frontends.py` does not cover: light
audio augmentation of the training waves (seeded, training only) and the median F0 as an extra
input of the ge2e head (fitted on train, saved and reloaded with the model, measured the same
way by the registry's inference path), and how `--set` reaches them.

    pytest -q tests/test_small_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from train_helpers import tiny

from s2f.models.ge2e import Ge2eVoiceEncoder
from s2f.models.pitch import median_f0
from s2f.train.augment import Augment, speed_perturb
from s2f.train.config import TrainConfig
from s2f.train.data import PairStream
from s2f.train.synthetic import SyntheticCorpus, build
from s2f.train.voice import VoiceTrainer, training_f0
from storage.layout import DataLayout

SR = 16000
CORPUS = SyntheticCorpus(identities=10, clips_per_identity=2, test_identities=2, dim=8,
                         seconds=1.2, faces=False, shard_size=8)
AUGMENT = {"augment_speed": [0.9, 1.1], "augment_gain_db": 6.0, "augment_snr_db": [10.0, 30.0]}


def tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    """A voiced sound: harmonics of `f0` with falling amplitude."""
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("smalldata")).ensure()
    build(layout, CORPUS)
    return layout


def stream(layout: DataLayout, cfg: TrainConfig, role: str = "train") -> PairStream:
    return PairStream(layout, cfg.encoder, role, cfg.audio_config(), cfg.batch_size,  # type: ignore[arg-type]
                      cfg.seed, cfg.dev_fraction, random_crop=cfg.random_crop,
                      augment=cfg.augment() if role == "train" else None)


# -- augmentation ---------------------------------------------------------------------------------

def test_augment_parts_do_what_they_say() -> None:
    wave = tone(150.0, 2.0)
    fast = speed_perturb(wave, 1.1)
    assert fast.size == round(wave.size / 1.1)
    assert abs(median_f0(fast, SR) / median_f0(wave, SR) - 1.1) < 0.02  # resampled: pitch too
    rng = np.random.default_rng(0)
    louder = Augment(gain_db=6.0).after_crop(wave, rng)
    ratio_db = 20 * np.log10(np.abs(louder).max() / np.abs(wave).max())
    assert 0 < abs(ratio_db) <= 6.0 and np.allclose(louder / louder.max(), wave / wave.max(),
                                                       atol=1e-5)
    noisy = Augment(snr_db=(20.0, 20.0)).after_crop(wave, np.random.default_rng(1))
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean((noisy - wave) ** 2))
    assert abs(snr - 20.0) < 0.5
    off = Augment()
    r = off.rng(0, 0, 0)
    np.testing.assert_array_equal(off.after_crop(off.before_crop(wave, r), r), wave)
    with pytest.raises(ValueError, match="speed"):
        Augment(speed=(1.1, 0.9))
    with pytest.raises(ValidationError, match="low, high"):
        tiny(augment_snr_db=[20.0])


def test_augmentation_is_seeded_and_touches_training_waves_only(corpus: DataLayout) -> None:
    cfg, plain_cfg = tiny(**AUGMENT), tiny()
    aug, plain = stream(corpus, cfg), stream(corpus, plain_cfg)
    batch = aug.plan(0)[0]
    first = aug.load(batch, 0).waves
    assert first.shape == plain.load(batch, 0).waves.shape
    # the same seed gives the same waves, in another stream too (a rerun, a loader worker)
    torch.testing.assert_close(stream(corpus, cfg).load(batch, 0).waves, first, rtol=0, atol=0)
    assert not torch.allclose(first, plain.load(batch, 0).waves)       # it does augment
    assert not torch.allclose(first, aug.load(batch, 1).waves)         # a new draw each epoch
    other_seed = stream(corpus, tiny(**AUGMENT, seed=1))
    assert not torch.allclose(other_seed.load(batch, 0).waves, first)
    # no epoch (first windows: what the F0 statistics read) is never augmented
    torch.testing.assert_close(aug.load(batch).waves, plain.load(batch).waves, rtol=0, atol=0)
    # validation: the trainer's dev stream has no augmentation and gives the plain waves
    tr, tr_plain = VoiceTrainer(cfg, corpus, None), VoiceTrainer(plain_cfg, corpus, None)
    assert tr.train.augment is not None and tr.valid.augment is None
    torch.testing.assert_close(tr.validation_batches()[0].waves,
                               tr_plain.validation_batches()[0].waves, rtol=0, atol=0)
    with pytest.raises(ValueError, match="training waves only"):
        PairStream(corpus, cfg.encoder, "dev", cfg.audio_config(), 4, augment=cfg.augment())


@pytest.mark.parametrize("frontend", ["paper", "ge2e"])
def test_one_augmented_training_step(corpus: DataLayout, tmp_path: Path, frontend: str) -> None:
    tr = VoiceTrainer(tiny(voice_frontend=frontend, **AUGMENT), corpus, None, ckpt_dir=tmp_path)
    batch = next(iter(tr.training_batches()))[2]
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    terms = tr.host_terms([tr.train_step(batch)])[0]
    assert np.isfinite(terms["loss"])
    changed = {k for k, v in tr.model.state_dict().items() if not torch.equal(before[k], v)}
    assert ("fc2.weight" if frontend == "paper" else "head.2.weight") in changed


# -- F0 as an input -------------------------------------------------------------------------------

def test_f0_input_is_refused_for_the_paper_cnn() -> None:
    with pytest.raises(ValidationError, match="f0_input needs voice_frontend='ge2e'"):
        tiny(f0_input=True)


def test_f0_input_forward_and_training_step(corpus: DataLayout, tmp_path: Path) -> None:
    tr = VoiceTrainer(tiny(voice_frontend="ge2e", f0_input=True), corpus, None, ckpt_dir=tmp_path)
    model = tr.model
    assert isinstance(model, Ge2eVoiceEncoder) and model.f0 is not None
    assert model.head[0].in_features == 257  # the embedding and the F0
    f0 = training_f0(tr.train)
    log_f0 = np.log(f0[np.isfinite(f0)])
    assert log_f0.size >= 2
    assert abs(float(model.f0.log_mean) - log_f0.mean()) < 1e-5
    assert abs(float(model.f0.log_std) - log_f0.std()) < 1e-5
    # the feature: log F0 in train z-units; an octave up is log(2)/std more; silence is 0
    z = model.f0(torch.from_numpy(np.stack([tone(110.0), tone(220.0), np.zeros(SR, np.float32)])))
    assert z.shape == (3, 1)
    assert abs(float(z[1] - z[0]) - np.log(2) / float(model.f0.log_std)) < 0.05
    assert float(z[2]) == 0.0
    model.eval()
    with torch.no_grad():  # the head reads it: another pitch, another prediction
        out = model(torch.from_numpy(np.stack([tone(110.0), tone(220.0)])))
    assert out.shape == (2, CORPUS.dim) and not torch.allclose(out[0], out[1])
    before = model.head[0].weight.detach().clone()
    terms = tr.host_terms([tr.train_step(next(iter(tr.training_batches()))[2])])[0]
    assert np.isfinite(terms["loss"]) and not torch.equal(before, model.head[0].weight)


def test_f0_model_saved_and_reloaded_predicts_the_same(corpus: DataLayout, tmp_path: Path
                                                        ) -> None:
    import json

    from s2f.registry.inference import LoadedModel, ModelRef, encode_waves
    from s2f.registry.weights import load_model_dir, save_model_dir

    cfg = tiny(voice_frontend="ge2e", f0_input=True, **AUGMENT)
    tr = VoiceTrainer(cfg, corpus, None, ckpt_dir=tmp_path / "ckpt")
    tr.train_step(next(iter(tr.training_batches()))[2])
    model = tr.export_model().eval()
    files = save_model_dir(model, tmp_path / "model")
    assert json.loads(files["config"].read_text())["config"]["f0_input"] is True
    loaded, _ = load_model_dir(tmp_path / "model")
    assert isinstance(loaded, Ge2eVoiceEncoder) and loaded.f0 is not None
    assert float(loaded.f0.log_mean) == float(model.f0.log_mean) != 0.0  # type: ignore[union-attr]
    waves = [tone(120.0, 1.4), tone(210.0, 0.8)]
    with torch.no_grad():
        direct = model(torch.from_numpy(np.stack([np.resize(w, SR) for w in waves]))).numpy()
    # the registry's path (evaluation, `s2f predict`, serving): the wave in, F0 measured inside
    served = encode_waves(LoadedModel(ModelRef("local", None, None, None), loaded), waves, 1.0)
    np.testing.assert_allclose(served, direct, rtol=1e-5, atol=1e-6)


# -- records and flags ----------------------------------------------------------------------------

def test_set_reaches_the_fields_and_they_are_recorded(tmp_path: Path) -> None:
    from flows.cli import COMMAND_BY_NAME, _values, build_parser
    from s2f.release.model_card import write_model_card

    sets = ["--set", "augment_speed=[0.9,1.1]", "--set", "augment_gain_db=3",
            "--set", "augment_snr_db=[15,30]", "--set", "f0_input=true"]
    rp = build_parser().parse_args(["real-pairs", "--pairs", str(tmp_path), "--voice-frontend",
                                    "ge2e", *sets])
    params = COMMAND_BY_NAME["real-pairs"].model(**_values(COMMAND_BY_NAME["real-pairs"], rp))
    cfg = TrainConfig.preset_config("small", voice_frontend="ge2e", **params.overrides)
    assert cfg.augment() == Augment(speed=(0.9, 1.1), gain_db=3.0, snr_db=(15.0, 30.0))
    assert cfg.f0_input and cfg.frontend_config(8).f0_input  # type: ignore[union-attr]
    flat = cfg.flat()  # the MLflow params
    assert flat["augment_speed"] == "[0.9, 1.1]" and flat["f0_input"] == "True"
    assert tiny().augment() is None and tiny().flat()["f0_input"] == "False"
    card = write_model_card({"metrics": {}}, {}, {**flat, "ge2e_head_width": "16"})
    assert "median F0 (`f0_input`" in card


def test_new_fields_at_their_default_keep_older_runs_identity() -> None:
    """A run checkpointed before these fields existed keeps its folder: at their defaults
    they are not part of the config hash; set, they are."""
    from s2f.train.checkpoint import OMITTED_AT_DEFAULT, identity_config

    assert not OMITTED_AT_DEFAULT & set(identity_config(tiny()))
    chosen = identity_config(tiny(voice_frontend="ge2e", f0_input=True, **AUGMENT))
    assert OMITTED_AT_DEFAULT <= set(chosen)
