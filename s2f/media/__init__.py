"""Clip media: what is read from and written to audio and video files.

    audio.py            decode a clip's audio (PyAV), resample, the complex spectrogram
    packs.py            clips' FLACs packed one tar per clips shard; the reader of every clip's
                        audio (pack members by offset, or one FLAC per clip: older data)
    dali_audio.py       batch FLAC decoding with NVIDIA DALI for training batches
    video.py            decode video frames at timestamps (DALI, NVDEC where there is one; PyAV)
    mux.py              write H.264/AAC .mp4 and VP9/Opus .webm clips
    synthetic_clips.py  tiny synthetic talking-head clips for tests and benchmarks
"""
