"""Where everything lives under one data directory.

    <data_dir>/
      tables/<table>/<manifest>/shard-<NNNNN>.parquet   one Parquet file per shard of manifest lines
      audio/packs/<manifest>/shard-<NNNNN>-<token>.tar  the cut audio of one clips shard: a tar of
                                                        16 kHz mono FLACs, read by offset
      audio/<youtube_id>/<clip_key>.flac                one clip's FLAC (data ingested before packs)
      superseded/<table>/<manifest>/lines-A-B.parquet   shards of another shard size, kept for
                                                        reuse until `s2f gc` (storage.superseded)
      mlflow/mlflow.db, mlflow/artifacts/               MLflow tracking store and artifacts
      prefect/                                          PREFECT_HOME (SQLite database, logs)
      locks/                                            advisory file locks of running stages
      demo_corpus/                                      `s2f demo` builds its corpus here

Video is never copied: clips reference their source media by path and time range.

A clip's `audio_path` (the clips table) is its audio key, relative to the data directory: a
pack member `audio/packs/<manifest>/shard-<NNNNN>-<token>.tar#<offset>:<size>:<crc32>` (the
FLAC's bytes at `offset`, `size` long, their CRC-32 in 8 hex digits) or, in data ingested
before packs, a per-clip `audio/<youtube_id>/<clip_key>.flac`. `parse_audio_key` tells them
apart; `s2f.media.packs` reads both.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from storage.space import check_free_space

SHARD_TEMPLATE = "shard-{index:05d}.parquet"
SHARD_GLOB = "shard-*.parquet"
AUDIO_TEMPLATE = "audio/{youtube_id}/{clip_key}.flac"
PACK_DIR = "audio/packs"
PACK_TEMPLATE = PACK_DIR + "/{manifest}/{shard}-{token}.tar"
PACK_KEY_TEMPLATE = "{pack}#{offset}:{size}:{crc32:08x}"
_PACK_KEY = re.compile(r"^(?P<pack>.+\.tar)#(?P<offset>\d+):(?P<size>\d+):(?P<crc32>[0-9a-f]{8})$")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def clip_key(youtube_id: str, start_s: float, end_s: float) -> str:
    """The key of one clip: a YouTube id holds several AVSpeech segments, so the key is
    (id, start, end), in whole milliseconds so that it is also a safe file name."""
    return f"{youtube_id}_{round(start_s * 1000):09d}_{round(end_s * 1000):09d}"


@dataclass(frozen=True)
class PackRef:
    """Where a packed clip's FLAC lies: `pack` (the tar, as the key names it: relative to the
    data directory, or absolute once resolved), its bytes' `offset` and `size`, their CRC-32."""

    pack: str
    offset: int
    size: int
    crc32: int

    def key(self) -> str:
        return PACK_KEY_TEMPLATE.format(pack=self.pack, offset=self.offset, size=self.size,
                                        crc32=self.crc32)


def parse_audio_key(key: str | Path) -> PackRef | None:
    """The PackRef of a pack member's key (relative or resolved), None for a per-clip FLAC's."""
    match = _PACK_KEY.match(str(key))
    if match is None:
        return None
    return PackRef(match["pack"], int(match["offset"]), int(match["size"]),
                   int(match["crc32"], 16))


def audio_file_of(key: str | Path) -> Path:
    """The file that holds a clip's audio: the pack of a pack key, else the FLAC itself."""
    ref = parse_audio_key(key)
    return Path(key) if ref is None else Path(ref.pack)


def safe_name(name: str) -> str:
    """Validate a name used as a directory component (manifest names, table names)."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"not a safe name for a directory: {name!r}")
    return name


class DataDirNotWritable(OSError):
    """The data directory cannot be written: said once, before Prefect or MLflow open their
    databases in it (a read-only one gave ~900 lines of "readonly database")."""


@dataclass(frozen=True)
class DataLayout:
    """Paths under one data directory. Nothing here touches the disk except `ensure`."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    # tables -------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / "tables" / safe_name(table)

    def shard_path(self, table: str, manifest: str, index: int) -> Path:
        return self.table_dir(table) / safe_name(manifest) / SHARD_TEMPLATE.format(index=index)

    def table_glob(self, table: str) -> str:
        return str(self.table_dir(table) / "*" / SHARD_GLOB)

    # media ----------------------------------------------------------------------------------
    def audio_path(self, youtube_id: str, key: str) -> Path:
        return self.root / AUDIO_TEMPLATE.format(youtube_id=youtube_id, clip_key=key)

    def pack_path(self, clips_shard: Path, token: str) -> Path:
        """The pack of the audio of one clips shard (`shard_path("clips", ...)`'s result):
        its manifest and file stem, and `token` (from the shard's fingerprint: other inputs
        write another file, so an older clips shard never points into a newer pack)."""
        clips_shard = Path(clips_shard)
        return self.root / PACK_TEMPLATE.format(manifest=safe_name(clips_shard.parent.name),
                                                shard=clips_shard.stem, token=safe_name(token))

    def packs_of(self, clips_shard: Path) -> list[Path]:
        """Every pack written for one clips shard (the current one and any a killed or
        superseded run left), sorted."""
        clips_shard = Path(clips_shard)
        folder = self.root / PACK_DIR / safe_name(clips_shard.parent.name)
        return sorted(folder.glob(f"{clips_shard.stem}-*.tar"))

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    def resolve(self, relative: str) -> Path:
        return self.root / relative

    # services -------------------------------------------------------------------------------
    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        # Absolute SQLite URI: a relative one lands in whatever the current directory is.
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def demo_corpus_dir(self) -> Path:
        return self.root / "demo_corpus"

    def ensure(self) -> DataLayout:
        """Create the directories and check that files can be written in each and that the
        free-space reserve is there; raises DataDirNotWritable naming the directory and the
        reason, or `storage.space.DiskFull` (ENOSPC) naming it and the free space."""
        for d in (self.root / "tables", self.root / "audio", self.mlflow_dir, self.prefect_home,
                  self.locks_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
                check_writable(d)
            except OSError as exc:
                raise DataDirNotWritable(
                    exc.errno, f"the data directory {self.root} is not writable ({d}: "
                    f"{exc.strerror or exc}); s2f keeps its tables and its Prefect and MLflow "
                    "state there: fix its permissions or pass another --data-dir") from exc
        check_free_space(self.root)
        return self


def check_writable(directory: Path) -> None:
    """Create and remove a file in `directory` (os.access ignores read-only mounts and, for
    root, permissions); raises the OSError of the failed write."""
    probe = directory / f".s2f-write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # per caller
    fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.close(fd)
    os.unlink(probe)
