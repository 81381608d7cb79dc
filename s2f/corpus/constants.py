"""Settings of the demo corpus's clips, shared by the builder (`s2f.corpus.build`) and its data
card (`s2f.corpus.datacard`): one module both import, so neither imports the other's.

The face → voice function's calibrated constants are in `s2f.corpus.voice_constants`, a file
`python -m s2f.corpus.calibrate` writes whole; these are hand-chosen and stay apart from it.
"""

CORPUS_VERSION = 3  # 2: person-disjoint train / dev / test; 3: voice files, 8 settings
FPS = 25
SAMPLE_RATE = 22050          # espeak-ng's rate; the muxer resamples to 48 kHz for AAC/Opus
MIN_CLIP_S, MAX_CLIP_S = 4.0, 10.0
SPLITS = ("train", "dev", "test")
