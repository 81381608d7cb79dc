"""A stream's batches decoded in worker processes, in exactly the stream's own order.

At H200 speed the voice encoder trains ~600 six-second clips per second; one core decodes
~190 FLAC cuts per second (PyAV), so decoding must run beside the step. `prefetched` hands the
stream's batch plan (`PairStream.tasks`: the seeded order, this rank's slice, the resume point)
to `workers` processes through a torch DataLoader: worker w loads the tasks k with
k % workers == w with the stream's own `load` (same crops: they depend on (seed, epoch,
position) alone; same features), and the DataLoader returns results in task order, so the
batches, windows and features are those of `stream.forever` / `stream.batches` bit for bit
(tests/test_prefetch.py). `pin` puts them in pinned memory (asynchronous host→GPU copies);
each worker keeps `prefetch` batches ready. workers=0 is the in-process stream itself. The face
decoder's `s2f.train.face_data.FaceStream` is loaded the same way (its JPEG crops decoded in the
workers); any `BatchStream` is.

Workers are spawned, not forked: a fork of a process that has used polars (its Rust thread
pool) deadlocks in the child's first Parquet read, and a forked CUDA context is unusable. They
start in ~2 s (importing torch) and never touch CUDA; DALI's loader stays in-process
(`audio_loader="dali"` wants workers=0).

    python -m s2f.train.prefetch DATA_DIR [WORKERS]    # batches/s of the training stream
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, Self, TypeVar

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

B = TypeVar("B", bound="Pinnable")


class Pinnable(Protocol):
    """A batch: copied into pinned memory by `pin_memory` (the DataLoader's pin thread calls it)."""

    def pin_memory(self) -> Self: ...


class BatchStream(Protocol[B]):
    """What `prefetched` loads from: a seeded plan of batches (`PairStream`, the voice pairs;
    `s2f.train.face_data.FaceStream`, the decoder's faces) and the batch at given positions."""

    def __len__(self) -> int: ...
    def tasks(self, epoch: int, start: int = 0,
              forever: bool = False) -> Iterator[tuple[int, int, np.ndarray]]: ...
    def load(self, positions: np.ndarray, epoch: int | None = None) -> B: ...


class _StreamTasks(IterableDataset[tuple[int, int, B]]):
    """One worker's share of the stream's tasks (every worker walks the whole plan, which is
    cheap, and loads every `workers`-th batch)."""

    def __init__(self, stream: BatchStream[B], epoch: int, start: int, forever: bool,
                 limit: int | None) -> None:
        self.stream, self.epoch, self.start = stream, epoch, start
        self.forever, self.limit = forever, limit

    def __iter__(self) -> Iterator[tuple[int, int, B]]:
        info = get_worker_info()
        w, n = (0, 1) if info is None else (info.id, info.num_workers)
        for k, (epoch, i, positions) in enumerate(
                self.stream.tasks(self.epoch, self.start, self.forever)):
            if self.limit is not None and k >= self.limit:
                return
            if k % n == w:
                # the batch object itself: its tensors travel through shared memory, and the
                # DataLoader's pin thread calls its `pin_memory`
                yield epoch, i, self.stream.load(positions, epoch)


def prefetched(stream: BatchStream[B], epoch: int = 0, start: int = 0, *, forever: bool = True,
               workers: int = 0, pin: bool = False, prefetch: int = 2,
               limit: int | None = None) -> Iterator[tuple[int, int, B]]:
    """(epoch, batch number, batch) as `stream.tasks(epoch, start, forever)` plans them (one
    epoch with forever=False; at most `limit` batches), loaded by `workers` processes. Close
    the generator (or let it end) to stop the workers."""
    if forever and len(stream) == 0:
        raise ValueError(f"no training batches: the {type(stream).__name__} of this role is "
                         "empty (no rows in the joined tables)")
    if workers < 0:
        raise ValueError(f"loader workers must be >= 0, not {workers}")
    if workers == 0:
        k = 0
        for e, i, positions in stream.tasks(epoch, start, forever):
            if limit is not None and k >= limit:
                return
            b = stream.load(positions, e)
            yield e, i, b.pin_memory() if pin else b
            k += 1
        return
    loader = DataLoader(_StreamTasks(stream, epoch, start, forever, limit), batch_size=None,
                        num_workers=workers, pin_memory=pin, prefetch_factor=prefetch,
                        multiprocessing_context="spawn", worker_init_fn=_exit_quietly)
    it = iter(loader)
    try:
        for e, i, b in it:
            yield int(e), int(i), b
    finally:
        it._shutdown_workers()  # type: ignore[attr-defined]  # at once, not at garbage collection


def _exit_quietly(worker_id: int) -> None:
    """A worker ends with os._exit(0) once its loop is done: on a 16-core H200 host its
    interpreter shutdown aborted ("terminate called without an active exception": a native
    thread pool torn down while running), which the DataLoader reports as a crash. Its
    results are already delivered and its queues closed by then."""
    atexit.register(os._exit, 0)


def main(argv: list[str] | None = None) -> int:
    from s2f.media.audio import AudioConfig
    from s2f.train.data import PairStream
    from storage.layout import DataLayout

    args = sys.argv[1:] if argv is None else argv
    workers = int(args[1]) if len(args) > 1 else 0
    stream = PairStream(DataLayout(Path(args[0])), "dlib-resnet", "train",
                        AudioConfig(seconds=6.0), 64, random_crop=True)
    gen = prefetched(stream, workers=workers)
    t0, n = time.perf_counter(), 0
    for _, _, b in gen:
        n += len(b.clip_keys)
        if time.perf_counter() - t0 > 10:
            break
    gen.close()
    print(f"{n / (time.perf_counter() - t0):.0f} samples/s with {workers} workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
