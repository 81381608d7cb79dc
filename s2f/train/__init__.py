"""Training of the face decoder and the voice encoder: config, data, loop, checkpoints, MLflow."""
