"""Transient faults: downloads that fail a few times then succeed (retried with backoff) or
always fail (recorded with the reason), and a disk that fills up mid-run (reported, earlier
shards intact, a re-run after freeing space finishes only what is missing).

    pytest tests/reliability/test_transient_faults.py
"""

from __future__ import annotations

import errno
import functools
import http.server
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from ingest_helpers import make_good

from storage.io import TEMP_GLOB, shard_paths
from storage.layout import DataLayout

from .helpers import check_clips

FIRST_DELAY_S = 0.2


class _Flaky(http.server.SimpleHTTPRequestHandler):
    """Serves files, but answers 503 to the first `fail_first[id]` requests for an id."""

    fail_first: dict[str, int] = {}
    seen: dict[str, list[tuple[float, int]]] = defaultdict(list)
    guard = threading.Lock()

    def _flaky(self) -> bool:
        vid = Path(self.path).stem
        with _Flaky.guard:
            n = len(_Flaky.seen[vid])
            failing = n < _Flaky.fail_first.get(vid, 0)
            _Flaky.seen[vid].append((time.monotonic(), 503 if failing else 200))
        if failing:
            self.send_error(503, "try again later")
        return failing

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._flaky():
            super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        if not self._flaky():
            super().do_HEAD()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def flaky_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    make_good(served / "flakytwice_.mp4")
    make_good(served / "flakyonce__.mp4")
    _Flaky.fail_first = {"flakytwice_": 2, "flakyonce__": 1, "alwaysdown_": 10**6}
    _Flaky.seen = defaultdict(list)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Flaky, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{{id}}.mp4", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_download_retried_with_backoff_then_recorded(prefect_server: None,
                                                      flaky_server: tuple[str, Path]) -> None:
    from flows.ingest import IngestParams, ingest_flow

    template, tmp_path = flaky_server
    manifest = tmp_path / "dl_train.csv"
    manifest.write_text("flakytwice_,0.5,1.5,0.5,0.5\nflakyonce__,0,1,0.5,0.5\n"
                        "alwaysdown_,0,1,0.5,0.5\nalwaysdown_,1,2,0.5,0.5\n")
    data_dir = tmp_path / "data"
    params = IngestParams(manifests=[manifest], media_root=tmp_path / "dl", data_dir=data_dir,
                          download=True, url_template=template, download_retries=2,
                          download_retry_delay_s=FIRST_DELAY_S, shard_size=2)
    summary = ingest_flow(params)
    assert summary.counts == {"ok": 2, "download_failed": 2}
    frame = check_clips(data_dir, {"dl_train": manifest})
    failed = frame.filter(pl.col("status") == "download_failed")
    assert all("503" in e and "alwaysdown_" in e for e in failed["error"])

    seen = _Flaky.seen
    # Two failures, then the probe and the download; one failure, then probe and download.
    assert [code for _, code in seen["flakytwice_"]] == [503, 503, 200, 200]
    assert [code for _, code in seen["flakyonce__"]] == [503, 200, 200]
    # Always down: one attempt plus two retries, once for both of its clips (one open per
    # video), and the waits between attempts grow: FIRST_DELAY_S, then twice that.
    attempts = [t for t, _ in seen["alwaysdown_"]]
    assert len(attempts) == 3
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= FIRST_DELAY_S * 0.95 and gaps[1] >= 2 * FIRST_DELAY_S * 0.95, gaps
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [
        "flakyonce__.mp4", "flakytwice_.mp4"]  # no .part or failed leftovers


class _FullDisk:
    """os.fsync that fails with ENOSPC for temp files of one kind once `after` of them were
    synced: the point where a real full disk reports it (delayed allocation), and the writers'
    own clean-up paths run as they would."""

    def __init__(self, kind: str, after: int) -> None:
        self.kind, self.after, self.synced, self.refused = kind, after, 0, 0
        self.real = os.fsync
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if f".{self.kind}.tmp-" in name:
            with self.lock:
                full = self.synced >= self.after
                self.synced += not full
                self.refused += full
            if full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        self.real(fd)


@pytest.mark.parametrize(("kind", "after"), [("tar", 3), ("parquet", 2)])  # tar: audio packs
def test_full_disk_fails_clearly_and_keeps_earlier_shards(
        prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
        after: int) -> None:
    from flows.ingest import IngestParams, ingest_flow

    media = tmp_path / "media"
    make_good(media / "goodmp4____.mp4")
    manifest = tmp_path / "disk_train.csv"
    manifest.write_text("".join(f"goodmp4____,{i / 10:.1f},{i / 10 + 0.5:.1f},0.5,0.5\n"
                                for i in range(14)) + "bad line\n")
    data_dir = tmp_path / "data"
    params = IngestParams(manifests=[manifest], media_root=media, data_dir=data_dir,
                          shard_size=3)
    disk = _FullDisk(kind, after)
    monkeypatch.setattr(os, "fsync", disk)
    with pytest.raises(RuntimeError, match="shards failed") as failed:
        ingest_flow(params)
    assert "No space left on device" in str(failed.value)
    assert disk.refused >= 1
    layout = DataLayout(data_dir)
    written = shard_paths(layout, "clips")
    assert 0 < len(written) < 5  # some shards finished before the disk filled, not all
    for path in written:  # intact and complete: readable, one row per line of its range
        table = pq.read_table(path)
        assert table.num_rows == 3 or path.name == "shard-00004.parquet"
    assert [p for p in data_dir.rglob(TEMP_GLOB) if "prefect" not in p.parts] == []

    monkeypatch.setattr(os, "fsync", disk.real)  # space freed
    summary = ingest_flow(params)
    assert summary.shards_skipped == len(written) and summary.failed_shards == []
    frame = check_clips(data_dir, {"disk_train": manifest})
    assert frame.height == 15 and (frame["status"] == "ok").sum() == 14
