"""A full disk under `s2f ingest` (the CLI, in a child process): the run ends with its summary
and one line naming the path, the errno and the free space, exit 1, never a traceback; the
shards finished before stay, and a re-run after space is freed finishes the rest without
duplicates.

    pytest tests/reliability/test_full_disk.py

Before (issue 24): on a real full disk, the data dir holding Prefect's SQLite database as it
does by default, the run ended with ~900 lines of tracebacks: every failed shard's, the
flow's, the CLI's own (the "N shards failed" RuntimeError was not caught), and the Prefect
server's HTTP 500s ("database or disk is full") once it could not record the run's end.

How the disk is full:
- `test_a_real_full_disk_...`: a real small file system (a tmpfs, 64 MiB) holding the data
  dir, filled by a file written once 2 shards are finished. Mounting needs root (with
  CAP_SYS_ADMIN): skipped otherwise, saying so. Two cases: the free-space reserve
  (`storage.space`, S2F_MIN_FREE_MB=8) is reached, with the child's own ephemeral Prefect
  server's database on that disk (the issue's setting: the database keeps room and records
  the failure); and the reserve off (0) with the disk filled to the last block, where the
  kernel's ENOSPC at the write itself is the reason (Prefect's database off that disk: with
  it there its server would fail too, and print its own tracebacks).
- `test_a_file_size_limit_...`: no root needed. RLIMIT_FSIZE (`ulimit -f`) in the child, with
  SIGXFSZ ignored, so a write past 16 KiB fails with EFBIG ("File too large", errno 27: a size
  limit, not ENOSPC) at the real write path; Prefect's server (the session's) is outside the
  limit.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ingest_helpers import make_good

from storage.io import TEMP_GLOB, shard_paths
from storage.layout import DataLayout
from storage.space import DiskFull, free_bytes, storage_full_message

from .helpers import check_clips, popen, python, subprocess_env

LINES, SHARD_SIZE = 600, 20  # 30 shards of 20 one-and-a-half-second clips (~19 KB of FLAC each)
# RLIMIT_FSIZE: a 2-clip shard's audio pack of two 0.5 s FLACs (~12 KB each; the tar padded to
# 30 KB) and the Parquet shards (2 rows, with clip_fingerprint since issue 26: under 20 KB) fit;
# the pack holding the 1.9 s FLAC (~21 KB) beside a 0.5 s one (~35 KB written before its
# padding) does not.
FILE_LIMIT = 32 * 1024


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs mounted under tmp_path (a real file system that really fills up)."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        said = done.stderr.strip() or f"exit {done.returncode}"
    except FileNotFoundError:
        done, said = None, "no mount command"
    if done is None or done.returncode != 0:
        pytest.skip("a real full disk needs a small tmpfs, and mounting one needs root with "
                    f"CAP_SYS_ADMIN (mount said: {said}); test_a_file_size_limit_... covers "
                    "the same path without root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _manifest(tmp_path: Path, lines: int, long_line: int | None = None) -> tuple[Path, Path]:
    """`lines` clips of one 2 s video, each starting 1 ms later (distinct keys): 1.5 s long, or
    with `long_line`, 0.5 s long except that line's 1.9 s."""
    media = tmp_path / "media"
    make_good(media / "goodmp4____.mp4")
    length = 1.5 if long_line is None else 0.5
    rows = [f"goodmp4____,{i / 1000:.3f},{i / 1000 + length:.3f},0.5,0.5\n" for i in range(lines)]
    if long_line is not None:
        rows[long_line] = "goodmp4____,0.050,1.950,0.5,0.5\n"
    manifest = tmp_path / "disk_train.csv"
    manifest.write_text("".join(rows))
    return manifest, media


def _cli(manifest: Path, media: Path, data_dir: Path, shard_size: int) -> list[str]:
    return python("-m", "flows.cli", "ingest", "--manifest", str(manifest), "--media-root",
                  str(media), "--data-dir", str(data_dir), "--shard-size", str(shard_size))


def _fill(disk: Path, leave: int) -> Path:
    """A file taking all but `leave` bytes of `disk` (to the last block when `leave` is 0)."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        block = b"\0" * (1 << 20)
        while (room := free_bytes(disk) - leave) > 0:
            try:
                fh.write(block[:min(len(block), room)])
                fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                if len(block) == 4096:
                    break
                block = block[:len(block) // 2]
    return filler


def _fill_after_two_shards(proc: subprocess.Popen[bytes], layout: DataLayout, disk: Path,
                           leave: int, log: Path) -> Path:
    deadline = time.monotonic() + 300
    while proc.poll() is None and len(shard_paths(layout, "clips")) < 2:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the disk was filled:\n" + log.read_text()
    return _fill(disk, leave)


def _assert_clean_failure(out: str, reason: str) -> None:
    """Exit 1 was checked by the caller; here: the summary, the reason, no traceback."""
    assert re.search(r"\d+ lines \(0 blank\), \d+ rows, \d+ shards \(0 unchanged, skipped; "
                     r"\d+ failed\)", out), out[-3000:]
    assert re.search(r"s2f ingest: \d+ shards failed \(re-run to retry them\): DiskFull: ", out)
    assert reason in out, out[-3000:]
    assert "Traceback" not in out, out[-6000:]
    assert "500 Internal Server Error" not in out and "database or disk is full" not in out


def _assert_resumed(done: subprocess.CompletedProcess[str], written: int, data_dir: Path,
                    manifest: Path, lines: int) -> None:
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"({written} unchanged, skipped)" in done.stdout
    frame = check_clips(data_dir, {"disk_train": manifest})  # one row per line, no key twice
    assert frame.height == lines and (frame["status"] == "ok").all()


@pytest.mark.slow
@pytest.mark.parametrize(("reserve_mb", "leave", "reason"), [
    pytest.param("8", 4 << 20, "below the 8.0 MiB reserve (S2F_MIN_FREE_MB)", id="reserve"),
    pytest.param("0", 0, "[Errno 28] No space left on device while writing it", id="enospc"),
])
def test_a_real_full_disk_ends_with_the_summary_and_a_resume_finishes(
        request: pytest.FixtureRequest, small_disk: Path, tmp_path: Path, reserve_mb: str,
        leave: int, reason: str) -> None:
    manifest, media = _manifest(tmp_path, LINES)
    data_dir = small_disk / "data"
    env = subprocess_env(S2F_MIN_FREE_MB=reserve_mb)
    if reserve_mb == "0":  # Prefect's database off the disk that is filled to the last block
        from prefect.settings import PREFECT_API_URL

        request.getfixturevalue("prefect_server")
        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    cli = _cli(manifest, media, data_dir, SHARD_SIZE)
    log = tmp_path / "full.log"
    proc = popen(cli, env, log)
    try:
        filler = _fill_after_two_shards(proc, DataLayout(data_dir), small_disk, leave, log)
        assert proc.wait(timeout=300) == 1, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:  # a failed assertion: no child left on the mount
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    layout = DataLayout(data_dir)
    out = log.read_text()
    _assert_clean_failure(out, reason)
    written = shard_paths(layout, "clips")
    assert 2 <= len(written) < LINES // SHARD_SIZE, out[-3000:]
    for path in written:  # finished shards are complete
        assert pq.read_table(path).num_rows == SHARD_SIZE
    assert [p for p in data_dir.rglob(TEMP_GLOB) if "prefect" not in p.parts] == []

    filler.unlink()  # space freed
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=400, check=False)
    _assert_resumed(done, len(written), data_dir, manifest, LINES)


def _limit_file_size() -> None:  # in the child, before exec: what `ulimit -f 16` does
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, resource.RLIM_INFINITY))


@pytest.mark.slow
def test_a_file_size_limit_ends_with_the_summary_and_a_resume_finishes(
        prefect_server: None, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    manifest, media = _manifest(tmp_path, 12, long_line=3)  # shard 1 of 6 holds the 1.9 s clip
    data_dir = tmp_path / "data"
    env = subprocess_env(PREFECT_API_URL=str(PREFECT_API_URL.value()))
    cli = _cli(manifest, media, data_dir, 2)
    failed = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=400,
                            check=False, preexec_fn=_limit_file_size)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 1, out[-3000:]
    _assert_clean_failure(out, "[Errno 27] File too large while writing it")
    assert "1 shards failed" in out and "audio/packs/disk_train/shard-00001-" in out
    written = shard_paths(DataLayout(data_dir), "clips")
    assert [p.name for p in written] == [f"shard-{i:05d}.parquet" for i in (0, 2, 3, 4, 5)]

    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=400,
                          check=False)  # the limit lifted
    _assert_resumed(done, 5, data_dir, manifest, 12)


def test_below_the_reserve_the_cli_refuses_up_front(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Before Prefect or MLflow start: one line, exit 2. A bad setting is said, not ignored."""
    from flows.cli import main

    data = tmp_path / "data"
    monkeypatch.setenv("S2F_MIN_FREE_MB", str(2**40))  # a reserve no disk has: 1 EiB
    with pytest.raises(DiskFull, match=r"only .* free on its file system, below the"):
        DataLayout(data).ensure()
    assert main(["preprocess", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"s2f preprocess: the data directory {data} cannot be used: No space "
                          "left on device: only ")
    assert "reserve (S2F_MIN_FREE_MB) kept for Prefect's and MLflow's databases" in err
    assert len(err.splitlines()) == 1

    monkeypatch.setenv("S2F_MIN_FREE_MB", "lots")
    assert main(["preprocess", "--data-dir", str(data)]) == 2
    assert "S2F_MIN_FREE_MB must be a number of MiB >= 0" in capsys.readouterr().err
    monkeypatch.setenv("S2F_MIN_FREE_MB", "0")  # off: nothing refused
    DataLayout(data).ensure()


def test_only_a_storage_error_loses_its_traceback(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`storage_full_message` (the CLI's last resort): a storage error's chain gives one line;
    an HTTP 500 of the embedded Prefect server is called a full disk only when its
    database's file system is (next to) full; anything else is None (its traceback stays)."""
    import httpx

    import storage.space as space

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/d/x.flac")
        except OSError as inner:
            raise RuntimeError("writing the shard failed") from inner
    except RuntimeError as exc:
        line = storage_full_message(exc, tmp_path)
    assert line is not None and line.startswith("[Errno 28] No space left on device: '/d/x.flac'")

    database = tmp_path / "prefect" / "prefect.db"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{database}")
    request = httpx.Request("POST", "http://127.0.0.1:1/api/artifacts/")
    error = httpx.HTTPStatusError("500", request=request,
                                  response=httpx.Response(500, request=request))
    assert storage_full_message(error, tmp_path) is None  # this disk has room: not ours to say
    monkeypatch.setattr(space, "free_bytes", lambda path: 4096)
    line = storage_full_message(error, tmp_path)
    assert line is not None and line.startswith(f"Prefect's database {database} could not be "
                                                "written: its server answered HTTP 500 with "
                                                "4.0 KiB free")
    assert storage_full_message(ValueError("a bug"), tmp_path) is None
