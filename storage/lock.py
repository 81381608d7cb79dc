"""One run per (stage, data directory): an advisory `fcntl.flock` on `locks/<stage>.lock`.

    from storage.lock import stage_lock
    with stage_lock(layout, "preprocess"):      # raises StageLocked if another run holds it
        ...

A second run of the same stage on the same data directory would plan the same shards, write the
same files and delete "stale" shards under the first one's feet; the lock makes it refuse at
once with a `StageLocked` naming the holder (pid, host, start time, command), which the CLI
turns into a non-zero exit. Different stages do not block each other (ingest may run while
preprocess works on earlier shards, which are immutable once written).

Why flock: the kernel releases it when the holder's file descriptor closes, which includes
SIGKILL, OOM kill and power loss (nothing survives a reboot), so a crashed run never leaves a
stale lock and no one has to delete lock files by hand. The file's contents (JSON) only name the
holder for the message; the lock itself is the flock, not the file's existence. The file is
never unlinked: unlinking a locked file lets a third process lock a fresh inode at the same
path while the second still waits on the old one.

Limits, and what replaces it on shared storage: flock is per host. On NFS it is emulated with
POSIX byte-range locks (unreliable across clients on older servers) and many object stores or
FUSE mounts ignore it, so several machines sharing one data directory need a lease held by a
service instead: a row in the Prefect/Postgres database taken with `SELECT ... FOR UPDATE
NOWAIT` or a Postgres advisory lock (`pg_try_advisory_lock(hash(stage, data_dir))`, released
when the session dies), an etcd/Consul lease with a TTL, or Prefect's own global concurrency
limits (`prefect gcl create ingest-<data-dir> --limit 1` and `with concurrency(...)`) /
tag-based task concurrency, which the Prefect server enforces for every worker.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.layout import DataLayout, safe_name


class StageLocked(RuntimeError):
    """Another run of the same stage holds the data directory's lock."""

    def __init__(self, stage: str, path: Path, holder: dict[str, Any]) -> None:
        self.stage, self.path, self.holder = stage, path, holder
        if holder:
            who = (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
                   f"{holder.get('started')}: {holder.get('command')}")
        else:
            who = "a process that has not written its name yet"
        super().__init__(f"another {stage} run is using this data directory ({path} is locked "
                         f"by {who}); wait for it to finish or stop it, then run again")


def lock_path(layout: DataLayout, stage: str) -> Path:
    return layout.locks_dir / f"{safe_name(stage)}.lock"


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        holder = json.loads(raw.decode()) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def read_holder(layout: DataLayout, stage: str) -> dict[str, Any]:
    """Who holds (or last held) a stage's lock; {} if nobody wrote it. For messages only."""
    path = lock_path(layout, stage)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return {}
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


@contextmanager
def stage_lock(layout: DataLayout, stage: str) -> Iterator[dict[str, Any]]:
    """Hold the stage's lock for the block; raise StageLocked at once if it is taken."""
    path = lock_path(layout, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise StageLocked(stage, path, _read_holder(fd)) from None
        holder = {"stage": stage, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(sys.argv)[:300], "data_dir": str(layout.root)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield holder
        finally:
            # Clear the name before the kernel drops the lock, so a reader never sees a
            # finished run named as the holder. (A SIGKILLed holder leaves its name behind;
            # harmless: the name is only read after a failed flock, i.e. from a live holder.)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
    finally:
        os.close(fd)
