"""The built-in demo corpus: AVSpeech-like talking-head clips built offline.

Real photographs (`s2f/assets/faces`) are morphed into new identities (`faces`), each speaks
with an espeak-ng voice (`espeak`) whose parameters are a fixed function of its face embedding
(`voice`), and the clips are rendered and muxed as H.264/AAC .mp4 and VP9/Opus .webm
(`render`, `s2f.media.mux`). `build.build_demo_corpus` puts it together; `s2f demo-corpus` runs it.
"""

# The default demo corpus (kept here so the CLI can show them without importing the builder).
# Many speakers with one clip each rather than few with several: a voice→face map generalises
# from the number of speakers, and retrieval needs a pool of test faces large enough that
# chance (K / pool) leaves room to show skill: 400 × 30 % = 120 test identities, chance@10 8 %.
# The same fractions split the real persons the identities are morphed from (whole persons, and
# persons dlib cannot tell apart, go to one split): 400 = 240 train + 40 dev + 120 test.
DEMO_IDENTITIES = 400
DEMO_CLIPS_PER_IDENTITY = 1
DEMO_TEST_FRACTION = 0.3
DEMO_DEV_FRACTION = 0.1
