"""Helpers for the browser check: free ports, servers in subprocesses, headless Chromium.

Chromium is Debian's package (`/usr/bin/chromium`); `ensure_chromium()` installs it with apt when
it is missing and we are root (as in CI), and skips only when neither holds.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]


def ensure_chromium() -> Path:
    """The Chromium binary; installed with apt-get if missing and we are root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and this is not root, so it cannot be installed "
                    "(as root: apt-get update && apt-get install -y chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"could not install Chromium for the browser check: `{' '.join(cmd)}` "
                        f"exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get install chromium succeeded but {CHROMIUM} does not exist")
    return CHROMIUM


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without the session's Prefect/MLflow settings (set by conftest), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true",
               MLFLOW_ENABLE_TELEMETRY="false", PREFECT_LOGGING_LEVEL="INFO")
    env.update(extra)
    return env


@contextmanager
def server(cmd: list[str], env: Mapping[str, str], health_url: str, log: Path,
           timeout: float = 180.0) -> Iterator[subprocess.Popen[bytes]]:
    """Start `cmd` in its own process group, wait until `health_url` answers 200, stop it after."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} exited {proc.returncode} before it was healthy:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(health_url, timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{health_url} not healthy after {timeout:.0f} s:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            time.sleep(1.0)
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:  # the process group we created (the server and the workers it spawned)
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _chromium(args: list[str], url: str, timeout: float) -> subprocess.CompletedProcess[str]:
    user_data = tempfile.mkdtemp(prefix="s2f-chromium-")
    try:
        return subprocess.run(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *args, url],
            capture_output=True, text=True, timeout=timeout, check=True)
    finally:
        shutil.rmtree(user_data, ignore_errors=True)


def visible_text(dom: str) -> str:
    """The text a reader sees: scripts and styles dropped, tags removed, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def rendered_text(url: str, ready: Callable[[str], bool], budget_ms: int = 15000,
                  attempts: int = 4, size: str = "1400,1000", timeout: float = 120.0) -> str:
    """The visible text of `url` after its JavaScript ran; retried with a longer virtual-time
    budget until `ready(text)` holds. Returns the last text either way (the caller asserts).
    The window size matters: Prefect's log list renders nothing in the default small window."""
    text = ""
    for i in range(attempts):
        proc = _chromium([f"--virtual-time-budget={budget_ms * (i + 1)}",
                          f"--window-size={size}", "--dump-dom"], url, timeout)
        text = visible_text(proc.stdout)
        if ready(text):
            break
        time.sleep(2.0)
    return text


def screenshot(url: str, out: Path, budget_ms: int = 15000, size: str = "1400,1000",
               timeout: float = 120.0) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    _chromium([f"--virtual-time-budget={budget_ms}", f"--window-size={size}",
               f"--screenshot={out}"], url, timeout)
    return out
