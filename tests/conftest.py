"""Shared fixtures. Prefect's environment is set here, before any test imports prefect.

One Prefect test server for the whole session (starting one per test is slow on 2 cores:
prefect #15075); each test gets its own data directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="s2f-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow' / 'mlflow.db'}"

SHARED_FACES = Path(__file__).resolve().parents[1] / "s2f" / "assets" / "faces"

# What a GPU machine may lack: with `-m gpu`, a test module that cannot import one of these is
# reported as skipped with the reason, so the GPU tests of the other modules still run there.
OPTIONAL_STACK = ("prefect", "mlflow", "dlib", "nvidia", "sqlalchemy", "cv2", "fastapi", "yt_dlp")


class _GpuModule(pytest.Module):
    def _getobj(self):  # type: ignore[no-untyped-def]
        try:
            return super()._getobj()
        except self.CollectError as exc:
            cause = exc.__cause__
            name = getattr(cause, "name", None) or ""
            if isinstance(cause, ModuleNotFoundError) and name.split(".")[0] in OPTIONAL_STACK:
                pytest.skip(f"needs {name}, not installed here", allow_module_level=True)
            raise


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if "gpu" in (parent.config.option.markexpr or ""):
        return _GpuModule.from_parent(parent, path=module_path)
    return None


@pytest.fixture(scope="session")
def prefect_server():
    """A Prefect API for the whole test session; request it in tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return SHARED_FACES
