"""Clips' cut audio packed one file per clips shard, and the one reader of every clip's audio.

    with PackWriter(layout.pack_path(clips_shard, token), layout) as pack:   # ingest
        row["audio_path"] = pack.add(clip_key, flac_bytes)                    # the clip's key
    reader = AudioReader()                                                    # training, evaluation
    blobs = reader.encoded([layout.resolve(k) for k in keys])                 # bytes or AudioReadError
    wave = load_clip_audio(layout.resolve(key))                               # one clip, float32

A pack is an uncompressed tar of `<clip_key>.flac` members (`tar tf` lists it, `tar xf`
extracts it), written once, streamed one member at a time (memory: one FLAC), to a temporary
file that is fsynced and renamed (`storage.io.atomic_path`). Each clip's key
(`storage.layout.PACK_KEY_TEMPLATE`) names the pack and its FLAC's offset, size and CRC-32, so a
read is one `pread` with no tar parsing, and a damaged or missing blob is an `AudioReadError`
naming the key and what is wrong (the CRC-32 differs, the pack is missing or shorter).

`AudioReader.encoded` groups a batch's keys by file, opens each pack once and reads its members
in offset order, merging members less than `max_gap` apart into one read: a batch is a few
long forward reads of one or two files instead of one open and one small read per clip (the
training stream draws a batch from one face_features shard = one clips shard = one pack).
Keys of the per-clip layout (`audio/<id>/<clip_key>.flac`, data ingested before packs) are read
whole, as before.

    python -m s2f.media.packs PACK.tar      # lists the members: offset, size, name
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import uuid
import zlib
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import av
import numpy as np

from s2f.media.audio import SAMPLE_RATE, load_audio
from storage.io import atomic_path, fsync_dir
from storage.layout import DataLayout, PackRef, parse_audio_key

# Members closer than this are read as one span (the bytes between are dropped): one request
# instead of two costs less than 256 KiB of transfer on any disk or network file system.
MAX_GAP_BYTES = 256 << 10
# A span is never longer than this (memory of one read).
MAX_SPAN_BYTES = 16 << 20


class AudioReadError(Exception):
    """A clip's audio cannot be read: its key and why (missing, truncated, CRC, decoding)."""

    def __init__(self, key: str | Path, reason: str) -> None:
        super().__init__(f"audio of {key}: {reason}")
        self.key, self.reason = str(key), reason

    def __reduce__(self) -> tuple[type[AudioReadError], tuple[str, str]]:
        return type(self), (self.key, self.reason)  # picklable: loader workers raise it


class PackWriter:
    """Streams FLACs into one pack: `add` appends a member and returns its key (relative to
    the data directory); leaving the block without an error commits the pack (fsync, rename,
    directory fsync), with one the temporary file is removed. Nothing is written (no file at
    all) when nothing is added."""

    def __init__(self, path: Path, layout: DataLayout) -> None:
        self.path, self.layout = Path(path), layout
        self.relative = layout.relative(self.path) if self.path.is_absolute() else str(path)
        self._stack = ExitStack()
        self._tar: tarfile.TarFile | None = None
        self.members = 0

    def __enter__(self) -> PackWriter:
        return self

    def _open(self) -> tarfile.TarFile:
        tmp = self._stack.enter_context(atomic_path(self.path))
        fh = self._stack.enter_context(open(tmp, "wb"))
        self._tar = self._stack.enter_context(tarfile.open(fileobj=fh, mode="w",
                                                           format=tarfile.PAX_FORMAT))
        return self._tar

    def add(self, name: str, data: bytes) -> str:
        """Append `name`.flac holding `data`; its key (`storage.layout.PackRef.key`)."""
        tar = self._tar or self._open()
        info = tarfile.TarInfo(f"{name}.flac")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        offset = tar.offset - padded  # after the member: its header, then its padded data
        self.members += 1
        return PackRef(self.relative, offset, len(data), zlib.crc32(data)).key()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Closing the tar writes its end blocks; atomic_path then fsyncs and renames (or, on
        # an error, removes the temporary file).
        committed = self._tar is not None and kind is None
        self._stack.__exit__(kind, exc, tb)
        if committed:
            fsync_dir(self.path.parent)


def pack_token(fingerprint: str) -> str:
    """A pack's token from its shard's fingerprint (the same inputs, the same name and keys;
    other inputs, another file: a pack is never overwritten with other contents)."""
    return fingerprint[:16]


def new_token() -> str:
    """A random pack token (a pack written outside the ingest stage's fingerprints)."""
    return uuid.uuid4().hex[:16]


def pack_holds(layout: DataLayout, key: str, sizes: dict[str, int] | None = None) -> bool:
    """Whether a clip's audio key (relative) is there as far as a stat tells: a per-clip FLAC
    exists; a pack member's pack exists and is long enough to hold the member (offset +
    size; the CRC-32 is checked when it is read). `sizes` caches the packs' sizes across
    calls (-1: missing)."""
    ref = parse_audio_key(key)
    if ref is None:
        return layout.resolve(key).exists()
    path = layout.resolve(ref.pack)
    cache = {} if sizes is None else sizes
    if ref.pack not in cache:
        try:
            cache[ref.pack] = path.stat().st_size
        except OSError:
            cache[ref.pack] = -1
    return cache[ref.pack] >= ref.offset + ref.size


def missing_audio(layout: DataLayout, keys: Sequence[str | None]) -> str | None:
    """Why some of a shard's pack keys cannot be read (their pack is missing or ends before a
    member does), or None: a cheap check (one stat per pack) before a re-run skips a shard."""
    ends: dict[str, int] = defaultdict(int)
    for key in keys:
        ref = parse_audio_key(key) if key else None
        if ref is not None:
            ends[ref.pack] = max(ends[ref.pack], ref.offset + ref.size)
    for pack, end in sorted(ends.items()):
        try:
            size = layout.resolve(pack).stat().st_size
        except OSError as exc:
            return f"its audio pack {pack} cannot be read ({exc.strerror or exc})"
        if size < end:
            return f"its audio pack {pack} is {size} bytes, its members end at {end}"
    return None


def read_spans(refs: list[tuple[int, PackRef]], max_gap: int) -> list[list[tuple[int, PackRef]]]:
    """Members in offset order, grouped into spans read at once."""
    spans: list[list[tuple[int, PackRef]]] = []
    for item in sorted(refs, key=lambda ir: ir[1].offset):
        ref = item[1]
        if spans:
            first = spans[-1][0][1].offset
            end = max(r.offset + r.size for _, r in spans[-1])
            if ref.offset - end <= max_gap and ref.offset + ref.size - first <= MAX_SPAN_BYTES:
                spans[-1].append(item)
                continue
        spans.append([item])
    return spans


class AudioReader:
    """Reads clips' encoded audio by resolved key (`DataLayout.resolve(audio_path)`)."""

    def __init__(self, max_gap: int = MAX_GAP_BYTES) -> None:
        self.max_gap = max_gap

    def encoded(self, keys: Sequence[str | Path]) -> list[bytes | AudioReadError]:
        """Each key's FLAC bytes, or the AudioReadError saying why it cannot be read (one
        bad clip never stops the others)."""
        out: list[bytes | AudioReadError] = [AudioReadError(k, "not read") for k in keys]
        packs: dict[str, list[tuple[int, PackRef]]] = defaultdict(list)
        for i, key in enumerate(keys):
            ref = parse_audio_key(key)
            if ref is None:
                out[i] = _read_file(key)
            else:
                packs[ref.pack].append((i, ref))
        for pack, refs in packs.items():
            self._read_pack(pack, refs, keys, out)
        return out

    def _read_pack(self, pack: str, refs: list[tuple[int, PackRef]],
                   keys: Sequence[str | Path], out: list[bytes | AudioReadError]) -> None:
        try:
            fd = os.open(pack, os.O_RDONLY)
        except OSError as exc:
            for i, _ in refs:
                out[i] = AudioReadError(keys[i], f"its pack cannot be opened ({exc.strerror or exc}"
                                                 "): re-run `s2f ingest` to cut it again")
            return
        try:
            for span in read_spans(refs, self.max_gap):
                start = span[0][1].offset
                length = max(r.offset + r.size for _, r in span) - start
                data = os.pread(fd, length, start)
                for i, ref in span:
                    out[i] = _member(keys[i], data, ref.offset - start, ref)
        except OSError as exc:
            for i, _ in refs:
                if not isinstance(out[i], bytes):
                    out[i] = AudioReadError(keys[i], f"reading its pack failed: {exc}")
        finally:
            os.close(fd)

    def waves(self, keys: Sequence[str | Path],
              sample_rate: int = SAMPLE_RATE) -> list[np.ndarray | AudioReadError]:
        """Each key's float32 mono samples at `sample_rate`, or its AudioReadError."""
        return [blob if isinstance(blob, AudioReadError) else decode(key, blob, sample_rate)
                for key, blob in zip(keys, self.encoded(keys), strict=True)]


def _member(key: str | Path, data: bytes, at: int, ref: PackRef) -> bytes | AudioReadError:
    blob = data[at:at + ref.size]
    if len(blob) != ref.size:
        return AudioReadError(key, f"the pack ends before the member does ({len(blob)} of "
                                   f"{ref.size} bytes at offset {ref.offset}): truncated")
    crc = zlib.crc32(blob)
    if crc != ref.crc32:
        return AudioReadError(key, f"its bytes fail their CRC-32 ({crc:08x}, recorded "
                                   f"{ref.crc32:08x}): the pack is damaged")
    return blob


def _read_file(key: str | Path) -> bytes | AudioReadError:
    try:
        with open(key, "rb") as fh:
            return fh.read()
    except OSError as exc:
        return AudioReadError(key, f"the FLAC cannot be read ({exc.strerror or exc})")


def decode(key: str | Path, blob: bytes | BinaryIO,
           sample_rate: int = SAMPLE_RATE) -> np.ndarray | AudioReadError:
    """float32 mono samples of one encoded clip, or the AudioReadError of a bad one."""
    try:
        return load_audio(io.BytesIO(blob) if isinstance(blob, bytes) else blob, sample_rate)
    except (av.error.FFmpegError, ValueError) as exc:
        return AudioReadError(key, f"the FLAC does not decode: {exc}")


def read_encoded(key: str | Path) -> bytes:
    """One clip's FLAC bytes (resolved key); raises AudioReadError."""
    blob = AudioReader().encoded([key])[0]
    if isinstance(blob, AudioReadError):
        raise blob
    return blob


def load_clip_audio(key: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One clip's float32 mono samples (resolved key, pack member or FLAC); raises
    AudioReadError."""
    wave = decode(key, read_encoded(key), sample_rate)
    if isinstance(wave, AudioReadError):
        raise wave
    return wave


def as_file(key: str | Path, folder: Path, name: str) -> Path:
    """A file holding one clip's FLAC, for tools that take files (`s2f predict`): a per-clip
    FLAC is itself; a pack member is copied to `folder/name.flac` (atomically)."""
    if parse_audio_key(key) is None:
        return Path(key)
    out = Path(folder) / f"{name}.flac"
    with atomic_path(out) as tmp:
        tmp.write_bytes(read_encoded(key))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for pack in args:
        with tarfile.open(pack) as tar:
            for member in tar.getmembers():
                print(f"{member.offset_data:>12} {member.size:>10} {member.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
