"""Preprocessing: one clip -> face crop, face feature and speech spectrogram.

    clips.py  the per-clip work and a shard's driver (`preprocess_clips`)
    pool.py   worker processes that run shards side by side

The Prefect flow is `flows/preprocess.py`; the CLI is `s2f preprocess`.
"""
