"""Benchmark inputs: an AVSpeech-format manifest and a media root with demo-like clips.

Either the demo corpus (`--corpus DIR`: `DIR/media/` and `DIR/avspeech_*.csv`, from
`s2f.corpus.build.build_demo_corpus`) or generated clips with real faces
(`s2f.media.synthetic_clips`): half VP9 .webm, half H.264 .mp4, 4-8 s, 320-480 px high, the face
about a third of the height with the manifest's (x, y) at its centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# (height, width) cycled over the clips: the sizes of the demo corpus and low-res AVSpeech.
SIZES = ((360, 640), (480, 854), (320, 568), (400, 712))


@dataclass(frozen=True)
class BenchData:
    manifest: Path
    media_root: Path
    clips: int


def youtube_id(i: int) -> str:
    return f"bench{i:06d}"  # 11 characters: a valid YouTube id


def generate(out: Path, clips: int, seed: int = 0) -> BenchData:
    """`clips` media files (one clip each) and their manifest under `out`."""
    import numpy as np

    from s2f.media.synthetic_clips import write_face_clip

    rng = np.random.default_rng(seed)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(clips):
        height, width = SIZES[i % len(SIZES)]
        codec, ext = ("vp9", "webm") if i % 2 == 0 else ("h264", "mp4")
        seconds = float(rng.uniform(4.0, 8.0))
        cx, cy = float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.4, 0.55))
        path = media / f"{youtube_id(i)}.{ext}"
        if not path.exists():
            write_face_clip(path, codec, seconds=seconds, height=height, width=width,
                            centres=[(cx, cy)], face_px=height // 3)
        lines.append(f"{youtube_id(i)},0.500000,{seconds - 0.5:.6f},{cx:.6f},{cy:.6f}\n")
    manifest = out / "bench_train.csv"
    manifest.write_text("".join(lines))
    return BenchData(manifest, media, clips)


def corpus(root: Path, clips: int, out: Path) -> BenchData:
    """The first `clips` lines of the demo corpus's train manifest (copied under `out`)."""
    lines = (root / "avspeech_train.csv").read_text().splitlines(keepends=True)[:clips]
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "bench_train.csv"
    manifest.write_text("".join(lines))
    return BenchData(manifest, root / "media", len(lines))
