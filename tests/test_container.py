"""The deployment recipe beyond one host: `Dockerfile` and `prefect.docker.yaml` (a Docker work
pool, a GPU request for training). What can be checked without a Docker daemon: the file is
Prefect's prefect.yaml model, every parameter validates against its flow's model, the GPU
request is a docker `DeviceRequest`, training goes to the GPU queue and the rest does not, the
image's WORKDIR is the pull step's directory, and torch's version is pyproject's pin only.

    pytest -x -q tests/test_container.py     # a few seconds (imports the flows)
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {"S2F_IMAGE": "registry/speech2face:cpu", "S2F_IMAGE_CUDA": "registry/speech2face:cu128",
       "S2F_DATA_HOST_DIR": "/mnt/s2f-data", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
       "PREFECT_API_URL": "http://prefect:4200/api", "S2F_DASK_ADDRESS": "tcp://dask:8786"}


def _resolved(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The deployments with `{{ $VAR }}` filled from the environment, as `prefect deploy` does."""
    from prefect.utilities.templating import apply_values

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    raw = yaml.safe_load((REPO / "prefect.docker.yaml").read_text())
    return [apply_values(d, os.environ, remove_notset=False) for d in raw["deployments"]]


def test_docker_deployments_parse_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    from docker.types import DeviceRequest
    from prefect.cli.deploy._models import PrefectYamlModel

    raw = yaml.safe_load((REPO / "prefect.docker.yaml").read_text())
    PrefectYamlModel.model_validate(raw)
    workdir = re.search(r"^WORKDIR (\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert workdir and raw["pull"] == [{"prefect.deployments.steps.set_working_directory": {
        "directory": workdir.group(1)}}]
    for d in _resolved(monkeypatch):
        assert "{{" not in repr(d), d["name"]
        module, name = d["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        # Validated as the flow will (the paths are the container's: /data is not here, so
        # the stages' own existence checks are not run).
        params = flow.validate_parameters(d["parameters"])["params"]
        pool = d["work_pool"]
        jobs = pool["job_variables"]
        assert pool["name"] == "speech2face-docker" and jobs["volumes"] == ["/mnt/s2f-data:/data"]
        assert jobs["env"]["S2F_DATA_DIR"] == "/data" == str(params.data_dir)
        trains = "train" in (getattr(params, "stages", None) or ["train"])
        requests = (jobs.get("container_create_kwargs") or {}).get("device_requests")
        if trains:  # training: the GPU queue, the CUDA image, every GPU of the host
            assert pool["work_queue_name"] == "gpu" and jobs["image"].endswith("cu128")
            (gpu,) = (DeviceRequest(driver=r["Driver"], count=r["Count"],
                                    capabilities=r["Capabilities"]) for r in requests)
            assert (gpu.driver, gpu.count, gpu.capabilities) == ("nvidia", -1, [["gpu"]])
            assert params.device == "cuda" if hasattr(params, "device") else True
        else:
            assert pool["work_queue_name"] == "cpu" and requests is None
            assert jobs["env"]["S2F_DASK_ADDRESS"] == "tcp://dask:8786"


def test_dockerfile_pins_come_from_pyproject() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    python = re.search(r'requires-python = ">=(\d+\.\d+)"', pyproject)
    assert python and f"ARG PYTHON_VERSION={python.group(1)}" in dockerfile
    # torch's version is written once (pyproject); the image only picks the wheel index.
    instructions = "\n".join(line for line in dockerfile.splitlines()
                             if not line.lstrip().startswith("#"))
    assert re.search(r'"torch==\d', pyproject) and not re.search(r"torch[=<>~ ]", instructions)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "s2f-data"} <= set(ignored)
