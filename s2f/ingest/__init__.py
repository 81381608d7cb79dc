"""AVSpeech ingestion: manifest lines in, one `clips` row per line out.

    manifest.py   stream and validate AVSpeech CSV lines; plan shards; find duplicates
    media.py      find, probe and cut the audio of local media with PyAV
    download.py   fetch a missing video with yt-dlp (validated ids only)
    shard.py      ingest one shard of lines end to end (no Prefect): `ingest_shard_rows`

The Prefect flow is `flows/ingest.py`; the CLI is `s2f ingest`.
"""
