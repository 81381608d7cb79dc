"""Safety: yt-dlp only ever gets a validated 11-character id substituted into the URL template
(never a URL or an option from a manifest); the embedded Prefect/MLflow defaults listen on
nothing beyond 127.0.0.1; every `torch.load` in the project refuses pickled code.

    pytest tests/reliability/test_safety.py
"""

from __future__ import annotations

import ast
import functools
import http.server
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yt_dlp

from s2f.ingest.download import DownloadFailed, download_video

from .helpers import REPO, check_clips, python, subprocess_env

HOSTILE_IDS = ["--exec=rm", "http://x", "a;b$(c)", "-o/tmp/pwn", "$(id)", "`id`",
               "abc\ndefghij", "abcdefghij ", "../../../..", "abcdefghijkl", "", "%(title)s__"]
# Valid in form (11 of [A-Za-z0-9_-]) yet option-like: must still only ever become a URL.
OPTION_LIKE_IDS = ["--exec-befo", "-----------", "--batch-fil", "-o_________"]
OPTION_KEYS = {"outtmpl", "format", "noplaylist", "quiet", "no_warnings", "noprogress",
               "retries", "fragment_retries", "socket_timeout", "overwrites", "logger",
               "max_filesize", "progress_hooks"}


class _Spy(yt_dlp.YoutubeDL):
    """The real YoutubeDL, recording what it is given."""

    calls: list[dict[str, Any]] = []

    def __init__(self, params: dict[str, Any] | None = None, *args: Any, **kw: Any) -> None:
        _Spy.calls.append({"params": dict(params or {}), "urls": []})
        super().__init__(params, *args, **kw)

    def extract_info(self, url: str, *args: Any, **kw: Any) -> Any:
        _Spy.calls[-1]["urls"].append(url)
        return super().extract_info(url, *args, **kw)


class _NotFound(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _NotFound.paths.append(self.path)
        self.send_error(404)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Spy on yt-dlp; a loopback server that answers 404 (nothing leaves the machine)."""
    _Spy.calls, _NotFound.paths = [], []
    monkeypatch.setattr(yt_dlp, "YoutubeDL", _Spy)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v/{{id}}.mp4"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("bad_id", HOSTILE_IDS)
def test_invalid_ids_never_reach_yt_dlp(spy: str, tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(DownloadFailed, match="invalid YouTube id"):
        download_video(bad_id, tmp_path / "media", spy)
    assert _Spy.calls == [] and _NotFound.paths == []
    assert not (tmp_path / "media").exists() or list((tmp_path / "media").iterdir()) == []


@pytest.mark.parametrize("odd_id", OPTION_LIKE_IDS)
def test_option_like_ids_only_become_a_templated_url(spy: str, tmp_path: Path,
                                                     odd_id: str) -> None:
    media = tmp_path / "media"
    with pytest.raises(DownloadFailed, match="404"):
        download_video(odd_id, media, spy)
    [call] = _Spy.calls
    assert call["urls"] == [spy.replace("{id}", odd_id)]
    # The options are the fixed set the code chooses: nothing from the id turned into an
    # option (no exec, batch file, post-processor, output elsewhere).
    assert set(call["params"]) == OPTION_KEYS
    assert call["params"]["outtmpl"] == str(media.resolve() / f"{odd_id}.%(ext)s")
    assert _NotFound.paths == [f"/v/{odd_id}.mp4"]
    assert list(media.iterdir()) == []


class _Big(http.server.BaseHTTPRequestHandler):
    """300 kB of bytes for any path; with a Content-Length (`/len/`) or streamed without one."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        if self.path.startswith("/len/"):
            self.send_header("Content-Length", str(300_000))
        self.end_headers()
        try:
            for _ in range(30):
                self.wfile.write(b"\0" * 10_000)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped, as it should

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.mark.parametrize("kind", ["len", "stream"])
def test_a_download_past_the_size_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   kind: str) -> None:
    """Before: yt-dlp had no `max_filesize`; any size was fetched. Now a Content-Length over
    the limit is refused before the body, and a stream without one is stopped past it."""
    import s2f.ingest.download as download

    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 50_000)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    media = tmp_path / "media"
    try:
        template = f"http://127.0.0.1:{server.server_address[1]}/{kind}/{{id}}.mp4"
        with pytest.raises(DownloadFailed) as failed:
            download_video("bigvideo___", media, template)
    finally:
        server.shutdown()
        server.server_close()
    reason = str(failed.value)
    assert "MAX_DOWNLOAD_BYTES" in reason
    assert ("300000 bytes > 50000 bytes" if kind == "len" else "more than the 50000") in reason
    assert list(media.iterdir()) == []  # no media, no .part left behind


def test_manifest_ids_go_through_validation_in_the_flow(prefect_server: None, spy: str,
                                                        tmp_path: Path) -> None:
    from flows.ingest import IngestParams, ingest_flow

    manifest = tmp_path / "unsafe_train.csv"
    hostile = ['"--exec=rm -rf ~",0,1,0.5,0.5', "http://x.y/a,0,1,0.5,0.5",
               "a;b$(c),0,1,0.5,0.5", '"-o/tmp/pwn",0,1,0.5,0.5', "--exec-befo,0,1,0.5,0.5"]
    manifest.write_text("\n".join(hostile) + "\n")
    summary = ingest_flow(IngestParams(
        manifests=[manifest], media_root=tmp_path / "media", data_dir=tmp_path / "data",
        download=True, url_template=spy, download_retries=0))
    assert summary.counts == {"invalid_row": 4, "download_failed": 1}
    frame = check_clips(tmp_path / "data", {"unsafe_train": manifest})
    assert frame.filter(pl.col("status") == "download_failed")["youtube_id"].to_list() == [
        "--exec-befo"]
    # yt-dlp was created once, for the one well-formed id, and fetched only its templated URL.
    assert [c["urls"] for c in _Spy.calls] == [[spy.replace("{id}", "--exec-befo")]]
    assert _NotFound.paths == ["/v/--exec-befo.mp4"]


def test_configure_keeps_services_on_loopback(tmp_path: Path) -> None:
    """In a fresh interpreter (Prefect reads its settings at import): after configure(), the
    Prefect API is the embedded one (no remote URL), any `prefect server start` would bind
    127.0.0.1, and MLflow is a local SQLite file, not a server."""
    code = """
import json, os, sys
from flows.runtime import configure
layout = configure(sys.argv[1])
from prefect.settings import get_current_settings
s = get_current_settings()
print(json.dumps({"api_url": s.api.url, "host": s.server.api.host,
                  "ephemeral": s.server.ephemeral.enabled,
                  "mlflow": os.environ["MLFLOW_TRACKING_URI"], "root": str(layout.root)}))
"""
    env = subprocess_env()
    for key in ("PREFECT_SERVER_API_HOST", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(key, None)
    out = subprocess.run(python("-c", code, str(tmp_path / "data")), env=env, cwd=tmp_path,
                         capture_output=True, timeout=120, check=True)
    got = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert got["api_url"] is None and got["ephemeral"] is True
    assert got["host"] == "127.0.0.1"
    assert got["mlflow"] == f"sqlite:///{got['root']}/mlflow/mlflow.db"
    # The ephemeral server itself binds 127.0.0.1: checked on a live one (its sockets) in
    # test_crash_resume.py::test_full_flow_killed_then_resumed.


def _project_files() -> list[Path]:
    files = [p for d in ("s2f", "flows", "storage", "scripts", "benchmarks")
             for p in (REPO / d).rglob("*") if p.is_file() and p.suffix in (".py", ".sh", ".yaml")]
    return files + [p for p in (REPO / "Makefile",) if p.exists()]


def test_no_project_code_binds_beyond_loopback() -> None:
    """Any server the project starts must pass 127.0.0.1; nothing binds 0.0.0.0 or ::."""
    offenders = []
    for path in _project_files():
        text = path.read_text(errors="replace")
        for match in re.finditer(r"0\.0\.0\.0|\"::\"|--host[ =]+(\S+)|host\s*=\s*[\"']([^\"']+)",
                                 text):
            value = match.group(1) or match.group(2)
            if value is None or value.strip("\"'") not in ("127.0.0.1", "localhost"):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
    assert offenders == []


def _torch_load_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in _project_files():
        if path.suffix != ".py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", node))
    return calls


def test_every_torch_load_refuses_pickled_code() -> None:
    """A foreign checkpoint is a pickle: `torch.load` without weights_only=True runs whatever
    code it names. Every call in the project must pass weights_only=True."""
    calls = _torch_load_calls()
    assert calls, "found no torch.load at all: the scan is looking in the wrong place"
    unsafe = [where for where, node in calls
              if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                         and k.value.value is True for k in node.keywords)]
    assert unsafe == [], f"torch.load without weights_only=True: {unsafe}"


def test_weights_only_load_refuses_a_malicious_checkpoint(tmp_path: Path) -> None:
    """What the flag buys, on the installed torch: a checkpoint whose unpickling would run a
    command is refused instead of run."""
    import torch

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (functools.partial(marker.write_text, "pwned"), ())

    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "evil": Evil()}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real (and harmless here)
    assert marker.read_text() == "pwned"
