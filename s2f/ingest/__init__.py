"""AVSpeech ingestion: manifest lines in, one `clips` row per line out.

    manifest.py   stream and validate AVSpeech CSV lines; plan shards; find duplicates
    media.py      find, probe and cut the audio of local media with PyAV
    download.py   fetch a missing video with yt-dlp (validated ids only)
    shard.py      ingest one shard of lines end to end (no Prefect): `ingest_shard_rows`
    pairs.py      real voice-face pairs: a directory laid out like the Speech2Face project page
                  (avspeech_res/, voxceleb/, retrieve/) -> the same `clips` table, split by person

The Prefect flow is `flows/ingest.py`; the CLI is `s2f ingest` (pairs: `python -m s2f.ingest.pairs`).
"""
