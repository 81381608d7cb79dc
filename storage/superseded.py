"""Shards of an earlier layout, kept aside so a re-sharded run reuses their clips' work.

    <data_dir>/superseded/<table>/<manifest>/lines-<first>-<last>.parquet

A shard's file name is its position (`shard-NNNNN`), so another shard size puts other lines
under the same names. Before a stage writes any shard, it moves every live shard whose line
range differs from the one now planned under that name here (`supersede`, one rename each,
while it holds the stage lock), named by the lines it holds. Each shard task then reads the
superseded files that overlap its own lines (`overlapping`) and copies the rows whose
`clip_fingerprint` (one clip's inputs and settings) is unchanged instead of redoing them: a
new shard size costs Parquet bookkeeping, not media work. A killed re-shard leaves them here,
so the re-run reuses them too. `s2f gc` (`storage.gc`) removes them once live shards hold
every line they hold.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from storage.io import read_extra
from storage.layout import DataLayout, safe_name

SUPERSEDED = "superseded"
_NAME = re.compile(r"^lines-(\d+)-(\d+)\.parquet$")
# Bumped by every rename or removal this process makes here: a directory's mtime may not move
# between two renames in one clock tick, so it alone cannot tell a cached listing is stale.
_generation = [0]


def changed() -> None:
    """Say that this process renamed or removed superseded files (the listings are stale)."""
    _generation[0] += 1


def superseded_dir(layout: DataLayout, table: str, manifest: str) -> Path:
    return layout.root / SUPERSEDED / safe_name(table) / safe_name(manifest)


def line_range(path: Path) -> tuple[int, int] | None:
    """(first, last) line of a shard from its `extra` metadata, or None (not recorded)."""
    extra = read_extra(path) or {}
    first, last = extra.get("first_line"), extra.get("last_line")
    if isinstance(first, int) and isinstance(last, int):
        return first, last
    return None


def supersede(layout: DataLayout, table: str, manifest: str, path: Path,
              lines: tuple[int, int]) -> Path:
    """Move one live shard aside (an atomic rename within the data directory)."""
    target = superseded_dir(layout, table, manifest) / f"lines-{lines[0]:09d}-{lines[1]:09d}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    changed()
    return target


def kept(layout: DataLayout, table: str, manifest: str) -> list[tuple[int, int, Path]]:
    """Every superseded file of one table and manifest: (first, last, path), by first line."""
    directory = superseded_dir(layout, table, manifest)
    try:
        stamp = directory.stat().st_mtime_ns
    except FileNotFoundError:
        return []
    return list(_listing(str(directory), stamp, _generation[0]))


@functools.lru_cache(maxsize=64)
def _listing(directory: str, stamp: int, generation: int) -> tuple[tuple[int, int, Path], ...]:
    """One listing per directory state (its mtime, and this process's changes): shard tasks
    ask once each, and at 4,000 shards re-listing for each would be quadratic."""
    found = []
    for entry in os.scandir(directory):
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match[1]), int(match[2]), Path(entry.path)))
    return tuple(sorted(found))


def overlapping(layout: DataLayout, table: str, manifest: str, first: int, last: int
                ) -> list[Path]:
    """The superseded files of `table`/`manifest` holding any of lines first..last."""
    return [p for a, b, p in kept(layout, table, manifest) if a <= last and b >= first]
