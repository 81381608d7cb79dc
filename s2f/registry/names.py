"""Names shared by training, evaluation, promotion and inference: registered models, aliases,
and the one way an MLflow experiment is chosen (`use_experiment`).

Kept free of heavy imports (mlflow is imported inside `use_experiment`) so that flows and the
CLI can use them at import time.

    python -m s2f.registry.names      # prints the default model URIs
"""

from __future__ import annotations

import logging
from pathlib import Path

VOICE_ENCODER_NAME = "speech2face-voice-encoder"
FACE_DECODER_NAME = "speech2face-face-decoder"
CHAMPION, CHALLENGER = "champion", "challenger"
# `s2f predict --seconds`: the voice encoder's input length. Below 1 s the encoder's pooling has
# almost nothing to pool (0.001 s was a RuntimeError); 60 s is 10x the paper's 6 s and keeps one
# spectrogram near 25 MB (1e5 s asked for a 6 GiB array). Here, light, for the CLI's bounds.
MIN_PREDICT_SECONDS, MAX_PREDICT_SECONDS = 1.0, 60.0


def model_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


# Tracking URIs that are a server: it owns the artifact root (`mlflow server` with proxied
# artifacts gives `mlflow-artifacts:/`), so a client must not pin one of its own local folders,
# which every other host would fail to read.
SERVER_TRACKING_SCHEMES = ("http", "https", "databricks")


def tracking_is_server(tracking_uri: str) -> bool:
    """True when `tracking_uri` names a tracking server rather than a store this process opens."""
    return tracking_uri.split(":", 1)[0].lower() in SERVER_TRACKING_SCHEMES


def use_experiment(name: str, artifact_location: Path | None) -> None:
    """Make `name` the active MLflow experiment, creating it when it does not exist yet.

    With a store this process opens (SQLite under the data directory) its artifacts go to
    `artifact_location` (absolute, in the data directory): the default would be ./mlruns of
    whatever the current directory is. With a tracking server `artifact_location` is ignored and
    the server's own artifact root is used, so that every host reads the same artifacts; an
    experiment an older version created there with a `file://` root is reported (its artifacts
    live on one host's disk), not silently used."""
    import mlflow

    server = tracking_is_server(mlflow.get_tracking_uri())
    existing = mlflow.get_experiment_by_name(name)
    if existing is None and artifact_location is not None and not server:
        location = Path(artifact_location).resolve()
        location.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(name, artifact_location=location.as_uri())
    elif existing is None and server:
        mlflow.create_experiment(name)  # the server's artifact root
    elif existing is not None and server and existing.artifact_location.startswith("file:"):
        logging.getLogger(__name__).warning(
            "MLflow experiment %r on the tracking server %s keeps its artifacts at %s, a path on "
            "one host's disk that other hosts cannot read; create it anew (another name, or "
            "delete it) so that it gets the server's artifact root", name,
            mlflow.get_tracking_uri(), existing.artifact_location)
    mlflow.set_experiment(name)

if __name__ == "__main__":
    for n in (VOICE_ENCODER_NAME, FACE_DECODER_NAME):
        print(model_uri(n, CHALLENGER), model_uri(n, CHAMPION))
