"""Read AVSpeech manifests line by line: validate, number, shard, and find duplicate clips.

AVSpeech CSVs have no header; each line is `youtube_id,start_seconds,end_seconds,x,y` with
(x, y) the normalised face centre. Lines are streamed as bytes (never the whole file) and every
non-blank line becomes exactly one record:

- status `ok` (so far: media comes later) or `invalid_row` with the reason in `error`;
- blank (empty or whitespace-only) lines are skipped but keep their line number and are
  counted, so `line_no` always matches what an editor shows;
- a UTF-8 BOM and CRLF endings are accepted; a line longer than MAX_LINE_BYTES is skipped over in
  chunks (memory stays flat) and recorded with its length, never its full text;
- `error` quotes at most ERROR_QUOTE_CHARS characters of a bad line.

Duplicates are decided on the clip key (youtube_id, start, end in ms: `storage.layout.clip_key`),
because every later stage joins on it: `plan_manifests` makes one streaming pass over all
manifests of a run, keeps a 16-byte hash per valid line, and maps every later copy to the first
line, so the answer is the same however shards are scheduled.

Splits: a manifest's split is the last word of its file stem (`avspeech_train`,
`avspeech-latest-test`, `my.dev`, or the bare `train`/`dev`/`test`), or `split=` given
explicitly (`s2f ingest --split`); any other name is refused with the fix (`split_of`). One
video is one speaker, so a YouTube id in two splits' manifests would put a person on both sides:
the same pass records the first line of every video per split, and every valid line of a video
found in two splits is `split_conflict`, its reason naming both manifest lines (file:line).

    python -m s2f.ingest.manifest MANIFEST.csv     # print every record as JSON lines
"""

from __future__ import annotations

import array
import csv
import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from s2f.ingest.prior import PriorClips
from storage.layout import clip_key, safe_name

YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
# Plain ASCII decimal numbers only: Python's float() would also take "nan", "inf", "1_000" and
# other scripts' digits ("١٢" is 12), which `\d` matches too.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
EXPECTED_COLUMNS = ("youtube_id", "start_seconds", "end_seconds", "x", "y")
MAX_LINE_BYTES = 4096
ERROR_QUOTE_CHARS = 200
# AVSpeech segments are 3-10 s. A cut is decoded into memory, so a hostile row asking for
# hours of a long video would cost gigabytes: refuse it as a bad row instead.
MAX_SEGMENT_S = 600.0
# ... and a segment too short to hold speech or the frames preprocessing samples (3 at 25 fps
# span 0.12 s) is refused too: a 0.0004 s one was `ok`.
MIN_SEGMENT_S = 0.2
_BOM = b"\xef\xbb\xbf"
# Manifest lines per shard when neither the run nor the data directory says (`s2f ingest
# --shard-size`; measured in docs/performance.md, "Shard size").
DEFAULT_SHARD_SIZE = 1024
_CHUNK = 1 << 16


def is_valid_youtube_id(value: str) -> bool:
    return YOUTUBE_ID.fullmatch(value) is not None


SPLITS = ("train", "dev", "test")
_WORDS = re.compile(r"[._\-\s]+")


class ManifestNameError(ValueError):
    """A manifest whose file name does not say which split it is."""


def split_of(manifest_name: str) -> str:
    """The split a manifest's file name (or stem) names: its last word, separated by `_`, `-`,
    `.` or a space, must be train, dev or test (any case), and no other split word may appear
    in it (`avspeech_latest_train.csv` is train; `test_vs_train.csv` and
    `avspeech_train_2019.csv` are refused). Raises ManifestNameError saying how to fix it."""
    name = Path(manifest_name).name
    stem = name[:-4] if name.lower().endswith(".csv") else name
    words = [w.lower() for w in _WORDS.split(stem) if w]
    named = [w for w in words if w in SPLITS]
    fix = (f"rename it to end in _train, _dev or _test (e.g. {stem or 'avspeech'}_train.csv) "
           "or give the split explicitly (s2f ingest --split train|dev|test)")
    if not words or words[-1] not in SPLITS:
        raise ManifestNameError(f"manifest {name!r}: its name does not end in a split word "
                                f"(train, dev, test): {fix}")
    if len(set(named)) > 1:
        raise ManifestNameError(f"manifest {name!r}: its name names several splits "
                                f"({', '.join(sorted(set(named)))}): {fix}")
    return words[-1]


def manifest_name_of(path: Path) -> str:
    """The manifest's name (its file stem), validated because it names a table directory."""
    return safe_name(Path(path).stem)


def quote(text: str) -> str:
    """A bad line as it may appear in `error`: repr-quoted, cut to ERROR_QUOTE_CHARS."""
    if len(text) > ERROR_QUOTE_CHARS:
        return repr(text[:ERROR_QUOTE_CHARS]) + f"... ({len(text)} chars)"
    return repr(text)


@dataclass(frozen=True)
class RawLine:
    """One physical line: its bytes (without the line ending), or only a prefix if too long."""

    line_no: int
    offset: int
    data: bytes
    length: int  # full length in bytes without the line ending

    @property
    def too_long(self) -> bool:
        return self.length > MAX_LINE_BYTES


def iter_raw_lines(
    fh: BinaryIO,
    first_line_no: int = 1,
    max_lines: int | None = None,
    hasher: Any | None = None,
) -> Iterator[RawLine]:
    """Stream lines from a binary file positioned at a line start. `hasher` (a hashlib object)
    sees every byte read, line endings included, so a shard's content can be fingerprinted in
    the same pass."""
    line_no = first_line_no
    produced = 0
    while max_lines is None or produced < max_lines:
        offset = fh.tell()
        # +2: a line of exactly MAX_LINE_BYTES still fits with its "\r\n".
        head = fh.readline(MAX_LINE_BYTES + 2)
        if not head:
            return
        if hasher is not None:
            hasher.update(head)
        length, tail, chunk = len(head), head[-2:], head
        # Too long: keep the head, skip the rest in bounded chunks.
        while not chunk.endswith(b"\n"):
            chunk = fh.readline(_CHUNK)
            if not chunk:
                break
            if hasher is not None:
                hasher.update(chunk)
            length += len(chunk)
            tail = (tail + chunk)[-2:]
        if tail.endswith(b"\n"):
            length -= 2 if tail == b"\r\n" else 1
        data = head[:length]
        if offset == 0 and data.startswith(_BOM):
            data, length = data[len(_BOM):], length - len(_BOM)
        yield RawLine(line_no=line_no, offset=offset, data=data, length=length)
        line_no += 1
        produced += 1


def is_blank(raw: RawLine) -> bool:
    return not raw.too_long and not raw.data.strip()


def _number(text: str, name: str) -> tuple[float | None, str | None]:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None, f"{name} is not a number: {quote(text)}"
    value = float(text)
    if not math.isfinite(value):
        return None, f"{name} is not finite: {quote(text)}"
    return value, None


def parse_line(raw: RawLine, manifest: str, split: str) -> dict[str, Any]:
    """One `clips` record (status `ok` or `invalid_row`) for a non-blank line. Never raises."""
    record: dict[str, Any] = {"manifest": manifest, "split": split, "line_no": raw.line_no,
                              "status": "invalid_row", "error": None}
    if raw.too_long:
        preview = raw.data[:ERROR_QUOTE_CHARS].decode("utf-8", errors="replace")
        record["error"] = (f"line is {raw.length} bytes long (limit {MAX_LINE_BYTES}); "
                           f"starts with {quote(preview)}")
        return record
    try:
        text = raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        preview = raw.data.decode("utf-8", errors="replace")
        record["error"] = f"not UTF-8 text ({exc.reason} at byte {exc.start}): {quote(preview)}"
        return record
    try:
        fields = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as exc:
        record["error"] = f"not a CSV line ({exc}): {quote(text)}"
        return record
    if len(fields) != len(EXPECTED_COLUMNS):
        record["error"] = (f"expected {len(EXPECTED_COLUMNS)} columns "
                           f"({','.join(EXPECTED_COLUMNS)}), got {len(fields)}: {quote(text)}")
        return record

    problems: list[str] = []
    youtube_id = fields[0].strip()
    if is_valid_youtube_id(youtube_id):
        record["youtube_id"] = youtube_id
    else:
        problems.append(f"youtube_id must be 11 characters of [A-Za-z0-9_-]: {quote(youtube_id)}")
    values: dict[str, float] = {}
    for name, text_value in zip(EXPECTED_COLUMNS[1:], fields[1:], strict=True):
        value, problem = _number(text_value, name)
        if problem:
            problems.append(problem)
        else:
            assert value is not None
            values[name] = value
    start, end = values.get("start_seconds"), values.get("end_seconds")
    if start is not None:
        record["start_s"] = start
        if start < 0:
            problems.append(f"start_seconds is negative: {start}")
    if end is not None:
        record["end_s"] = end
    if start is not None and end is not None and not start < end:
        problems.append(f"start_seconds ({start}) must be before end_seconds ({end})")
    elif start is not None and end is not None and end - start > MAX_SEGMENT_S:
        problems.append(f"segment is {end - start:g} s long (limit {MAX_SEGMENT_S:g} s)")
    elif start is not None and end is not None and end - start < MIN_SEGMENT_S:
        problems.append(f"segment is {end - start:g} s long (at least {MIN_SEGMENT_S:g} s)")
    for name, column in (("x", "hint_x"), ("y", "hint_y")):
        value = values.get(name)
        if value is None:
            continue
        record[column] = value
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name} must lie in [0, 1]: {value}")
    if problems:
        record["error"] = "; ".join(problems)
        return record
    assert start is not None and end is not None
    record["clip_key"] = clip_key(youtube_id, start, end)
    record["status"] = "ok"
    return record


def iter_records(path: Path, manifest: str | None = None,
                 split: str | None = None) -> Iterator[dict[str, Any]]:
    """Every non-blank line of a manifest as a record (duplicates and split conflicts not
    marked: see plan_manifests). `split`: as the name says (`split_of`) when None."""
    path = Path(path)
    manifest = manifest or manifest_name_of(path)
    split = split or split_of(path.name)
    with open(path, "rb") as fh:
        for raw in iter_raw_lines(fh):
            if not is_blank(raw):
                yield parse_line(raw, manifest, split)


# Planning: shards and duplicates ------------------------------------------------------------

@dataclass(frozen=True)
class ShardPlan:
    """Lines [first_line, first_line + n_lines) of one manifest, starting at byte `offset`.
    `duplicates` maps a line number in this shard to (manifest, line_no) of its first copy;
    `conflicts` maps a video of this shard that two splits claim (its `video_key`) to its first line in
    each split (`split -> "file:line"`): its lines are `split_conflict` (`conflict_reason`)."""

    manifest: str
    manifest_path: str
    split: str
    index: int
    offset: int
    first_line: int
    n_lines: int
    duplicates: dict[int, tuple[str, int]] = field(default_factory=dict)
    conflicts: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class ManifestPlan:
    manifest: str
    path: Path
    lines: int = 0
    blank_lines: int = 0
    # Shards with a non-blank line; `n_shards` counts every shard-sized range of lines and
    # `blank_shards` the indices of those holding only blank lines (no file: a manifest of
    # blank lines made one empty Parquet file and one Prefect task per 256 of them).
    shards: list[ShardPlan] = field(default_factory=list)
    n_shards: int = 0
    blank_shards: list[int] = field(default_factory=list)
    shard_size: int = 0  # lines per shard: shard i holds lines i * size + 1 .. (i + 1) * size


def _key_digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


def plan_manifests(paths: list[Path], shard_size: int, split: str | None = None,
                   prior: PriorClips | None = None) -> list[ManifestPlan]:
    """One streaming pass over every manifest: shard boundaries (byte offsets), for every
    later copy of a clip key the line of its first copy (first in the order given), and the
    lines of videos that appear in two splits (`split_conflict`). `split`: every manifest's
    split (None: each one's name says it, `split_of`). `prior`: the rows earlier runs wrote
    for other manifests (`s2f.ingest.prior.read_prior_clips`): they come first, so a key or a
    video already in the data directory makes this run's copy a duplicate or a conflict.

    Memory: 16 bytes of hash + 10 bytes of position per valid line for the duplicates, as much
    again for the split claims (`_Claims`): about 53 MB per million lines, independent of line
    length, and no Python object per line or per video."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    names = [manifest_name_of(p) for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"two manifests share a name (file stem): {names}")
    splits = [split or split_of(Path(p).name) for p in paths]  # refuses a bad name up front
    claims = _Claims()  # which splits claim each video, and where
    digests = bytearray()
    manifest_idx = array.array("H")
    line_nos = array.array("q")
    plans: list[ManifestPlan] = []
    earlier = _seed_prior(prior or PriorClips(), names, claims, digests, manifest_idx, line_nos)
    for m_idx, (path, name) in enumerate(zip(paths, names, strict=True)):
        plan = ManifestPlan(manifest=name, path=Path(path).resolve(), shard_size=shard_size)
        m_split = splits[m_idx]
        offsets: list[int] = []
        filled: list[bool] = []  # per shard: has a non-blank line
        with open(path, "rb") as fh:
            for raw in iter_raw_lines(fh):
                if (raw.line_no - 1) % shard_size == 0:
                    offsets.append(raw.offset)
                    filled.append(False)
                plan.lines = raw.line_no
                if is_blank(raw):
                    plan.blank_lines += 1
                    continue
                filled[-1] = True
                record = parse_line(raw, name, m_split)
                if record["status"] == "ok":
                    digests += _key_digest(record["clip_key"])
                    manifest_idx.append(m_idx)
                    line_nos.append(raw.line_no)
                    claims.add(record["youtube_id"], m_split, m_idx, raw.line_no)
        for index, offset in enumerate(offsets):
            first = index * shard_size + 1
            plan.shards.append(ShardPlan(
                manifest=name, manifest_path=str(plan.path), split=m_split, index=index,
                offset=offset, first_line=first, n_lines=min(shard_size, plan.lines - first + 1)))
        plan.n_shards = len(offsets)
        plan.blank_shards = [i for i, has_lines in enumerate(filled) if not has_lines]
        plans.append(plan)

    if line_nos:
        duplicates = _find_duplicates(np.frombuffer(digests, dtype="V16"),  # no copy
                                      np.frombuffer(manifest_idx, dtype=np.uint16),
                                      np.frombuffer(line_nos, dtype=np.int64))
        for (m_idx, line_no), (first_m, first_line) in duplicates.items():
            if m_idx >= len(paths):
                continue  # between earlier runs' rows: already decided when they were written
            plan = plans[m_idx]
            shard = plan.shards[(line_no - 1) // shard_size]
            shard.duplicates[line_no] = (
                names[first_m] if first_m < len(paths) else
                f"{earlier[first_m - len(paths)]} (ingested earlier)", first_line)
    files = [Path(p).name for p in paths] + [f"{m} (ingested earlier)" for m in earlier]
    for key, firsts, lines in claims.conflicts():
        where = {sp: f"{files[m]}:{n}" for sp, (m, n) in firsts.items()}
        for m_idx, line_no in lines:
            if m_idx < len(paths):  # this run's lines (earlier runs' rows are decided)
                plans[m_idx].shards[(line_no - 1) // shard_size].conflicts[key] = where
    _drop_blank_shards(plans)  # after the positional look-ups above
    return plans


def _drop_blank_shards(plans: list[ManifestPlan]) -> None:
    """Leave out the shards whose lines are all blank: nothing to write, no task to run."""
    for plan in plans:
        blank = set(plan.blank_shards)
        plan.shards = [s for s in plan.shards if s.index not in blank]


def video_key(youtube_id: str) -> str:
    """A video's key in `ShardPlan.conflicts`: the hex of its 16-byte hash."""
    return _key_digest(youtube_id).hex()


class _Claims:
    """Every valid line's video and split, in reading order, as arrays (27 bytes a line, no
    object per video): the videos two splits claim are found by sorting, once."""

    def __init__(self) -> None:
        self.digests = bytearray()
        self.split = array.array("B")
        self.manifest = array.array("H")
        self.line = array.array("q")
        self.names: list[str] = []  # split names by code

    def add(self, youtube_id: str, split: str, m_idx: int, line_no: int) -> None:
        if split not in self.names:
            self.names.append(split)
        self.digests += _key_digest(youtube_id)
        self.split.append(self.names.index(split))
        self.manifest.append(m_idx)
        self.line.append(line_no)

    def conflicts(self) -> Iterator[tuple[str, dict[str, tuple[int, int]], list[tuple[int, int]]]]:
        """(video_key, {split: (manifest index, first line)}, every (manifest index, line) of
        the video) for each video claimed by more than one split."""
        if not self.line:
            return
        hi = np.frombuffer(self.digests, dtype=np.uint64).reshape(-1, 2)  # no copy
        split = np.frombuffer(self.split, dtype=np.uint8)
        order = np.lexsort((np.arange(len(hi)), hi[:, 1], hi[:, 0]))  # by video, then as read
        sorted_hi, sorted_split = hi[order], split[order]
        starts = np.flatnonzero(np.r_[True, np.any(sorted_hi[1:] != sorted_hi[:-1], axis=1)])
        mixed = (np.minimum.reduceat(sorted_split, starts)
                 != np.maximum.reduceat(sorted_split, starts))
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts[mixed], ends[mixed], strict=True):
            firsts: dict[str, tuple[int, int]] = {}
            lines = []
            for pos in order[start:end]:
                at = (int(self.manifest[pos]), int(self.line[pos]))
                firsts.setdefault(self.names[self.split[pos]], at)
                lines.append(at)
            yield bytes(self.digests[16 * pos:16 * pos + 16]).hex(), firsts, lines


def _seed_prior(prior: PriorClips, names: list[str], claims: _Claims,
                digests: bytearray, manifest_idx: array.array, line_nos: array.array) -> list[str]:
    """Earlier runs' rows first in reading order (indices after this run's manifests): their
    videos' splits and their first copies of clip keys. Returns their manifests' names."""
    earlier = prior.manifests
    if set(earlier) & set(names):
        raise ValueError(f"prior clips include this run's manifests: {set(earlier) & set(names)}")
    earlier_idx = {m: len(names) + i for i, m in enumerate(earlier)}
    for manifest, line_no, youtube_id, split, key, first_copy in prior.rows:
        claims.add(youtube_id, split, earlier_idx[manifest], line_no)
        if first_copy and key:
            digests += _key_digest(key)
            manifest_idx.append(earlier_idx[manifest])
            line_nos.append(line_no)
    return earlier


def conflict_reason(youtube_id: str, manifest_file: str, line_no: int, split: str,
                    where: dict[str, str]) -> str:
    """Why a line of a video claimed by two splits is refused: its own line and the first line
    of the video in each other split."""
    others = " and ".join(f"{loc} ({sp})" for sp, loc in sorted(where.items()) if sp != split)
    return (f"youtube id {youtube_id} is in two splits: {manifest_file}:{line_no} ({split}) and "
            f"{others}; one video (one speaker) may be in one split only: remove its lines from "
            "all but one manifest")


def _find_duplicates(digests: np.ndarray, manifest_idx: np.ndarray,
                     line_nos: np.ndarray) -> dict[tuple[int, int], tuple[int, int]]:
    """Positions are in reading order, so a stable sort by digest puts each key's first copy
    first within its group."""
    hi = digests.view(np.uint64).reshape(-1, 2)
    order = np.lexsort((np.arange(len(hi)), hi[:, 1], hi[:, 0]))
    sorted_hi = hi[order]
    same_as_previous = np.zeros(len(order), dtype=bool)
    same_as_previous[1:] = np.all(sorted_hi[1:] == sorted_hi[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(~same_as_previous, np.arange(len(order)), 0))
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for pos in np.flatnonzero(same_as_previous):
        dup, first = order[pos], order[group_start[pos]]
        out[(int(manifest_idx[dup]), int(line_nos[dup]))] = (
            int(manifest_idx[first]), int(line_nos[first]))
    return out


if __name__ == "__main__":
    import json
    import sys

    for arg in sys.argv[1:]:
        for rec in iter_records(Path(arg)):
            print(json.dumps(rec))
