"""`prefect.yaml`: every key is one Prefect reads (a misspelled key is silently ignored),
schedules parse, parameters validate against each flow's pydantic model, and
`prefect --no-prompt deploy --all` against a real server creates the deployments with their
schedules, parameters, work pool and pull step.

    pytest tests/test_deployments.py     # ~1 min (the deploy imports every entrypoint)
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"
POOL = "speech2face-process"
TOP_LEVEL_KEYS = {"name", "prefect-version", "build", "push", "pull", "deployments",
                  "definitions"}


def _raw() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def _resolved(env: dict[str, str]) -> list[dict[str, Any]]:
    """The deployments with `{{ $VAR }}` filled from `env`, as `prefect deploy` does."""
    from prefect.utilities.templating import apply_values

    old = dict(os.environ)
    os.environ.update(env)
    try:
        return [apply_values(d, os.environ, remove_notset=False) for d in _raw()["deployments"]]
    finally:
        os.environ.clear()
        os.environ.update(old)


def _flow(entrypoint: str):
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def test_every_key_is_read_by_prefect_and_schedules_parse() -> None:
    from prefect.cli.deploy._models import (
        DeploymentConfig,
        PrefectYamlModel,
        RawScheduleConfig,
        WorkPoolConfig,
    )
    from prefect.client.schemas.schedules import CronSchedule

    raw = _raw()
    assert set(raw) <= TOP_LEVEL_KEYS, set(raw) - TOP_LEVEL_KEYS
    model = PrefectYamlModel.model_validate(raw)
    assert len(model.deployments) == len(raw["deployments"]) >= 9

    deployment_fields = set(DeploymentConfig.model_fields)
    pool_fields = set(WorkPoolConfig.model_fields)
    names: set[tuple[str, str]] = set()
    for deployment in raw["deployments"]:
        assert set(deployment) <= deployment_fields, set(deployment) - deployment_fields
        assert set(deployment["work_pool"]) <= pool_fields
        assert deployment["work_pool"]["name"] == POOL
        assert set(deployment["parameters"]) == {"params"}  # every flow takes one model
        key = (deployment["entrypoint"], deployment["name"])
        assert key not in names
        names.add(key)
        for schedule in deployment.get("schedules") or []:
            RawScheduleConfig.model_validate(schedule)  # extra="forbid": no stray keys
            cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
            assert cron.timezone == "UTC"

    # The pull step is explicit: work from this checkout, wherever S2F_REPO says it is.
    assert raw["pull"] == [{"prefect.deployments.steps.set_working_directory": {
        "directory": "{{ $S2F_REPO }}"}}]
    by_name = {d["name"]: d for d in raw["deployments"]}
    nightly = by_name["nightly-ingest-preprocess"]
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    assert nightly["parameters"]["params"]["stages"] == ["ingest", "preprocess"]
    weekly = by_name["weekly-train-evaluate-promote"]
    assert weekly["schedules"][0]["cron"] == "0 4 * * 0"
    assert weekly["parameters"]["params"]["stages"] == ["train-decoder", "train", "evaluate",
                                                        "promote"]
    assert {d["entrypoint"] for d in raw["deployments"]} >= {
        "flows/pipeline.py:pipeline_flow", "flows/ingest.py:ingest_flow",
        "flows/preprocess.py:preprocess_flow", "flows/train.py:train_decoder_flow",
        "flows/train.py:train_flow", "flows/evaluate.py:evaluate_flow",
        "flows/promote.py:promote_flow"}


def test_parameters_validate_against_each_flows_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "manifests").mkdir(parents=True)
    (data / "media").mkdir()
    for name in ("avspeech_train", "avspeech_test"):
        (data / "manifests" / f"{name}.csv").write_text("abcdefghijk,0,1,0.5,0.5\n")
    deployments = _resolved({"S2F_DATA_DIR": str(data), "S2F_REPO": str(REPO)})
    for deployment in deployments:
        text = repr(deployment["parameters"]) + repr(deployment["work_pool"])
        assert "{{" not in text, f"unresolved placeholder in {deployment['name']}: {text}"
        flow = _flow(deployment["entrypoint"])
        validated = flow.validate_parameters(deployment["parameters"])["params"]
        # Every key we wrote arrived in the model (extra="forbid" refuses the rest).
        assert set(deployment["parameters"]["params"]) <= set(type(validated).model_fields)
        assert Path(validated.data_dir) == data
        if hasattr(validated, "stage_params"):  # the pipeline: every stage's params build
            validated.stage_params()
    # A typo in a parameter name is refused, not ignored.
    from prefect.exceptions import ParameterTypeError

    from flows.pipeline import pipeline_flow

    with pytest.raises(ParameterTypeError):
        pipeline_flow.validate_parameters({"params": {"data_dir": str(data), "stage": []}})


def test_deploy_all_creates_scheduled_deployments(prefect_server: None, tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    assert api_url
    data = tmp_path / "data"
    data.mkdir()
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    before = PREFECT_YAML.read_bytes()
    env = {**os.environ, "PREFECT_API_URL": api_url, "S2F_REPO": str(REPO),
           "S2F_DATA_DIR": str(data)}
    proc = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert PREFECT_YAML.read_bytes() == before  # deploy did not rewrite our file

    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name(
            "speech2face-pipeline/nightly-ingest-preprocess")
        assert nightly.work_pool_name == POOL
        assert nightly.parameters["params"]["data_dir"] == str(data)
        assert nightly.parameters["params"]["stages"] == ["ingest", "preprocess"]
        assert nightly.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
            "directory": str(REPO)}}]
        assert nightly.job_variables["env"]["MLFLOW_TRACKING_URI"] == (
            f"sqlite:///{data}/mlflow/mlflow.db")
        schedules = client.read_deployment_schedules(nightly.id)
        assert len(schedules) == 1 and schedules[0].active
        cron = schedules[0].schedule
        assert (cron.cron, cron.timezone) == ("0 2 * * *", "UTC")
        # Its next run, as the server's scheduler computes it: 02:00 UTC within a day.
        from prefect.server.schemas.schedules import CronSchedule as ServerCron

        now = datetime.now(UTC)
        nxt = asyncio.run(ServerCron(cron=cron.cron, timezone=cron.timezone).get_dates(
            n=1, start=now))[0]
        assert (nxt.hour, nxt.minute) == (2, 0) and 0 < (nxt - now).total_seconds() <= 86_400
        weekly = client.read_deployment_by_name(
            "speech2face-pipeline/weekly-train-evaluate-promote")
        (schedule,) = client.read_deployment_schedules(weekly.id)
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 4 * * 0", "UTC")
        for name in ("speech2face-pipeline/on-demand", "ingest/on-demand",
                     "preprocess/on-demand", "train-decoder/on-demand", "train/on-demand",
                     "evaluate/on-demand", "promote/on-demand"):
            deployment = client.read_deployment_by_name(name)
            assert deployment.work_pool_name == POOL
            assert not client.read_deployment_schedules(deployment.id)
            assert deployment.parameter_openapi_schema["properties"]["params"]
