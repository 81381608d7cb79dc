"""A real browser check: a real `prefect server start` and `mlflow server` on loopback, the
`speech2face-pipeline` flow (train-decoder → train → evaluate → promote) run against them by
`s2f pipeline` in a subprocess, then headless Chromium renders the Prefect flow-run page and the
MLflow registered-model pages; the assertions are on the rendered text.

    pytest -m browser tests/test_browser.py    # ~2-4 min on 2 busy cores
    S2F_SCREENSHOT_DIR=/tmp/s2f-screens pytest tests/test_browser.py   # keep the PNGs

Chromium: Debian's package at /usr/bin/chromium, installed with apt-get when missing (as root).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageStat

from s2f.names import CHAMPION, VOICE_ENCODER_NAME
from tests.browser_helpers import (
    clean_env,
    ensure_chromium,
    free_port,
    rendered_text,
    screenshot,
    server,
)

BIN = Path(sys.executable).parent
# Voice-encoder steps: 2 steps give a collapsed model (diversity ~0.002) that the gate refuses;
# 30 clear the 0.2 floor on this seeded corpus (diversity ~0.17 at 20, ~1.0 at 40).
TRAIN_STEPS = 30


def _screens_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("S2F_SCREENSHOT_DIR") or tmp_path / "screens")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _assert_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1400, 1000), (path, im.format, im.size)
        lo_hi = ImageStat.Stat(im.convert("L")).extrema[0]
    assert lo_hi[1] - lo_hi[0] > 100, f"{path} is nearly uniform (blank page?): {lo_hi}"


@pytest.mark.browser
@pytest.mark.slow
def test_prefect_and_mlflow_uis_show_the_pipeline_run_and_the_champion(tmp_path: Path) -> None:
    ensure_chromium()
    from s2f.train.synthetic import SyntheticCorpus, build
    from storage.layout import DataLayout

    screens = _screens_dir(tmp_path)
    layout = DataLayout(tmp_path / "data").ensure()
    build(layout, SyntheticCorpus(identities=12, clips_per_identity=2, test_identities=4, dim=8,
                                  seconds=1.5, shard_size=8))

    pport, mport = free_port(), free_port()
    prefect_api = f"http://127.0.0.1:{pport}/api"
    mlflow_url = f"http://127.0.0.1:{mport}"
    prefect_home = tmp_path / "prefect-server"
    prefect_home.mkdir()
    prefect_env = clean_env(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
        PREFECT_UI_API_URL=prefect_api,  # else the UI calls 127.0.0.1:4200
    )
    mlflow_dir = tmp_path / "mlflow-server"
    (mlflow_dir / "artifacts").mkdir(parents=True)
    mlflow_cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mport),
                  "--workers", "1", "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                  "--artifacts-destination", str(mlflow_dir / "artifacts")]

    with server([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                 "--port", str(pport)], prefect_env, f"{prefect_api}/health",
                tmp_path / "prefect-server.log"), \
         server(mlflow_cmd, clean_env(), f"{mlflow_url}/health", tmp_path / "mlflow-server.log"):
        # The pipeline, as a user runs it against servers: `s2f pipeline` in its own process.
        client_home = tmp_path / "prefect-client"
        proc = subprocess.run(
            [str(BIN / "s2f"), "pipeline", "--data-dir", str(layout.root),
             "--stages", "train-decoder", "train", "evaluate", "promote",
             "--decoder-steps", "2", "--train-steps", str(TRAIN_STEPS), "--bootstrap", "10"],
            env=clean_env(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=mlflow_url,
                          PREFECT_HOME=str(client_home)),
            capture_output=True, text=True, timeout=600)
        (tmp_path / "pipeline.log").write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert "promotion: promoted" in proc.stdout + proc.stderr, (
            "the gate did not promote the trained encoder:\n" + (proc.stdout + proc.stderr)[-3000:])

        # The parent flow run, from the Prefect API.
        runs = httpx.post(f"{prefect_api}/flow_runs/filter", timeout=30, json={
            "flows": {"name": {"any_": ["speech2face-pipeline"]}}}).raise_for_status().json()
        assert len(runs) == 1, [r["name"] for r in runs]
        run = runs[0]
        assert run["state_type"] == "COMPLETED"
        assert run["name"].startswith("train-decoder..promote/face_features-"), run["name"]

        # The champion, from the MLflow API: the version the pipeline's promote stage aliased.
        alias = httpx.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias", timeout=30,
                          params={"name": VOICE_ENCODER_NAME, "alias": CHAMPION})
        assert alias.status_code == 200, alias.text
        version = alias.json()["model_version"]
        assert version["version"] == "1" and "Intended use" in version["description"]

        # Prefect UI: the flow-run page shows the run's name and its state.
        run_url = f"http://127.0.0.1:{pport}/runs/flow-run/{run['id']}"
        text = rendered_text(run_url, lambda t: run["name"] in t and "Completed" in t
                             and "stage train: starting" in t)
        assert "Can't connect to Server API" not in text, text[:2000]
        assert run["name"] in text, text[:2000]
        assert "Completed" in text and "speech2face-pipeline" in text, text[:2000]
        # The run graph is a canvas (no DOM text); the Logs tab is text: the run's own log lines.
        assert f"Beginning flow run '{run['name']}'" in text, text[-3000:]
        assert "stage train: starting" in text and "stage promote: done" in text, text[-3000:]
        _assert_png(screenshot(run_url, screens / "prefect-flow-run.png"))

        # MLflow UI: the registered model lists version 1 under the alias champion ...
        model_url = f"{mlflow_url}/#/models/{VOICE_ENCODER_NAME}"
        text = rendered_text(model_url, lambda t: "Version 1" in t and CHAMPION in t)
        assert f"Registered Models {VOICE_ENCODER_NAME}" in text, text[:2000]
        assert "Version 1" in text and f"@ {CHAMPION}" in text, text[:3000]
        assert "promotion_decision : promoted" in text, text[:3000]
        _assert_png(screenshot(model_url, screens / "mlflow-registered-model.png"))

        # ... and the version page shows the alias and the model card (its description).
        version_url = f"{model_url}/versions/1"
        text = rendered_text(version_url, lambda t: "Intended use" in t and CHAMPION in t)
        assert CHAMPION in text, text[:3000]
        assert f"Model card: {VOICE_ENCODER_NAME}" in text, text[:3000]
        assert "Intended use" in text and "Out of scope" in text, text[:4000]
        _assert_png(screenshot(version_url, screens / "mlflow-model-version.png"))
