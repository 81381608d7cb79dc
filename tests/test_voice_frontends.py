"""The two voice front-ends (`paper` CNN, pretrained `ge2e` + head): forward and a training step
on CPU, the GE2E weights and mel against resemblyzer's own numbers, the small-data options, and
a registered ge2e model through the registry and `s2f predict`.

The golden values below were computed once by resemblyzer 0.1.4 itself (`VoiceEncoder.
embed_utterance` and `audio.wav_to_mel_spectrogram`, librosa 0.11.0) on `speechlike_wave(6.0)`,
after its `normalize_volume(wav, -30, increase_only=True)`; librosa is not a dependency of the
project, so the test holds its numbers. Measured agreement of `s2f.models.ge2e`: mel max
relative difference 2.7e-7 (of the frame's maximum), embedding max absolute difference 1e-7
(cosine 1.0000000); the tolerances here are 1e-5 of the frame's maximum for the mel and 1e-5
absolute for the embedding.

    pytest -q tests/test_voice_frontends.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import tiny

from s2f.models.frontend import TEST_WINDOW_SECONDS, window_starts
from s2f.models.ge2e import (
    GE2E_SHA256,
    Ge2eConfig,
    Ge2eSpeakerEncoder,
    Ge2eVoiceEncoder,
    ge2e_weights_path,
    load_ge2e_state,
    mel_filterbank,
    normalize_volume,
    partial_starts,
)
from s2f.train.synthetic import SyntheticCorpus, build
from s2f.train.voice import VoiceTrainer, train_voice_encoder
from storage.layout import DataLayout

SR = 16000
# resemblyzer 0.1.4 + librosa 0.11.0 on speechlike_wave(6.0) (see the module docstring)
MEL_FRAME_100 = (
    1.3443021e-02, 6.4335823e-02, 1.5926519e-02, 2.1460144e-02, 5.6580608e-03,
    1.3340686e-02, 3.1510179e-03, 7.9298280e-03, 2.6824165e-03, 5.5981879e-03,
    1.7831211e-03, 4.4580381e-03, 1.2711919e-03, 2.7830354e-03, 1.3377453e-03,
    1.4752692e-03, 1.2029757e-03, 7.4318639e-04, 6.0560409e-04, 4.3757926e-04,
    2.8770059e-04, 1.6292484e-04, 9.5498945e-05, 4.6010216e-05, 1.9793612e-05,
    7.9505708e-06, 2.8358195e-06, 6.5981294e-07, 1.6064034e-07, 2.4415458e-08,
    2.9287464e-09, 2.5759991e-10, 1.1034805e-11, 3.2912197e-14, 1.5661958e-14,
    8.0148240e-15, 4.3415470e-15, 2.5196554e-15, 1.6049707e-15, 1.1713928e-15,
)
EMBEDDING_32 = (
    0.0172496, 0.0474010, 0.0000000, 0.0000000, 0.0000000, 0.0000000, 0.0000000, 0.0012306,
    0.0049020, 0.0095046, 0.0973499, 0.0708538, 0.0173905, 0.0000000, 0.1586468, 0.0019141,
    0.1068765, 0.0666340, 0.0632889, 0.0000000, 0.0341016, 0.0000000, 0.0000000, 0.0000000,
    0.0000000, 0.0904419, 0.0000000, 0.0000000, 0.0000000, 0.0451096, 0.0183079, 0.0242647,
)
FILTERBANK_SUM = 0.9994971752166748  # librosa.filters.mel(sr=16000, n_fft=400, n_mels=40).sum()


def speechlike_wave(seconds: float, sr: int = SR) -> np.ndarray:
    """A deterministic voiced sound: harmonics of a gliding pitch (110 ± 60 Hz) under a
    formant-like weighting, with a syllable-rate envelope (no random numbers)."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.4 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    w = sum(np.sin(k * phase) / k * np.exp(-((k * 110 - 700) / 900) ** 2) for k in range(1, 30))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    return (0.05 * w * env).astype(np.float32)


CORPUS = SyntheticCorpus(identities=12, clips_per_identity=2, test_identities=2, dim=8,
                         seconds=0.6, faces=False, shard_size=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    layout = DataLayout(tmp_path_factory.mktemp("frontends")).ensure()
    build(layout, CORPUS)
    return layout


@pytest.fixture(scope="module")
def speaker() -> Ge2eSpeakerEncoder:
    enc = Ge2eSpeakerEncoder()
    enc.load_state_dict(load_ge2e_state())
    return enc.eval()


# -- the pretrained encoder against resemblyzer -------------------------------------------------

def test_ge2e_weights_load_with_weights_only_without_importing_resemblyzer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", spy)
    state = load_ge2e_state()
    assert calls and all(c.get("weights_only") is True for c in calls)
    assert "resemblyzer" not in sys.modules  # only its weights file was read
    assert ge2e_weights_path().name == "pretrained.pt"
    assert state["lstm.weight_ih_l0"].shape == (4 * 256, 40)
    assert state["lstm.weight_hh_l2"].shape == (4 * 256, 256)
    assert state["linear.weight"].shape == (256, 256)


def test_a_different_weights_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "pretrained.pt"
    torch.save({"model_state": {}}, other)
    with pytest.raises(ValueError, match=GE2E_SHA256[:12]):
        load_ge2e_state(other)


def test_mel_matches_resemblyzer_and_librosa(speaker: Ge2eSpeakerEncoder) -> None:
    fb = mel_filterbank()
    assert fb.shape == (40, 201) and abs(float(fb.sum()) - FILTERBANK_SUM) < 1e-6
    wave = torch.from_numpy(speechlike_wave(6.0))[None]
    with torch.no_grad():
        mel = speaker.mel(normalize_volume(wave))[0].numpy()
    assert mel.shape == (601, 40)  # centred frames: 1 + N // 160
    golden = np.asarray(MEL_FRAME_100, np.float32)
    np.testing.assert_allclose(mel[100], golden, rtol=0, atol=1e-5 * float(golden.max()))


def test_embedding_is_l2_normalised_256d_and_matches_resemblyzer(
        speaker: Ge2eSpeakerEncoder) -> None:
    wave = torch.from_numpy(speechlike_wave(6.0))[None]
    with torch.no_grad():
        emb = speaker(wave)[0].numpy()
    assert emb.shape == (256,)
    assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-5
    np.testing.assert_allclose(emb[:32], np.asarray(EMBEDDING_32), rtol=0, atol=1e-5)
    # a different voice gives a different embedding (the check can fail)
    other = torch.from_numpy(speechlike_wave(6.0) * np.hanning(6 * SR).astype(np.float32))[None]
    with torch.no_grad():
        assert float(speaker(other)[0] @ torch.from_numpy(emb)) < 0.999


def test_partials_follow_resemblyzer() -> None:
    # 6 s: 7 partials 77 frames apart, the last padded to 99,520 samples (coverage 0.86)
    starts, padded = partial_starts(6 * SR)
    assert starts == [0, 77, 154, 231, 308, 385, 462] and padded == 99_520
    assert partial_starts(SR) == ([0], 25_600)  # shorter than a partial: one, zero-padded


# -- forward and one training step of each front-end -------------------------------------------

@pytest.mark.parametrize("frontend,finetune", [("paper", False), ("ge2e", False),
                                               ("ge2e", True)])
def test_one_training_step_on_cpu(corpus: DataLayout, tmp_path: Path, frontend: str,
                                  finetune: bool) -> None:
    tr = VoiceTrainer(tiny(voice_frontend=frontend, ge2e_finetune=finetune), corpus, None,
                      ckpt_dir=tmp_path)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    batch = next(iter(tr.training_batches()))[2]
    with torch.no_grad():
        out = tr.encode(batch.waves)
    assert out.shape == (4, CORPUS.dim) and torch.isfinite(out).all()
    terms = tr.host_terms([tr.train_step(batch)])[0]
    assert np.isfinite(terms["loss"])
    after = tr.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if frontend == "paper":
        assert "fc2.weight" in changed
        return
    assert isinstance(tr.model, Ge2eVoiceEncoder)
    assert {"head.0.weight", "head.2.weight"} <= changed
    assert any(k.startswith("speaker.") for k in changed) == finetune


def test_ge2e_run_resumes_to_the_same_weights(corpus: DataLayout, tmp_path: Path) -> None:
    cfg = tiny(voice_frontend="ge2e", ge2e_finetune=True, standardize_targets=True, steps=4,
               checkpoint_every=2, ema_decay=0.9)
    full = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / "full")
    part = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / "part", stop_after=2)
    assert part.step == 2
    rest = train_voice_encoder(cfg, corpus, ckpt_dir=tmp_path / "part", resume=True)
    a, b = full.model.state_dict(), rest.model.state_dict()
    assert rest.step == 4 and "scaler.mean" in a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def test_small_data_options(corpus: DataLayout, tmp_path: Path) -> None:
    cfg = tiny(voice_frontend="ge2e", standardize_targets=True, cosine_weight=0.5,
               test_window_average=True)
    tr = VoiceTrainer(cfg, corpus, None, ckpt_dir=tmp_path)
    feats = torch.from_numpy(tr.train.features())
    model = tr.model
    assert model.scaler is not None
    torch.testing.assert_close(model.scaler.mean, feats.mean(0))
    torch.testing.assert_close(model.scaler.std, feats.std(0, unbiased=False))
    terms = tr.host_terms([tr.train_step(next(iter(tr.training_batches()))[2])])[0]
    assert terms["loss_cosine"] > 0
    # eval: a 6 s input is the mean of its 3 s windows (hop 1.5 s); training: one pass
    wave = torch.from_numpy(speechlike_wave(6.0))[None]
    win = round(TEST_WINDOW_SECONDS * SR)
    model.eval()
    with torch.no_grad():
        averaged = model(wave)
        parts = torch.cat([model._predict(wave[:, s:s + win]) for s in window_starts(6 * SR, win)])
        whole = model._predict(wave)
    assert window_starts(6 * SR, win) == [0, 24_000, 48_000]
    torch.testing.assert_close(averaged[0], parts.mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(averaged, whole)


def test_paper_cnn_options_and_frontend_flags() -> None:
    from flows.cli import COMMAND_BY_NAME, _values, build_parser

    cfg = tiny(standardize_targets=True, test_window_average=True).encoder_config(out_dim=8)
    assert cfg.standardized and cfg.test_window_seconds == TEST_WINDOW_SECONDS
    assert isinstance(tiny(voice_frontend="ge2e").frontend_config(8), Ge2eConfig)
    args = build_parser().parse_args(["train", "--voice-frontend", "ge2e", "--ge2e-finetune",
                                      "--ge2e-head-width", "64"])
    params = COMMAND_BY_NAME["train"].model(**_values(COMMAND_BY_NAME["train"], args))
    assert params.frontend_overrides() == {"voice_frontend": "ge2e", "ge2e_head_width": 64,
                                           "ge2e_finetune": True}
    assert COMMAND_BY_NAME["train"].model().frontend_overrides() == {}  # TrainConfig decides


# -- registry, predict, model card ---------------------------------------------------------------

def test_registered_ge2e_model_round_trips_and_predicts(corpus: DataLayout, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from eval_helpers import use_tracking
    from mlflow import MlflowClient

    from s2f.media.mux import write_media
    from s2f.models.face_decoder import FaceDecoder, FaceDecoderConfig
    from s2f.registry.inference import encode_waves, load_registered_model
    from s2f.registry.predict import predict_files, read_speech
    from s2f.release.model_card import write_model_card
    from s2f.train.tracking import log_torch_model

    use_tracking(tmp_path)
    res = train_voice_encoder(tiny(voice_frontend="ge2e", standardize_targets=True, track=True,
                                   register_model=True), corpus, ckpt_dir=tmp_path / "ckpt")
    assert res.model_version == "1"
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load in a load"))
    loaded = load_registered_model(f"models:/speech2face-voice-encoder/{res.model_version}")
    monkeypatch.setattr(torch, "load", real_load)
    assert isinstance(loaded.module, Ge2eVoiceEncoder)
    assert loaded.params["voice_frontend"] == "ge2e"
    assert loaded.params["ge2e_weights_sha256"] == GE2E_SHA256
    waves = [speechlike_wave(2.0), speechlike_wave(1.3)]
    with torch.no_grad():
        direct = res.model.eval()(torch.from_numpy(np.stack(
            [np.resize(w, SR) for w in waves]))).numpy()
    np.testing.assert_allclose(encode_waves(loaded, waves, 1.0), direct, rtol=1e-5, atol=1e-6)

    torch.manual_seed(0)
    with mlflow.start_run():  # the decoder, logged and registered as training does
        info = log_torch_model(FaceDecoder(FaceDecoderConfig.small(in_dim=CORPUS.dim)).eval(),
                               "model", np.zeros((2, CORPUS.dim), np.float32),
                               "speech2face-face-decoder")
    assert str(info.registered_model_version) == "1"  # an int since the registry's digest tag
    audio = write_media(tmp_path / "voice.wav", None, audio=speechlike_wave(2.0),
                        video_codec=None, audio_codec="pcm")
    [pred] = predict_files([audio], tmp_path / "out",
                           model_uri="models:/speech2face-voice-encoder/1",
                           decoder_uri="models:/speech2face-face-decoder/1")
    assert pred.error is None and Path(pred.image_path).is_file()
    np.testing.assert_allclose(np.load(pred.feature_path),
                               encode_waves(loaded, [read_speech(audio)], 6.0)[0], rtol=1e-5)

    params = dict(MlflowClient().get_run(res.run_id).data.params)
    card = write_model_card({"metrics": {}}, {}, params)
    assert "## Voice front-end" in card and "VoxCeleb" in card and GE2E_SHA256 in card
    assert "trained from scratch" in write_model_card({"metrics": {}}, {}, {})
