"""MLflow pyfunc model (models-from-code) wrapping voice encoder + face decoder for serving.

This file is what MLflow stores and loads (`mlflow.pyfunc.log_model(python_model=<this file>)`,
see `s2f.registry.serving`); nothing is pickled. The two registered models come in as their MLflow
model directories and load through `s2f.registry.weights.load_model_dir` (safetensors + JSON config).
Input: a pandas DataFrame with a column `audio` of base64-encoded audio files (WAV, FLAC,
MP3, ... anything PyAV reads). Output, one row per input: `image_png` (base64 PNG of the
face), `feature` (list of floats), `model`, `decoder`, `notice` (the image is a statistical
reconstruction, not the speaker's face) and `error` (null when ok; the reason when the input
had no audio or under 1 s of speech).
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd


class Speech2FacePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from s2f.registry.inference import LoadedModel, ModelRef
        from s2f.registry.weights import load_model_dir

        cfg = dict(context.model_config or {})
        self.config = cfg
        self.seconds = float(cfg.get("seconds", 6.0))
        params = {k: str(cfg[k]) for k in ("window", "compression", "encoder") if k in cfg}
        self.encoder = LoadedModel(
            ModelRef(cfg.get("model_uri", ""), cfg.get("model_name"), cfg.get("model_version"),
                     None),
            load_model_dir(context.artifacts["voice_encoder"])[0], params)
        self.decoder = LoadedModel(
            ModelRef(cfg.get("decoder_uri", ""), cfg.get("decoder_name"),
                     cfg.get("decoder_version"), None),
            load_model_dir(context.artifacts["face_decoder"])[0])

    def _one(self, payload: str) -> dict[str, Any]:
        from PIL import Image

        from s2f.registry.inference import decode_features, encode_waves
        from s2f.registry.predict import PredictInputError, read_speech

        try:
            raw = base64.b64decode(payload, validate=True)
        except (ValueError, TypeError) as exc:
            return {"error": f"audio is not valid base64: {exc}"}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "input"
            path.write_bytes(raw)
            try:
                wave = read_speech(path)
            except PredictInputError as exc:
                return {"error": str(exc).replace(str(path), "input")}
        feature = encode_waves(self.encoder, [wave], self.seconds)
        image = decode_features(self.decoder, feature).images[0]
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return {"image_png": base64.b64encode(buf.getvalue()).decode(),
                "feature": feature[0].astype(np.float64).tolist(), "error": None}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None
                ) -> pd.DataFrame:
        from s2f.registry.predict import NOTICE

        if "audio" not in model_input.columns:
            raise ValueError("input needs a column 'audio' of base64-encoded audio files")
        rows = []
        for payload in model_input["audio"].tolist():
            out = {"image_png": None, "feature": None, **self._one(str(payload))}
            out.update(model=self.encoder.ref.label(), decoder=self.decoder.ref.label(),
                       notice=NOTICE)
            rows.append(out)
        return pd.DataFrame(rows, columns=["image_png", "feature", "model", "decoder", "notice",
                                           "error"])


mlflow.models.set_model(Speech2FacePyfunc())
