"""Package a voice encoder + face decoder pair as one MLflow pyfunc model for serving.

A custom pyfunc flavour: `loader_module` is the installed `s2f.registry.pyfunc_model`, and the data
are the two registered models' files (each verified against its recorded digest, then copied:
weights.safetensors + config.json, loaded by `s2f.registry.weights`) and `serving.json` (their
names, versions and audio settings). No code and no pickle is stored; the files' digest is
recorded in the tracking store (`s2f.registry.store`). Registered as `speech2face-pyfunc`.

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
    download_verified,
    load_registered_model,
    model_uri,
)
from s2f.registry.names import use_experiment
from storage.layout import DataLayout

PYFUNC_NAME = "speech2face-pyfunc"
SERVING_EXPERIMENT = "speech2face-serving"


def log_pyfunc_model(encoder_uri: str = model_uri(VOICE_ENCODER_NAME, "champion"),
                     decoder_uri: str = model_uri(FACE_DECODER_NAME, "champion"),
                     registered_name: str | None = PYFUNC_NAME, seconds: float = 6.0,
                     layout: DataLayout | None = None) -> Any:
    """Log (and register) the pyfunc model in a new run; returns MLflow's ModelInfo.
    `layout`: keep the run's artifacts under its MLflow artifact directory."""
    import json
    import shutil
    import tempfile

    import mlflow

    from s2f.registry.pyfunc_model import SERVING_CONFIG
    from s2f.registry.store import MODEL_DATA, log_model_data
    from s2f.registry.weights import CONFIG_FILE, WEIGHTS_FILE, find_model_files

    enc = load_registered_model(encoder_uri)
    dec = load_registered_model(decoder_uri)
    audio = enc.audio_config()
    config = {"model_uri": encoder_uri, "model_name": enc.ref.name, "model_version": enc.ref.version,
              "decoder_uri": decoder_uri, "decoder_name": dec.ref.name,
              "decoder_version": dec.ref.version, "encoder": enc.face_encoder,
              "window": audio.window, "compression": audio.compression, "seconds": seconds}
    use_experiment(SERVING_EXPERIMENT,
                   layout.mlflow_artifacts / SERVING_EXPERIMENT if layout else None)
    with tempfile.TemporaryDirectory(prefix="s2f-serve-") as tmp:
        data = Path(tmp) / MODEL_DATA
        for part, uri in (("voice_encoder", encoder_uri), ("face_decoder", decoder_uri)):
            # the exact versions just loaded, verified again: an alias may move after packaging
            local, _ = download_verified(uri, Path(tmp) / f"dl-{part}")
            weights, cfg = find_model_files(local)
            (data / part).mkdir(parents=True)
            shutil.copyfile(weights, data / part / WEIGHTS_FILE)
            shutil.copyfile(cfg, data / part / CONFIG_FILE)
        (data / SERVING_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        with mlflow.start_run(run_name=f"pyfunc {enc.ref.label()} + {dec.ref.label()}"):
            return log_model_data(
                data, "speech2face", "s2f.registry.pyfunc_model", registered_name=registered_name,
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
