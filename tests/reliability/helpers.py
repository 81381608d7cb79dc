"""Helpers of the reliability suite: hostile media, subprocess runs, and the invariants every
`clips` table must satisfy whatever happened to the run that wrote it."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import polars as pl
import pyarrow.parquet as pq
from ingest_helpers import SAMPLE_RATE, clip_flac, frames, make_good, tone

from s2f.ingest.manifest import is_blank, iter_raw_lines
from s2f.media.mux import encode_and_mux, write_media
from storage.io import shard_paths
from storage.layout import DataLayout
from storage.schemas import CLIP_STATUSES

REPO = Path(__file__).resolve().parents[2]
PROBE_FIELDS = ["media_path", "video_codec", "audio_codec", "width", "height", "fps",
                "media_duration_s", "video_path", "audio_samples"]


# Hostile media ------------------------------------------------------------------------------

def truncate_at(source: Path, path: Path, fraction: float) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def flip_bits(source: Path, path: Path, rng: np.random.Generator, n_flips: int) -> Path:
    """Flip `n_flips` random bits anywhere in the file (headers included)."""
    data = bytearray(source.read_bytes())
    for pos in rng.integers(0, len(data), n_flips):
        data[pos] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))
    return path


def make_rotated_mp4(path: Path) -> Path:
    """An H.264/AAC .mp4 whose video track's display matrix says 'rotate 90°' (what phones
    write): the tkhd matrix is patched, which FFmpeg reads as display-matrix side data."""
    make_good(path)
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    # version/flags, creation, modification, track id, reserved, duration, reserved[8],
    # layer, alternate group, volume, reserved: then the 3x3 matrix.
    offset = i + 4 + 4 + (16 if version == 1 else 8) + 4 + 4 + (8 if version == 1 else 4) + 8 + 8
    assert struct.unpack(">9i", data[offset:offset + 36])[0] == 0x10000, "not an identity matrix"
    data[offset:offset + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


def make_huge_duration_mkv(path: Path, claimed_s: float = 1e9) -> Path:
    """A 2 s .mkv whose Segment Info claims `claimed_s` seconds (Duration element patched)."""
    make_good(path, "h264", "flac")
    data = bytearray(path.read_bytes())
    i = data.find(b"\x44\x89\x88")  # Duration, 8-byte float, in TimecodeScale units (1 ms)
    assert i > 0, "no 8-byte Duration element"
    data[i + 3:i + 11] = struct.pack(">d", claimed_s * 1000)
    path.write_bytes(bytes(data))
    return path


def make_vfr_mkv(path: Path, seed: int = 0) -> Path:
    """H.264 at irregular frame intervals (10-100 ms, millisecond time base) + FLAC audio."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("flac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        pts = 0
        for img in frames():
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += int(rng.choice([10, 40, 100]))
            encode_and_mux(container, video, frame)
        encode_and_mux(container, video)
        wave = (tone() * 32767).astype(np.int16)
        for start in range(0, len(wave), 4096):
            frame = av.AudioFrame.from_ndarray(wave[start:start + 4096].reshape(1, -1),
                                               format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            encode_and_mux(container, audio, frame)
        encode_and_mux(container, audio)
    return path


def make_audio_variant(path: Path, sample_rate: int = SAMPLE_RATE, channels: int = 1,
                       silent: bool = False, audio_codec: str = "flac") -> Path:
    wave = np.zeros(int(2 * sample_rate), np.float32) if silent else tone(sample_rate=sample_rate)
    if channels > 1:  # the tone in the first channel only: a downmix must still carry it
        wave = np.stack([wave] + [np.zeros_like(wave)] * (channels - 1), axis=1)
    return write_media(path, frames(), 25, wave, sample_rate, "h264", audio_codec)


# Subprocesses -------------------------------------------------------------------------------

def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python: the repo and tests importable, no inherited
    Prefect profile surprises; `extra` on top."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    env.pop("PREFECT_API_URL", None)
    env.update(extra)
    return env


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def popen(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child in its own process group (so its own children, e.g. an ephemeral Prefect
    server, can be killed with it), output to `log`."""
    fh = open(log, "ab")  # noqa: SIM115 (closed when the process is reaped, by the OS)
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)


# Invariants ---------------------------------------------------------------------------------

def non_blank_lines(manifest: Path) -> list[int]:
    with open(manifest, "rb") as fh:
        return [raw.line_no for raw in iter_raw_lines(fh) if not is_blank(raw)]


def check_clips(data_dir: Path, manifests: dict[str, Path]) -> pl.DataFrame:
    """Assert what must hold of `clips` after any run, killed or not; return the rows.

    Every shard is a complete Parquet file (footer and all row groups readable) and no temp
    file is among the shards; one row per non-blank line of each manifest, no more, no less;
    every row has a known status, a reason unless ok, and ok rows a unique key and a readable
    16 kHz FLAC of the stated length."""
    layout = DataLayout(data_dir)
    paths = shard_paths(layout, "clips")
    assert all(not p.name.startswith(".") and ".tmp" not in p.name for p in paths)
    tables = [pq.read_table(p) for p in paths]  # raises on a torn file
    assert tables, "no shards"
    frame = pl.concat([pl.from_arrow(t) for t in tables])  # type: ignore[misc]
    assert frame.select(pl.struct("manifest", "line_no").is_unique().all()).item(), \
        "a manifest line has two rows"
    for name, path in manifests.items():
        got = sorted(frame.filter(pl.col("manifest") == name)["line_no"].to_list())
        assert got == non_blank_lines(path), f"{name}: rows do not match non-blank lines"
    assert set(frame["manifest"]) <= set(manifests)
    assert set(frame["status"]) <= set(CLIP_STATUSES)
    bad = frame.filter(pl.col("status") != "ok")
    assert bad["error"].null_count() == 0 and all(e.strip() for e in bad["error"])
    ok = frame.filter(pl.col("status") == "ok")
    assert ok["clip_key"].n_unique() == ok.height, "duplicate clip keys among ok rows"
    for row in ok.iter_rows(named=True):
        samples, rate = clip_flac(layout, row["audio_path"])
        assert rate == SAMPLE_RATE and len(samples) == row["audio_samples"]
    return frame


def run_shards(manifest: Path, media_root: Path, data_dir: Path, shard_size: int) -> None:
    """Ingest a manifest in-process with the library (what each flow task calls)."""
    from s2f.ingest.manifest import plan_manifests
    from s2f.ingest.shard import ingest_shard

    layout = DataLayout(data_dir).ensure()
    for plan in plan_manifests([manifest], shard_size):
        for shard in plan.shards:
            ingest_shard(shard, layout, media_root)
