"""Preprocessing: one clip -> face crop, face feature and speech spectrogram.

    clips.py   the per-clip work (`preprocess_clips`): frames, faces, crops, features
    pool.py    worker processes that share a shard's clips, one per core
    shards.py  a clips shard's driver (`preprocess_shard`): read, run, write three shards

The Prefect flow is `flows/preprocess.py`; the CLI is `s2f preprocess`.
"""
