"""Names shared by training, evaluation, promotion and inference: registered models, aliases,
and the one way an MLflow experiment is chosen (`use_experiment`).

Kept free of heavy imports (mlflow is imported inside `use_experiment`) so that flows and the
CLI can use them at import time.

    python -m s2f.registry.names      # prints the default model URIs
"""

from __future__ import annotations

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


def use_experiment(name: str, artifact_location: Path | None) -> None:
    """Make `name` the active MLflow experiment, creating it with its artifacts at
    `artifact_location` (absolute, in the data directory) when it does not exist yet: with a
    SQLite store the default would be ./mlruns of whatever the current directory is."""
    import mlflow

    if artifact_location is not None and mlflow.get_experiment_by_name(name) is None:
        location = Path(artifact_location).resolve()
        location.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(name, artifact_location=location.as_uri())
    mlflow.set_experiment(name)


if __name__ == "__main__":
    for n in (VOICE_ENCODER_NAME, FACE_DECODER_NAME):
        print(model_uri(n, CHALLENGER), model_uri(n, CHAMPION))
