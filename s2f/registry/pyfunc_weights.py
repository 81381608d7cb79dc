"""MLflow loader module (a custom pyfunc flavour) of ONE registered torch model: installed code.

Each registered model (`speech2face-voice-encoder`, `speech2face-face-decoder`) is an MLflow
pyfunc with `loader_module: s2f.registry.pyfunc_weights` and, as its data, the two files of
`s2f.registry.weights` (weights.safetensors, config.json) under `data/model/`. MLflow imports
this module from the installed package and calls `_load_pyfunc(data_path)`; nothing is read from
the artifact store but those two files (and MLflow's own `MLmodel`), and no code is stored
there. Before building, the model directory's files are checked against the digest the
tracking store recorded (`s2f.registry.store.check_loaded_dir`).

Input: a float32 array: a spectrogram batch B×2×T×257 for the voice encoder (the 16 kHz wave
B×N for the ge2e front-end), face features B×D for the face decoder. Output: features B×D, or
the decoder's face images B×3×S×S in [0, 1].

    python -c "import mlflow; print(mlflow.pyfunc.load_model('models:/speech2face-voice-encoder@champion'))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LOADER_MODULE = __name__


class TorchWeightsPyfunc:
    """What `mlflow.pyfunc.load_model` wraps: one torch module, numpy in and out."""

    def __init__(self, module: Any, meta: dict[str, Any]) -> None:
        self.module, self.meta = module, meta

    def predict(self, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            out = self.module(x)
        if isinstance(out, tuple):  # the face decoder: (texture, landmarks, image)
            out = out[2] if out[2] is not None else out[0]
        return out.float().numpy()


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> TorchWeightsPyfunc:
    from s2f.registry.store import check_loaded_dir
    from s2f.registry.weights import load_model_dir

    check_loaded_dir(Path(data_path))
    return TorchWeightsPyfunc(*load_model_dir(Path(data_path)))
