"""speech2face: the library behind the pipeline (no Prefect imports here).

Stages: `s2f.corpus` (built-in demo corpus), `s2f.ingest` (AVSpeech manifests, media probe,
audio cut), preprocessing (`s2f.video`, `s2f.faces`, `s2f.features`, `s2f.audio`), models,
losses and metrics. The Prefect flows in `flows/` orchestrate these functions.
"""

__version__ = "0.1.0"
