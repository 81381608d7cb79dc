"""MLflow pyfunc model (models-from-code) of ONE registered torch model, pickle-free.

What each registered model (`speech2face-voice-encoder`, `speech2face-face-decoder`) is in
MLflow: this file as the model's code and two artifacts, `weights` (weights.safetensors) and
`config` (config.json), see `s2f.registry.weights`. `mlflow.pyfunc.load_model("models:/...@champion")`
builds the module with `s2f.registry.weights.load_model_files`; this project must be installed where
it is loaded. The project's own code (`s2f.registry.inference.load_registered_model`) reads only the
two artifacts and never runs this stored file.

Input: a float32 array: a spectrogram batch B×2×T×257 for the voice encoder (the 16 kHz wave
B×N for the ge2e front-end), face features B×D for the face decoder. Output: features B×D, or the decoder's face images B×3×S×S in [0, 1].
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np


class TorchWeightsPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from s2f.registry.weights import load_model_files

        self.module, self.meta = load_model_files(context.artifacts["weights"],
                                                  context.artifacts["config"])

    # np.ndarray: a hint MLflow accepts without inferring a schema from it (the logged tensor
    # signature is the schema); other hints, or none, make it warn at every load.
    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None
                ) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            out = self.module(x)
        if isinstance(out, tuple):  # the face decoder: (texture, landmarks, image)
            out = out[2] if out[2] is not None else out[0]
        return out.float().numpy()


mlflow.models.set_model(TorchWeightsPyfunc())
