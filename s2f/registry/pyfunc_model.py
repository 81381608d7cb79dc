"""MLflow loader module (a custom pyfunc flavour) of the served voice -> face pair: installed code.

`s2f.registry.serving` logs the pair with `loader_module: s2f.registry.pyfunc_model` and, as
data (`data/model/`), the two registered models' files (`voice_encoder/`, `face_decoder/`: each
weights.safetensors + config.json, see `s2f.registry.weights`) and `serving.json` (their names,
versions and audio settings). MLflow imports this module from the installed package; no code is
stored with the model, and the files are checked against the digest the tracking store recorded
(`s2f.registry.store.check_loaded_dir`) before anything is built.
Input: a pandas DataFrame with a column `audio` of base64-encoded audio files (WAV, FLAC,
MP3, ... anything PyAV reads). Output, one row per input: `image_png` (base64 PNG of the
face), `feature` (list of floats), `model`, `decoder`, `notice` (the image is a statistical
reconstruction, not the speaker's face) and `error` (null when ok; the reason when the input
had no audio or under 1 s of speech).

    mlflow models serve -m models:/speech2face-pyfunc/1 --env-manager local
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SERVING_CONFIG = "serving.json"


class Speech2FacePyfunc:
    def __init__(self, data_path: Path) -> None:
        from s2f.registry.inference import LoadedModel, ModelRef
        from s2f.registry.weights import load_model_dir

        cfg = json.loads((data_path / SERVING_CONFIG).read_text())
        self.config = cfg
        self.seconds = float(cfg.get("seconds", 6.0))
        params = {k: str(cfg[k]) for k in ("window", "compression", "encoder") if k in cfg}
        self.encoder = LoadedModel(
            ModelRef(cfg.get("model_uri", ""), cfg.get("model_name"), cfg.get("model_version"),
                     None),
            load_model_dir(data_path / "voice_encoder")[0], params)
        self.decoder = LoadedModel(
            ModelRef(cfg.get("decoder_uri", ""), cfg.get("decoder_name"),
                     cfg.get("decoder_version"), None),
            load_model_dir(data_path / "face_decoder")[0])

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

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
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



def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> Speech2FacePyfunc:
    from s2f.registry.store import check_loaded_dir

    check_loaded_dir(Path(data_path))
    return Speech2FacePyfunc(Path(data_path))
