"""A tiny real corpus for the pipeline tests: two face clips (VP9 .webm with a tone) and a
manifest of three lines, one naming a missing video."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from storage.io import shard_paths
from storage.layout import DataLayout

MANIFEST_LINES = [
    "faceaaaaaaa,0.1,1.5,0.5,0.45",
    "facebbbbbbb,0.1,1.5,0.5,0.45",
    "missing0000,0,1,0.5,0.5",
]


def make_corpus(root: Path) -> tuple[Path, Path]:
    """(manifest, media_root) under `root`, written once."""
    from s2f.media.synthetic_clips import write_face_clip

    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    for name in ("faceaaaaaaa", "facebbbbbbb"):
        if not (media / f"{name}.webm").exists():
            write_face_clip(media / f"{name}.webm", "vp9")
    manifest = root / "manifests" / "avspeech_train.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("\n".join(MANIFEST_LINES) + "\n")
    return manifest, media


def read_table(data_dir: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet([str(p) for p in shard_paths(DataLayout(data_dir), table)])


def table_digest(data_dir: Path, table: str, columns: list[str]) -> tuple[int, str]:
    """(rows, SHA-256 of the chosen columns in clip-key order): equal tables, equal digests."""
    df = read_table(data_dir, table).select(columns).sort(columns[0])
    h = hashlib.sha256()
    for row in df.iter_rows():
        h.update(repr(_rounded(row)).encode())
    return df.height, h.hexdigest()


def _rounded(row: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in row:
        if isinstance(v, float):
            out.append(round(v, 4))
        elif isinstance(v, list):
            out.append(tuple(round(x, 4) if isinstance(x, float) else x for x in v))
        else:
            out.append(v)
    return tuple(out)
