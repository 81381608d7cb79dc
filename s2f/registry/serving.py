"""Package a voice encoder + face decoder pair as one MLflow pyfunc model for serving.

Models-from-code (`s2f/registry/pyfunc_model.py` is stored as the model's code, nothing is pickled);
the two torch models come in as artifacts from their registry URIs (each a pickle-free model
directory: weights.safetensors + config.json, loaded by `s2f.registry.weights`), and their names,
versions and audio settings go in `model_config`. Registered as `speech2face-pyfunc` by default.

    python -m s2f.registry.serving DATA_DIR [ENCODER_URI [DECODER_URI]]
    mlflow models serve -m models:/speech2face-pyfunc/1 --env-manager local
    # POST {"dataframe_records": [{"audio": "<base64 WAV/FLAC bytes>"}]} to /invocations
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from s2f.registry.inference import (
    FACE_DECODER_NAME,
    VOICE_ENCODER_NAME,
    load_registered_model,
    model_uri,
)
from s2f.registry.names import use_experiment
from storage.layout import DataLayout

PYFUNC_NAME = "speech2face-pyfunc"
SERVING_EXPERIMENT = "speech2face-serving"
CODE_PATH = Path(__file__).with_name("pyfunc_model.py")


def log_pyfunc_model(encoder_uri: str = model_uri(VOICE_ENCODER_NAME, "champion"),
                     decoder_uri: str = model_uri(FACE_DECODER_NAME, "champion"),
                     registered_name: str | None = PYFUNC_NAME, seconds: float = 6.0,
                     layout: DataLayout | None = None) -> Any:
    """Log (and register) the pyfunc model in a new run; returns MLflow's ModelInfo.
    `layout`: keep the run's artifacts under its MLflow artifact directory."""
    import mlflow

    enc = load_registered_model(encoder_uri)
    dec = load_registered_model(decoder_uri)
    # Pin the exact versions: an alias may move after packaging.
    artifacts = {"voice_encoder": f"models:/{enc.ref.name}/{enc.ref.version}" if enc.ref.name
                 else encoder_uri,
                 "face_decoder": f"models:/{dec.ref.name}/{dec.ref.version}" if dec.ref.name
                 else decoder_uri}
    audio = enc.audio_config()
    config = {"model_uri": encoder_uri, "model_name": enc.ref.name, "model_version": enc.ref.version,
              "decoder_uri": decoder_uri, "decoder_name": dec.ref.name,
              "decoder_version": dec.ref.version, "encoder": enc.face_encoder,
              "window": audio.window, "compression": audio.compression, "seconds": seconds}
    use_experiment(SERVING_EXPERIMENT,
                   layout.mlflow_artifacts / SERVING_EXPERIMENT if layout else None)
    with mlflow.start_run(run_name=f"pyfunc {enc.ref.label()} + {dec.ref.label()}"):
        return mlflow.pyfunc.log_model(
            name="speech2face", python_model=str(CODE_PATH), artifacts=artifacts,
            model_config=config, registered_model_name=registered_name,
            # Explicit requirements: the project itself must be installed where it is served.
            pip_requirements=["torch", "kornia", "av", "pillow", "numpy", "pandas", "mlflow",
                               "safetensors"])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    layout = DataLayout(Path(args[0]))
    os.environ.setdefault("MLFLOW_TRACKING_URI", layout.mlflow_tracking_uri)
    info = log_pyfunc_model(*args[1:3], layout=layout)
    print(info.model_uri, info.registered_model_version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
