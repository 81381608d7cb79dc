"""The built-in demo corpus: AVSpeech-like talking-head clips built offline.

Real photographs (`s2f/assets/faces`) are morphed into new identities (`faces`), each speaks
with an espeak-ng voice (`espeak`) whose parameters are a fixed function of its face embedding
(`voice`), and the clips are rendered and muxed as H.264/AAC .mp4 and VP9/Opus .webm
(`render`, `s2f.mux`). `build.build_demo_corpus` puts it together; `s2f demo-corpus` runs it.
"""
