"""Free space: a reserve that s2f never writes into, and one clear line when a disk is full.

    from storage.space import check_free_space, is_storage_full, storage_full_message

    check_free_space(layout.root)        # raises DiskFull (ENOSPC) below the reserve

Prefect's and MLflow's SQLite databases live in the data directory by default
(`flows.runtime.configure`). When the stages' own writes filled its disk, the Prefect server
could no longer record the run's end: the run finished with an HTTP 500 traceback from
"database or disk is full" instead of the stage's "N shards failed" summary (issue 24). So
s2f stops writing while `S2F_MIN_FREE_MB` (default `DEFAULT_MIN_FREE_MB`) MiB are still free,
which leaves the databases room to record the failure:

- every atomic write (`storage.io.atomic_path`: Parquet shards, FLAC, checkpoints) checks the
  file system of its target first, and a real full disk's error met while writing is raised
  again as `DiskFull` with the free space in its message;
- `DataLayout.ensure()` checks the data directory: the command line before Prefect or MLflow
  start, and the ingest, preprocess and training flows at their start (the pipeline's stage
  boundaries).

`S2F_MIN_FREE_MB=0` turns the reserve off (then the disk can fill completely, Prefect's
database with it). `DiskFull` keeps the errno of what happened: ENOSPC for the reserve and a
full disk, EDQUOT for a quota, EFBIG for a file-size limit (`ulimit -f`).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

MIN_FREE_ENV = "S2F_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 256.0
# What a write reports when the space it needs is not there.
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_SQLITE_FULL = "database or disk is full"
# An HTTP 500 of the embedded Prefect server with less than this free on its database's file
# system is taken for its database being unwritable (SQLite fails only on a full disk, but a
# failed run's temporaries are removed, so some space may be back by the time it is checked).
NEARLY_FULL_BYTES = 16 * 2**20
# Below this, after a run that met a full disk, the run's end may be missing from Prefect.
DATABASE_NOTE_BYTES = 2**20


class DiskFull(OSError):
    """A write refused or failed for want of space: ENOSPC (below the reserve, or the disk is
    full), EDQUOT or EFBIG. `str()` names the path and the free space."""


def min_free_bytes() -> int:
    """The reserve in bytes, from `S2F_MIN_FREE_MB` (MiB, >= 0); ValueError if it is not a
    number (never a silent default)."""
    raw = os.environ.get(MIN_FREE_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MIN_FREE_MB * 2**20)
    try:
        mib = float(raw)
    except ValueError:
        mib = -1.0
    if not mib >= 0 or mib == float("inf"):
        raise ValueError(f"{MIN_FREE_ENV} must be a number of MiB >= 0 (0 turns the free-space "
                         f"reserve off), not {raw!r}")
    return int(mib * 2**20)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of `path` (its nearest
    existing ancestor when it does not exist yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def human(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _reserve_text(reserve: int) -> str:
    return f"the {human(reserve)} reserve ({MIN_FREE_ENV}) kept for Prefect's and MLflow's databases"


def check_free_space(path: Path) -> None:
    """Raise DiskFull (ENOSPC) when the file system of `path` has less than the reserve free;
    nothing when the reserve is 0."""
    reserve = min_free_bytes()
    if reserve <= 0:
        return
    free = free_bytes(path)
    if free < reserve:
        raise DiskFull(errno.ENOSPC,
                       f"No space left on device: only {human(free)} free on its file system, "
                       f"below {_reserve_text(reserve)}; free space or lower {MIN_FREE_ENV}",
                       str(path))


def as_disk_full(exc: OSError, path: Path) -> DiskFull:
    """A write's own ENOSPC/EDQUOT/EFBIG as DiskFull naming the final path and the free space."""
    try:
        free = f"{human(free_bytes(path))} free on its file system"
    except OSError as stat_error:
        free = f"free space unknown: {stat_error.strerror}"
    reason = exc.strerror or os.strerror(exc.errno or errno.ENOSPC)
    return DiskFull(exc.errno, f"{reason} while writing it ({free})", str(path))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def is_storage_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a write that found no space: an OSError with
    ENOSPC/EDQUOT/EFBIG, or SQLite's "database or disk is full"."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in STORAGE_FULL_ERRNOS:
            return True
        if _SQLITE_FULL in str(e) and (isinstance(e, sqlite3.Error)
                                       or type(e).__name__ == "OperationalError"):
            return True
    return False


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def prefect_database() -> Path | None:
    """The embedded Prefect server's SQLite file (`flows.runtime.configure`), or None when a
    real server is used (PREFECT_API_URL) or the database is not SQLite."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    url = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", "")
    prefix = "sqlite+aiosqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) else None


def storage_full_message(exc: BaseException, data_dir: Path) -> str | None:
    """One line for a run that ended for want of space, or None when `exc` is something else.

    A storage error names its path and the free space; SQLite's "database or disk is full"
    (Prefect's or MLflow's database) the data directory's free space. An HTTP 500 from the
    embedded Prefect server while its database's file system has under `NEARLY_FULL_BYTES`
    free is said to be that: Prefect could not write its database, so the run's state in
    Prefect is incomplete. A 500 with room on that disk is not explained here (None)."""
    chain = _chain(exc)
    own = next((e for e in chain if isinstance(e, OSError)
                and e.errno in STORAGE_FULL_ERRNOS), None)
    if own is not None:
        return f"{own}. Finished shards are kept: free space and re-run to finish the rest"
    database = prefect_database()
    if is_storage_full(exc):
        where = f" ({human(free_bytes(data_dir))} free in {data_dir})"
        return (f"a SQLite database (Prefect's or MLflow's) could not be written: "
                f"{_SQLITE_FULL}{where}. Free space and re-run: finished shards are kept")
    if database is None or not any(_http_status(e) == 500 for e in chain):
        return None
    free = free_bytes(database)
    if free >= NEARLY_FULL_BYTES:
        return None
    return (f"Prefect's database {database} could not be written: its server answered HTTP 500 "
            f"with {human(free)} free on that file system (the disk is full), so this run's "
            "state in Prefect is incomplete. Free space and re-run: finished shards are kept")


def prefect_database_note() -> str | None:
    """After a run that met a full disk: one line when the embedded Prefect server's database
    is on a file system with (next to) nothing free, since its server then cannot have
    recorded all of the run (its own errors, printed by its process, say what it could not
    write); None otherwise."""
    database = prefect_database()
    if database is None:
        return None
    free = free_bytes(database)
    if free >= DATABASE_NOTE_BYTES:
        return None
    return (f"Prefect's database {database} has only {human(free)} free on its file system: "
            "the Prefect server may not have recorded all of this run (the Prefect UI can be "
            "missing its last states and logs); the tables above are what was written")
