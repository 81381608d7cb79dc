"""The one runner of the scale benchmarks: a step in a fresh child process, so that the peak
resident memory (getrusage's high-water mark) is that step's own.

    from benchmarks.child import run_child, child_result, peak_rss_mb
    result = run_child("benchmarks.scale", ["status", "/tmp/x"])   # -> its RESULT, or {"error"}
    # in the child (`python -m MODULE --child ...`):
    child_result(result | {"rss_mb": peak_rss_mb()})

`benchmarks.scale`, `benchmarks.face_stream` and `benchmarks.evaluation_scale` run their steps
through it.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

PREFIX = "RESULT "


def status_mb(field: str) -> float:
    """One memory field of /proc/self/status (VmRSS, VmHWM, ...), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB: the kernel's VmHWM of its own address
    space. Not getrusage's ru_maxrss: Linux carries the forked parent's high-water mark across
    exec into it, so a child of a parent holding 400 MB reported at least 400 MB."""
    try:
        return round(status_mb("VmHWM"), 1)
    except (OSError, RuntimeError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_result(result: Any) -> int:
    """Print the child's result as the line `run_child` reads."""
    print(PREFIX + json.dumps(result), flush=True)
    return 0


def run_child(module: str, args: list[str], timeout_s: float | None = None) -> Any:
    """`python -m MODULE --child ARGS...` from the repository root: its RESULT, or
    {"error": the last lines of its output} when it printed none."""
    try:
        proc = subprocess.run([sys.executable, "-m", module, "--child", *args],
                              capture_output=True, text=True, cwd=Path(__file__).parents[1],
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout_s:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX):])
    return {"error": " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[:300]}
