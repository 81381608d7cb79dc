"""MLflow: params/metrics/figures of both trainings, registered models with the `challenger`
alias, loaded back from the registry and run. Per-test absolute SQLite tracking store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s2f.media.audio import spectrogram
from s2f.registry.inference import load_registered_model
from s2f.registry.names import CHALLENGER, FACE_DECODER_NAME, VOICE_ENCODER_NAME
from s2f.train.config import DecoderTrainConfig, TrainConfig
from s2f.train.decoder import train_face_decoder
from s2f.train.synthetic import SyntheticCorpus, build
from s2f.train.tracking import (
    EXPERIMENT,
    input_fingerprint,
)
from s2f.train.voice import train_voice_encoder
from storage.layout import DataLayout


def test_runs_are_tracked_and_models_registered(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    layout = DataLayout(tmp_path / "data").ensure()
    build(layout, SyntheticCorpus(identities=10, clips_per_identity=2, dim=8, seconds=0.5,
                                  shard_size=8))
    fingerprint = input_fingerprint(layout)
    assert len(fingerprint) == 16 and fingerprint == input_fingerprint(layout)
    # no MLFLOW_TRACKING_URI: the data directory's own SQLite store and artifact root
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = mlflow.get_tracking_uri()
    try:
        dec = train_face_decoder(DecoderTrainConfig(image_size=32, batch_size=8, steps=2,
                                                    log_every=1, dev_fraction=0.2), layout)
        voice = train_voice_encoder(
            TrainConfig(seconds=1.0, channels=[4] * 6 + [8] * 3, fc_width=32, batch_size=4,
                        steps=2, log_every=1, val_every=2, dev_fraction=0.2), layout,
            decoder=dec.model)
        assert mlflow.get_tracking_uri() == layout.mlflow_tracking_uri
        client = MlflowClient()
        assert dec.model_version == "1" and voice.model_version == "1"
        for name in (VOICE_ENCODER_NAME, FACE_DECODER_NAME):
            assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == "1"
            assert "Never use it to identify" in client.get_model_version(name, "1").description
        run = client.get_run(voice.run_id)
        assert run.data.params["input_fingerprint"] == fingerprint
        assert run.data.params["lambda1"] == "0.025" and run.data.params["batch_size"] == "4"
        assert run.data.tags["distillation"].startswith("off")
        assert "final_val_loss_mean_baseline" in run.data.metrics
        assert len(client.get_metric_history(voice.run_id, "loss")) == 2
        arts = {a.path for a in client.list_artifacts(voice.run_id, "plots")}
        assert {"plots/loss.png", "plots/faces.png"} <= arts
        exp = client.get_experiment_by_name(EXPERIMENT)
        assert exp.artifact_location.startswith(layout.mlflow_artifacts.as_uri())
        uri = f"models:/{VOICE_ENCODER_NAME}@{CHALLENGER}"
        enc = load_registered_model(uri).module
        wave = torch.randn(2, 16000)
        spec = spectrogram(wave, TrainConfig(seconds=1.0).audio_config())
        voice.model.eval().cpu()
        torch.testing.assert_close(enc(spec), voice.model(spec))
        # MLflow's own loader resolves the same alias to the pickle-free pyfunc
        pyfunc = mlflow.pyfunc.load_model(uri)
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(pyfunc.predict(spec.numpy())),
                                       voice.model(spec))
        face = mlflow.pyfunc.load_model(f"models:/{FACE_DECODER_NAME}@{CHALLENGER}")
        assert face.predict(torch.randn(2, 8).numpy()).shape == (2, 3, 32, 32)
    finally:
        mlflow.set_tracking_uri(previous)
