"""Parquet reading and writing.

Writes are atomic: a shard is written to a hidden temporary file in the same directory, flushed
to disk, then renamed over its final name, so a reader (or a resumed run) never sees half a
file. Readers are polars lazy scans over the shard glob; temporary files never match it.

Every page carries a CRC-32 (`write_page_checksum`), so a flipped bit on disk is detected
instead of read as a different value. pyarrow verifies them when asked (`read_table_verified`,
`shard_damage`: what the skip checks of ingest and preprocess, `read_shard` and training's
feature reads use); polars 2.1 has no such option, so its scans (`scan`: status, evaluation)
do not verify. Shards written before checksums (no CRC in their page headers) read as before:
pyarrow verifies only the pages that carry one.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import SHARD_GLOB, DataLayout
from storage.space import STORAGE_FULL_ERRNOS, DiskFull, as_disk_full, check_free_space

EXTRA_METADATA_KEY = b"s2f.extra"
# pq.read_table / pq.ParquetFile keyword arguments of every verified read.
VERIFY_PAGES: dict[str, Any] = {"page_checksum_verification": True}


def write_table_atomic(table: pa.Table, path: Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write `table` to `path` atomically, with `extra` (JSON) in the file metadata.

    The schema's own metadata (table name, schema version, docs) is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = dict(table.schema.metadata or {})
    if extra is not None:
        metadata[EXTRA_METADATA_KEY] = json.dumps(dict(extra), sort_keys=True).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pq.write_table(table, fh, compression="zstd", write_page_checksum=True)
    fsync_dir(path.parent)
    return path


def temp_path(path: Path) -> Path:
    """A hidden temporary name beside `path`, `.NAME.tmp-PID-XXXXXXXX` (matches TEMP_GLOB)."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to. When the block ends, the file is
    fsynced and renamed over `path`, so readers see the old file or the whole new one; if the
    block raises (or the fsync does: a full disk), the temporary is removed.

    Nothing is written below the free-space reserve (`storage.space`): DiskFull (ENOSPC)
    first. A full disk's, a quota's or a size limit's error met while writing is raised as
    DiskFull naming `path` and the free space (after the temporary is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_free_space(path)
    tmp = temp_path(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in STORAGE_FULL_ERRNOS and not isinstance(exc, DiskFull):
            raise as_disk_full(exc, path) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


TEMP_GLOB = ".*.tmp-*"


def remove_stale_temps(directories: Iterable[Path]) -> list[Path]:
    """Delete the temporary files (`.NAME.tmp-PID-XXXX`, from `write_table_atomic`,
    `s2f.ingest.media.write_flac_atomic` and `s2f.media.packs.PackWriter`) that a killed run left under `directories`.
    Only safe while holding the stage's lock (storage.lock): a live writer's temp looks the same."""
    removed = []
    for directory in directories:
        for path in Path(directory).rglob(TEMP_GLOB):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def fsync_dir(directory: Path) -> None:
    """fsync a directory (a rename in it is durable after this); errors are ignored."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rows_to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table from dict rows, filling absent fields with null."""
    rows = list(rows)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def read_extra(path: Path) -> dict[str, Any] | None:
    """The `extra` metadata of a shard, or None if the file is missing or unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(EXTRA_METADATA_KEY)
    return json.loads(raw) if raw else {}


def read_table_verified(path: Path, columns: list[str] | None = None) -> pa.Table:
    """`pq.read_table` that checks every page's CRC: raises OSError on a damaged page."""
    return pq.read_table(path, columns=columns, **VERIFY_PAGES)


def shard_damage(path: Path) -> str | None:
    """Why a shard cannot be trusted (unreadable, torn, a page failing its checksum), or None
    when every page of it reads and verifies. Reads the whole file, one row group at a time."""
    try:
        parquet = pq.ParquetFile(path, **VERIFY_PAGES)
        for group in range(parquet.num_row_groups):
            parquet.read_row_group(group)
    except (OSError, pa.ArrowException) as exc:
        return f"{type(exc).__name__}: {exc}"[:400]
    return None


def shard_paths(layout: DataLayout, table: str) -> list[Path]:
    """All finished shards of a table, in a stable order."""
    return sorted(layout.table_dir(table).glob(f"*/{SHARD_GLOB}"))


def read_shard(path: Path, table: str, columns: list[str] | None = None) -> pa.Table:
    """One shard of `table`, with columns renamed since it was written under their new names
    (`storage.schemas.RENAMED_COLUMNS`)."""
    from storage.schemas import RENAMED_COLUMNS

    renamed = RENAMED_COLUMNS.get(table, {})
    data = read_table_verified(path)
    data = data.rename_columns([renamed.get(c, c) for c in data.column_names])
    data = _with_added_columns(data, table)
    return data.select(columns) if columns is not None else data


def _with_added_columns(data: pa.Table, table: str) -> pa.Table:
    """A shard written before `storage.schemas.ADDED_COLUMNS` gained its columns, as nulls."""
    from storage.schemas import ADDED_COLUMNS, TABLES

    for name in ADDED_COLUMNS.get(table, ()):
        if name not in data.column_names:
            field = TABLES[table].field(name)
            data = data.append_column(field, pa.nulls(data.num_rows, field.type))
    return data


def scan(layout: DataLayout, table: str, schema: pa.Schema | None = None,
         paths: list[Path] | None = None) -> pl.LazyFrame:
    """Lazy scan of every shard of a table (or of `paths`, some of its shards); an empty frame
    with the schema if there are none.
    Shards written before a column rename (`storage.schemas.RENAMED_COLUMNS`) are scanned one
    by one and renamed, so old and new shards read as one table; shards written before a
    table gained columns (`storage.schemas.ADDED_COLUMNS`) read them as nulls."""
    from storage.schemas import ADDED_COLUMNS, RENAMED_COLUMNS, TABLES

    paths = shard_paths(layout, table) if paths is None else paths
    if not paths:
        if schema is None:
            schema = TABLES[table]
        return pl.from_arrow(schema.empty_table()).lazy()  # type: ignore[union-attr]
    renamed = RENAMED_COLUMNS.get(table)
    if table in ADDED_COLUMNS:
        # The full schema, with nulls for columns an older shard lacks: without it polars takes
        # the first shard's columns and refuses a later shard with more.
        full = pl.from_arrow(TABLES[table].empty_table()).schema  # type: ignore[union-attr]
        return pl.scan_parquet([str(p) for p in paths], schema=full, missing_columns="insert")
    if not renamed:
        return pl.scan_parquet([str(p) for p in paths])
    return pl.concat([pl.scan_parquet(str(p)).rename(renamed, strict=False) for p in paths],
                     how="vertical")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
