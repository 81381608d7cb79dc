"""dlib's model files, found inside the installed `face-recognition-models` wheel.

The wheel's `__init__` imports `pkg_resources`, which current setuptools no longer ships, so the
package is located without importing it. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
RESNET = "dlib_face_recognition_resnet_model_v1.dat"
MMOD = "mmod_human_face_detector.dat"


@cache
def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "dlib's model files are missing: install the `face-recognition-models` wheel "
            "(pip install face-recognition-models==0.3.0)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def model_path(name: str) -> Path:
    path = models_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file {path} not found in face-recognition-models")
    return path
