"""The training loader on packed audio vs. one FLAC per clip, from a cold page cache (issue 26).

    python -m benchmarks.packed_audio                     # 1,024 clips of 6 s, batch 64
    python -m benchmarks.packed_audio --clips 2048 --seconds 8 --batch 128 --repeat 3

Two data directories of the same synthetic corpus (`s2f.train.synthetic`, faces off), written
as ingest writes them: `packed` (one tar of FLACs per clips shard of `--shard-size`, the
pipeline's 256) and `files` (a FLAC per clip: data ingested before packs). For each, one epoch
of the training stream (`PairStream`, role train, random crops, `--crop` s windows) in this one
process (one core: decoding is single-threaded PyAV): `read` is the audio reads alone
(`AudioReader.encoded` per batch), `load` the whole batch (reads, FLAC decode, crop, features).

Cold cache without root: before every cold measurement each file of the data directory (audio,
packs, Parquet) gets `posix_fadvise(POSIX_FADV_DONTNEED)` after an fsync, and the share of its
pages still resident is measured with `mincore` (printed: it must be ~0 %); `warm` runs right
after a full read. Also counted: files opened and read requests per 1,000 samples (what a
network file system pays a round trip for).
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_LIBC = ctypes.CDLL(None, use_errno=True)


def resident_fraction(paths: list[Path]) -> float:
    """Share of the files' pages in the page cache (mincore on a read-only mapping)."""
    page = mmap.PAGESIZE
    total = resident = 0
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            continue
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY) as mm:
            pages = -(-size // page)
            vec = (ctypes.c_ubyte * pages)()
            addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
            if _LIBC.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            resident += sum(v & 1 for v in vec)
            total += pages
    return resident / max(total, 1)


def drop_cache(paths: list[Path]) -> None:
    """Evict the files' pages: fsync (dirty pages are not dropped), then DONTNEED."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def build_dirs(root: Path, clips: int, seconds: float, shard_size: int) -> dict[str, Path]:
    from s2f.train.synthetic import SyntheticCorpus, build
    from storage.layout import DataLayout

    dirs = {}
    for name, packed in (("packed", True), ("files", False)):
        layout = DataLayout(root / name).ensure()
        build(layout, SyntheticCorpus(identities=clips, clips_per_identity=1, test_identities=0,
                                      dim=128, seconds=seconds, faces=False,
                                      shard_size=shard_size, packed=packed))
        dirs[name] = layout.root
    return dirs


def requests(stream: Any, plan: list[np.ndarray]) -> tuple[int, int]:
    """(files opened, read requests) of reading every batch's audio."""
    from s2f.media.packs import read_spans
    from storage.layout import parse_audio_key

    opens = reads = 0
    for positions in plan:
        refs = [parse_audio_key(stream._audio[p]) for p in positions]
        packed = [(i, r) for i, r in enumerate(refs) if r is not None]
        by_pack: dict[str, list[Any]] = {}
        for item in packed:
            by_pack.setdefault(item[1].pack, []).append(item)
        opens += len(by_pack) + len(refs) - len(packed)
        reads += sum(len(read_spans(v, stream.reader.max_gap)) for v in by_pack.values())
        reads += len(refs) - len(packed)
    return opens, reads


def measure(data: Path, args: argparse.Namespace, what: str, cold: bool) -> dict[str, Any]:
    """One epoch of `what` (read | load) over `data`, best of `--repeat`."""
    from s2f.media.audio import AudioConfig
    from s2f.train.data import PairStream
    from storage.layout import DataLayout

    layout = DataLayout(data)
    files = sorted(p for p in data.rglob("*") if p.is_file() and ".db" not in p.name)
    best: dict[str, Any] = {}
    for _ in range(args.repeat):
        stream = PairStream(layout, "dlib-resnet", "train", AudioConfig(seconds=args.crop),
                            args.batch, seed=0, random_crop=True)
        plan = stream.plan(0)
        if cold:
            drop_cache(files)
        else:
            for path in files:  # every page read once: the warm case
                path.read_bytes()
        resident = resident_fraction(files)
        wall, cpu = time.perf_counter(), time.process_time()
        nbytes = 0
        for positions in plan:
            if what == "read":
                keys = [layout.resolve(stream._audio[p]) for p in positions]
                nbytes += sum(len(b) for b in stream.reader.encoded(keys) if isinstance(b, bytes))
            else:
                stream.load(positions, 0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        samples = sum(len(p) for p in plan)
        if not best or wall < best["wall_s"]:
            opens, reads = requests(stream, plan)
            best = {"samples": samples, "wall_s": wall, "cpu_s": cpu, "resident": resident,
                    "mb": nbytes / 1e6, "opens_per_1k": 1000 * opens / samples,
                    "reads_per_1k": 1000 * reads / samples}
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each clip")
    parser.add_argument("--crop", type=float, default=3.0, help="training window (s)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="kept if given")
    args = parser.parse_args(argv)
    root = args.work or Path(tempfile.mkdtemp(prefix="s2f-packed-"))
    try:
        started = time.perf_counter()
        dirs = build_dirs(root, args.clips, args.seconds, args.shard_size)
        sizes = {k: sum(p.stat().st_size for p in (d / "audio").rglob("*") if p.is_file())
                 for k, d in dirs.items()}
        print(f"{args.clips} clips of {args.seconds:g} s, shards of {args.shard_size}, batch "
              f"{args.batch}, {args.crop:g} s crops; audio: packed {sizes['packed'] / 1e6:.0f} "
              f"MB, files {sizes['files'] / 1e6:.0f} MB (built in "
              f"{time.perf_counter() - started:.0f} s); one process, best of {args.repeat}\n")
        print(f"{'layout':<7} {'step':<5} {'cache':<5} {'resident':>8} {'samples':>7} "
              f"{'wall s':>7} {'samples/s':>9} {'CPU s':>6} {'/CPU-s':>7} {'opens/1k':>8} "
              f"{'reads/1k':>8}")
        for what in ("read", "load"):
            for cache in ("cold", "warm"):
                for name in ("files", "packed"):
                    r = measure(dirs[name], args, what, cache == "cold")
                    print(f"{name:<7} {what:<5} {cache:<5} {100 * r['resident']:>7.0f}% "
                          f"{r['samples']:>7} {r['wall_s']:>7.2f} "
                          f"{r['samples'] / r['wall_s']:>9.0f} {r['cpu_s']:>6.2f} "
                          f"{r['samples'] / max(r['cpu_s'], 1e-9):>7.0f} "
                          f"{r['opens_per_1k']:>8.0f} {r['reads_per_1k']:>8.0f}")
    finally:
        if args.work is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
