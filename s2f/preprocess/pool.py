"""Run `preprocess_clips` over chunks of a shard in worker processes, one per CPU core.

Face search and landmarks are dlib C++ calls that hold the GIL for much of their work, so
threads do not scale; processes do. Each worker is spawned once per process lifetime (a
`spawn` pool, cached here and reused by every shard: the parent has DALI, torch and Prefect
threads, which `fork` would copy in a broken state), loads its dlib models and DALI pipeline
once (per-thread caches of `s2f.faces.detect` / `s2f.faces.features`, `_DALI` below) and runs with
one torch thread, so N workers use N cores without oversubscription.

On a GPU machine each worker takes its own GPU from its rank (the order the workers started
in: 0, 1, ...), round robin over the visible devices (`s2f.devices.worker_device`): its torch
work and its NVDEC pipeline go there, not all to GPU 0. The device is set at the first chunk
that wants the GPU, so a CPU run never opens a CUDA context.

Rows go to the workers as plain dicts and come back as the three small Arrow tables of each
chunk, concatenated in input order, so the output is the same as the serial
`preprocess_clips` on the same rows. A shard with a single chunk, or `workers=1`, runs
in-process (no spawn cost: tests, tiny shards).

    tables = preprocess_parallel(rows, PreprocessConfig(workers=2))
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

import pyarrow as pa

from s2f.preprocess.clips import (
    PREPROCESSED_STATUSES,
    PreprocessConfig,
    PreprocessTables,
    preprocess_clips,
)

_POOLS: dict[int, ProcessPoolExecutor] = {}
_DALI: dict[tuple[bool, int], Any] = {}  # per worker process: DALI pipeline build is slow
_WORKER_RANK: int | None = None  # per worker process: the order it started in (0, 1, ...)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_workers(config: PreprocessConfig) -> int:
    return config.workers if config.workers > 0 else cpu_cores()


def take_rank(started: Any) -> int:
    """The next rank from `started`, a counter shared by the pool's workers (a
    `multiprocessing.Value`): 0 for the first worker to start, 1 for the next, ..."""
    with started.get_lock():
        rank = int(started.value)
        started.value += 1
    return rank


def _init_worker(started: Any) -> None:
    import torch

    global _WORKER_RANK
    _WORKER_RANK = take_rank(started)
    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism


def _pool(workers: int) -> ProcessPoolExecutor:
    if workers not in _POOLS:
        import multiprocessing

        spawn = multiprocessing.get_context("spawn")
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=spawn,
                                              initializer=_init_worker,
                                              initargs=(spawn.Value("i", 0),))
    return _POOLS[workers]


def worker_rank() -> int | None:
    """This pool worker's rank (None outside a pool worker)."""
    return _WORKER_RANK


def _worker_gpu() -> int:
    """This worker's GPU index, made its current CUDA device (so "cuda" means it)."""
    import torch

    from s2f.devices import worker_device

    device = worker_device(_WORKER_RANK or 0)
    if torch.cuda.current_device() != device.index:
        torch.cuda.set_device(device)
    return int(device.index or 0)


def shutdown_pools() -> None:
    """Stop the cached worker processes (benchmarks; the interpreter also does it at exit)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


def _work(rows: list[dict[str, Any]], config: PreprocessConfig) -> PreprocessTables:
    from s2f.media.video import DaliFrameDecoder

    device_id = _worker_gpu() if config.gpu else None  # before any CUDA work of the chunk
    key = (config.gpu, config.dali_batch)
    if key not in _DALI:
        _DALI[key] = DaliFrameDecoder(gpu=config.gpu, batch_size=config.dali_batch,
                                      device_id=device_id)
    return preprocess_clips(rows, config, dali=_DALI[key], progress=False)


def preprocess_parallel(rows: Sequence[Mapping[str, Any]], config: PreprocessConfig, *,
                        progress: bool = True, desc: str = "preprocess") -> PreprocessTables:
    """`preprocess_clips(rows, config)` split over `config.workers` processes (0: all cores)."""
    from tqdm import tqdm

    ok = [dict(r) for r in rows if r.get("status") in PREPROCESSED_STATUSES and r.get("clip_key")]
    workers = resolve_workers(config)
    # Even chunks so both cores finish together; never more than chunk_clips (memory).
    size = max(1, min(config.chunk_clips, math.ceil(len(ok) / max(1, workers))))
    chunks = [ok[at:at + size] for at in range(0, len(ok), size)]
    if workers <= 1 or len(chunks) <= 1:
        return preprocess_clips(ok, config, progress=progress, desc=desc)
    pool = _pool(workers)
    try:
        futures: list[Future[PreprocessTables]] = [pool.submit(_work, c, config) for c in chunks]
        parts = []
        with tqdm(total=len(ok), desc=desc, unit="clip", disable=not progress, leave=False) as bar:
            for future, chunk in zip(futures, chunks, strict=True):
                parts.append(future.result())
                bar.update(len(chunk))
    except BrokenProcessPool:
        _POOLS.pop(workers, None)  # a worker died (OOM, segfault): the next shard gets a new pool
        raise
    return _concat(parts)


def _concat(parts: list[PreprocessTables]) -> PreprocessTables:
    return PreprocessTables(*(pa.concat_tables([getattr(p, name) for p in parts])
                              for name in ("preprocess", "faces", "face_features")))


def serial(config: PreprocessConfig) -> PreprocessConfig:
    """The same configuration run in-process (benchmarks compare the two)."""
    return replace(config, workers=1)
