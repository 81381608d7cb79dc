"""`s2f gc`: find (and with `--yes` remove) what no live shard needs any more.

    from storage.gc import find_orphans, remove_orphans
    found = find_orphans(layout)        # holds the ingest and preprocess locks while it looks
    remove_orphans(layout, found)       # the same locks; removes the removable ones only

Each kind of leftover is one entry of `ORPHAN_KINDS` (a name and a function listing what it
finds); a new kind of output is one more entry:

- `superseded`: shards of another shard size moved aside by ingest or preprocess
  (`storage.superseded`). Removable once live shards of the same table and manifest hold
  every line they hold (their clips were reused or redone); until then a re-run of the stage
  may still reuse them, so they are listed as kept, with the lines not yet covered.
- `orphan-output`: a `preprocess`, `faces` or `face_features` shard whose clips shard is gone.
  Removable if it records no lines (written before issue 26: nothing can reuse it) or if live
  outputs hold its lines; otherwise kept for `s2f preprocess` to reuse.
- `unreferenced-pack`: a pack under `audio/packs/` that no `clips` row (live or kept
  superseded) names in `audio_path` (`storage.layout.parse_audio_key`): a redone shard's
  earlier pack, a killed run's, a removed shard's. Ingest deletes no pack: a row copied by a
  re-shard keeps naming the pack it was cut into, which may be another shard index's, so a
  pack is live while any row names it, whatever shard wrote it.
- `unreferenced-audio`: any other file under `audio/` that no such row names: a per-clip FLAC
  (data ingested before packs) of a clip that left the manifest or whose shard was redone
  into a pack, a killed write's temporary file.

Never listed: a live shard (a `clips` shard, an output shard whose clips shard exists), the
MLflow and Prefect state, locks, the demo corpus.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from storage.io import read_table_verified, shard_paths
from storage.layout import PACK_DIR, SHARD_GLOB, DataLayout, parse_audio_key
from storage.lock import stage_lock
from storage.schemas import PREPROCESS_OUTPUT_TABLES as OUTPUT_TABLES
from storage.superseded import SUPERSEDED, changed, kept, line_range

LOCKED_STAGES = ("ingest", "preprocess")  # the stages that write what gc removes


@dataclass(frozen=True)
class Orphan:
    kind: str
    path: Path
    size: int
    why: str
    removable: bool = True


@dataclass(frozen=True)
class OrphanKind:
    name: str
    find: Callable[[DataLayout, Context], Iterator[Orphan]]
    description: str


@dataclass
class Context:
    """What several kinds ask: live line ranges per (table, manifest), kept clips files."""

    layout: DataLayout
    _ranges: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)
    kept_clips: list[Path] = field(default_factory=list)
    referenced: set[str] | None = None  # the audio files clips rows name (`_referenced_audio`)

    def live_ranges(self, table: str, manifest: str) -> list[tuple[int, int]]:
        """Lines held by live shards: clips shards, or outputs whose clips shard has the same
        lines (an output under another layout's name holds nothing for the new one)."""
        key = (table, manifest)
        if key not in self._ranges:
            ranges = []
            for path in sorted((self.layout.table_dir(table) / manifest).glob(SHARD_GLOB)):
                lines = line_range(path)
                clips = self.layout.table_dir("clips") / manifest / path.name
                if lines is not None and (table == "clips" or line_range(clips) == lines):
                    ranges.append(lines)
            self._ranges[key] = ranges
        return self._ranges[key]

    def uncovered(self, table: str, manifest: str, first: int, last: int) -> int:
        """How many of lines first..last no live shard of `table`/`manifest` holds."""
        missing, at = 0, first
        for a, b in sorted(self.live_ranges(table, manifest)):
            if b < at:
                continue
            if a > at:
                missing += min(a, last + 1) - at
            at = max(at, b + 1)
            if at > last:
                break
        return missing + max(0, last + 1 - at)


def _superseded(layout: DataLayout, ctx: Context) -> Iterator[Orphan]:
    root = layout.root / SUPERSEDED
    for table_dir in sorted(p for p in root.glob("*") if p.is_dir()):
        for manifest_dir in sorted(p for p in table_dir.glob("*") if p.is_dir()):
            table, manifest = table_dir.name, manifest_dir.name
            for first, last, path in kept(layout, table, manifest):
                missing = ctx.uncovered(table, manifest, first, last)
                if missing and table == "clips":
                    ctx.kept_clips.append(path)
                yield Orphan("superseded", path, path.stat().st_size,
                             f"{table}/{manifest} lines {first}-{last} of another shard size; "
                             + (f"{missing} of its lines are in no live shard yet: a re-run "
                                f"of the stage may reuse them" if missing else
                                "live shards hold every line"), removable=not missing)


def _orphan_outputs(layout: DataLayout, ctx: Context) -> Iterator[Orphan]:
    for table in OUTPUT_TABLES:
        for path in shard_paths(layout, table):
            if (layout.table_dir("clips") / path.parent.name / path.name).exists():
                continue  # live
            lines = line_range(path)
            missing = ctx.uncovered(table, path.parent.name, *lines) if lines else 0
            yield Orphan("orphan-output", path, path.stat().st_size,
                         f"{table}: its clips shard {path.parent.name}/{path.name} is gone; "
                         + ("it records no lines, nothing can reuse it" if lines is None else
                            f"{missing} of its lines are in no live output: `s2f preprocess` "
                            "may reuse them" if missing else "live outputs hold its lines"),
                         removable=not missing)


def _referenced_audio(layout: DataLayout, ctx: Context) -> set[str]:
    """The files (relative to the data directory) that live or kept `clips` rows name: the
    pack of a pack member's key, the FLAC of a per-clip key. Read once per gc pass."""
    if ctx.referenced is None:
        names: set[str] = set()
        for path in [*shard_paths(layout, "clips"), *ctx.kept_clips]:
            column = read_table_verified(path, ["audio_path"]).column("audio_path")
            for key in column.unique().to_pylist():
                if key:
                    ref = parse_audio_key(key)
                    names.add(key if ref is None else ref.pack)
        ctx.referenced = names
    return ctx.referenced


def _audio_files(layout: DataLayout, packs: bool) -> Iterator[Path]:
    """Files under `audio/packs/` (`packs`) or under the rest of `audio/`, sorted."""
    audio, pack_dir = layout.root / "audio", layout.root / PACK_DIR
    root = pack_dir if packs else audio
    if not root.is_dir():
        return
    for directory, subdirs, files in os.walk(root):
        if not packs and Path(directory) == audio:
            subdirs[:] = [d for d in subdirs if audio / d != pack_dir]
        subdirs.sort()
        for name in sorted(files):
            yield Path(directory) / name


def _unreferenced_packs(layout: DataLayout, ctx: Context) -> Iterator[Orphan]:
    referenced = _referenced_audio(layout, ctx)
    for path in _audio_files(layout, packs=True):
        if layout.relative(path) not in referenced:
            yield Orphan("unreferenced-pack", path, path.stat().st_size,
                         "no clips row's audio_path names this pack" if path.suffix == ".tar"
                         else "not a pack and named by no clips row (a killed write's temporary "
                              "file)")


def _unreferenced_audio(layout: DataLayout, ctx: Context) -> Iterator[Orphan]:
    referenced = _referenced_audio(layout, ctx)
    for path in _audio_files(layout, packs=False):
        if layout.relative(path) not in referenced:
            yield Orphan("unreferenced-audio", path, path.stat().st_size,
                         "no clips row names it in audio_path")


# In this order: the audio kinds read the clips files the superseded kind keeps.
ORPHAN_KINDS: list[OrphanKind] = [
    OrphanKind("superseded", _superseded, "shards of another shard size, moved aside"),
    OrphanKind("orphan-output", _orphan_outputs, "preprocess outputs whose clips shard is gone"),
    OrphanKind("unreferenced-pack", _unreferenced_packs, "audio packs no clips row names"),
    OrphanKind("unreferenced-audio", _unreferenced_audio, "other audio no clips row names"),
]


def _locks(layout: DataLayout) -> ExitStack:
    """The locks of the stages that write what gc looks at (StageLocked if one is running)."""
    stack = ExitStack()
    try:
        for stage in LOCKED_STAGES:
            stack.enter_context(stage_lock(layout, stage))
    except BaseException:
        stack.close()
        raise
    return stack


def find_orphans(layout: DataLayout) -> list[Orphan]:
    """Everything of `ORPHAN_KINDS`, removable or kept (with why), under the stage locks."""
    with _locks(layout):
        ctx = Context(layout)
        return [orphan for kind in ORPHAN_KINDS for orphan in kind.find(layout, ctx)]


def remove_orphans(layout: DataLayout, orphans: list[Orphan]) -> list[Orphan]:
    """Remove the removable ones, after finding them again under the locks: only what is
    still an orphan now is removed. Returns what was removed."""
    wanted = {o.path for o in orphans if o.removable}
    removed = []
    with _locks(layout):
        ctx = Context(layout)
        for kind in ORPHAN_KINDS:
            for orphan in list(kind.find(layout, ctx)):
                if orphan.removable and orphan.path in wanted:
                    orphan.path.unlink(missing_ok=True)
                    removed.append(orphan)
        changed()
    _remove_empty_dirs([layout.root / SUPERSEDED, layout.root / "audio"])
    return removed


def _remove_empty_dirs(roots: list[Path]) -> None:
    for root in roots:
        for directory, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
            if Path(directory) != root:
                try:
                    os.rmdir(directory)
                except OSError:
                    pass  # not empty


def print_gc(layout: DataLayout, yes: bool, out: Callable[[str], None] = print) -> int:
    """`s2f gc`: list what would be removed and its bytes (kept ones with why); with `yes`
    remove it. 0, or 3 when a stage holds its lock (`StageLocked`, raised)."""
    found = find_orphans(layout)
    for kind in ORPHAN_KINDS:
        mine = [o for o in found if o.kind == kind.name]
        gone = [o for o in mine if o.removable]
        out(f"{kind.name} ({kind.description}): {len(gone)} files, {_mb(gone)} removable"
            + (f"; {len(mine) - len(gone)} kept" if len(mine) > len(gone) else ""))
        for o in mine:
            out(f"  {'remove' if o.removable else 'keep  '} {_mb([o]):>10}  "
                f"{layout.relative(o.path)}: {o.why}")
    removable = [o for o in found if o.removable]
    if not yes:
        out(f"dry run: {len(removable)} files, {_mb(removable)} would be removed; "
            "run with --yes to remove them")
        return 0
    removed = remove_orphans(layout, removable)
    out(f"removed {len(removed)} files, {_mb(removed)}")
    return 0


def _mb(orphans: list[Orphan]) -> str:
    size = sum(o.size for o in orphans)
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size} bytes"
