"""What earlier ingest runs put in the data directory: the clip keys and the splits of videos
already in a `clips` table, so that a later run's duplicates and split conflicts are decided
against the whole data directory, not only against the manifests it was given.

Only manifests that are not in the current run are read (the run's own manifests are planned
from their files). Rows that claim a split for their video: every row with a YouTube id except
`invalid_row` (a `split_conflict` or `duplicate` row still says the video was given to that
split). Rows that are the first copy of their clip key: those whose status is neither
`invalid_row`, `duplicate` nor `split_conflict`. A shard that cannot be read is skipped and
named in `unreadable` (the caller logs it): the check can only be as complete as the table.

    python -m s2f.ingest.prior DATA_DIR     # counts of earlier clip keys and videos per split
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from storage.io import read_shard, shard_paths
from storage.layout import DataLayout, safe_name

_NOT_A_FIRST_COPY = frozenset({"invalid_row", "duplicate", "split_conflict"})


@dataclass
class PriorClips:
    """Rows of earlier runs, in table order: (manifest, line_no, youtube_id, split, clip_key,
    first_copy: whether the row is its clip key's first copy)."""

    rows: list[tuple[str, int, str, str, str | None, bool]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def manifests(self) -> list[str]:
        return sorted({r[0] for r in self.rows})


def read_prior_clips(data_dir: Path, exclude: set[str]) -> PriorClips:
    """Every `clips` row of the manifests not in `exclude` that claims a split or a clip key."""
    layout = DataLayout(Path(data_dir))
    prior = PriorClips()
    columns = ["manifest", "line_no", "youtube_id", "split", "clip_key", "status"]
    excluded_dirs = {safe_name(m) for m in exclude}
    for path in shard_paths(layout, "clips"):
        if path.parent.name in excluded_dirs:  # a manifest's shards are under its own folder
            continue
        try:
            data = read_shard(path, "clips", columns)
        except (OSError, pa.ArrowException, KeyError) as exc:
            prior.unreadable.append(f"{layout.relative(path)} ({exc})")
            continue
        for row in data.to_pylist():
            if row["manifest"] in exclude or not row["youtube_id"] or row["status"] == "invalid_row":
                continue
            prior.rows.append((row["manifest"], int(row["line_no"]), row["youtube_id"],
                               row["split"], row["clip_key"],
                               row["status"] not in _NOT_A_FIRST_COPY and bool(row["clip_key"])))
    return prior


if __name__ == "__main__":
    found = read_prior_clips(Path(sys.argv[1]), set())
    print(len({r[4] for r in found.rows if r[5]}), "clip keys;",
          len({(r[2], r[3]) for r in found.rows}), "(video, split) pairs;",
          len(found.unreadable), "unreadable shards")
