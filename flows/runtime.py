"""Embedded defaults for Prefect and MLflow, derived from the data directory.

Prefect reads its settings when it is first imported, so `configure()` must run before any
`import prefect`. Whatever the user already set (PREFECT_API_URL for a real server,
MLFLOW_TRACKING_URI for a tracking server) is respected; otherwise everything lives in SQLite
files under the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.layout import DataLayout

DEFAULT_DATA_DIR = Path("s2f-data")


def configure(data_dir: Path | str | None = None) -> DataLayout:
    layout = DataLayout(Path(data_dir or os.environ.get("S2F_DATA_DIR") or DEFAULT_DATA_DIR)).ensure()
    os.environ["S2F_DATA_DIR"] = str(layout.root)
    os.environ.setdefault("PREFECT_HOME", str(layout.prefect_home))
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault(
            "PREFECT_SERVER_DATABASE_CONNECTION_URL",
            f"sqlite+aiosqlite:///{layout.prefect_home / 'prefect.db'}",
        )
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
        # The 20 s default is too short for a cold start on 2 busy cores.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # The library's loggers (s2f.progress: progress lines without a terminal) reach the run log.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "s2f")
    # ... and outside a flow run (the demo corpus, predict) they print without a warning.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # No telemetry: nothing leaves the machine at run time.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("MLFLOW_TRACKING_URI", layout.mlflow_tracking_uri)
    return layout
