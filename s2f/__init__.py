"""speech2face: the library behind the pipeline (no Prefect imports here).

One subpackage per pipeline part, in pipeline order:

    corpus/      the built-in demo corpus: morphed real faces speaking with espeak-ng voices
    ingest/      AVSpeech manifests -> the `clips` table (validate, probe, cut audio, yt-dlp)
    media/       reading and writing clip media: audio, video frames, muxing, synthetic clips
    faces/       dlib detection and landmarks, face search in a clip, alignment, face features
    preprocess/  one clip -> face crop, face feature and spectrogram; shard workers
    models/      the voice encoder, the face decoder and the paper's losses
    train/       configs, data streams, the training runner and its two trainers
    evaluation/  the paper's metrics on the dev/test splits, figures, the `evaluations` table
    registry/    registered models: names, weights files, loading, prediction, serving
    release/     promotion by alias, the model card, the demo report

Beside them: `progress` (bars and progress log lines) and `demo_estimate` (the demo's
run-time estimate). The Prefect flows in `flows/` orchestrate these functions; tables and
paths live in `storage/`.
"""

__version__ = "0.1.0"
