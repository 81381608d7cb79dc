"""Guard rails for scheduled runs (flows/guards.py): every stage flow and long task has a
timeout; a scheduled deployment's stages time out before its next run (so CANCEL_NEW never
cancels night after night behind a hung run); the failure hook publishes a markdown artifact
and an ERROR line (a real time-out and a real StageLocked, on the session's Prefect server);
stage locks take a Prefect global concurrency slot that a run on another host would hold, and
fall back to the flock alone, saying so, without a server.

    pytest -x -q tests/test_guards.py     # ~30-60 s on 2 busy cores
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _flow_object(ref: str) -> Any:
    module, name = ref.replace("/", ".").removesuffix(".py").split(":")
    return getattr(importlib.import_module(module.removesuffix(".py")), name)


def _period_s(cron: str) -> float:
    """The shortest gap between two runs of `cron` over the next 60 runs."""
    from prefect._vendor.croniter import croniter  # Prefect's own cron iterator

    it = croniter(cron, datetime(2026, 1, 1))
    times = [it.get_next(datetime) for _ in range(60)]
    return min((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))


def test_stage_flows_have_timeouts_and_the_hook_and_tasks_none() -> None:
    """Flows carry the timeout; tasks carry none (in a worker thread Prefect cannot stop a task,
    it only fails one that finished late and warns on every run)."""
    from flows.guards import publish_failure
    from flows.params import FLOW_TIMEOUT_SECONDS, STAGES

    for spec in STAGES:
        f = _flow_object(spec.flow)
        assert f.timeout_seconds == FLOW_TIMEOUT_SECONDS[f.name], spec
        assert publish_failure in f.on_failure_hooks and publish_failure in f.on_crashed_hooks
    modules = ("ingest", "preprocess", "train", "evaluate", "promote", "real_pairs")
    objects = [v for module in modules
               for v in vars(importlib.import_module(f"flows.{module}")).values()]
    tasks = [t for t in objects if type(t).__name__ == "Task"]
    assert tasks and all(t.timeout_seconds is None for t in tasks), \
        [t.name for t in tasks if t.timeout_seconds is not None]
    # Every named timeout belongs to a real flow (a renamed one would be dropped).
    names = {f.name for f in objects if type(f).__name__ == "Flow"}
    assert set(FLOW_TIMEOUT_SECONDS) <= names, set(FLOW_TIMEOUT_SECONDS) - names
    assert all(t > 0 for t in FLOW_TIMEOUT_SECONDS.values())


def test_scheduled_runs_time_out_before_the_next_one_and_collisions_are_bounded() -> None:
    """The parsed deployments carry the collision options Prefect 3.9 has (ENQUEUE /
    CANCEL_NEW, grace_period_seconds 60-86400), and a run's stages end before its next run."""
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions

    from flows.params import FLOW_TIMEOUT_SECONDS, STAGE_NAMES, stage_spec

    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    parsed = {d.name: d for d in PrefectYamlModel.model_validate(raw).deployments
              if d.schedules}
    scheduled = [d for d in raw["deployments"] if d.get("schedules")]
    assert len(scheduled) == 2
    for d in scheduled:
        limit = parsed[d["name"]].concurrency_limit
        assert limit.limit == 1 and limit.collision_strategy == "CANCEL_NEW"
        options = ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy(
            limit.collision_strategy), grace_period_seconds=limit.grace_period_seconds)
        assert options.grace_period_seconds and options.grace_period_seconds <= 3600
        stages = d["parameters"]["params"].get("stages") or STAGE_NAMES
        budget = sum(FLOW_TIMEOUT_SECONDS[_flow_object(stage_spec(s).flow).name]
                     for s in stages)
        for schedule in d["schedules"]:
            period = _period_s(schedule["cron"])
            assert budget + options.grace_period_seconds < period, (d["name"], budget, period)


@contextmanager
def _records(logger: str) -> Iterator[list[str]]:
    """Messages logged to `logger` (our own handler: Prefect's logging set-up replaces the
    root's handlers, caplog's among them)."""
    seen: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger(logger)
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def _artifact(key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created)


def _run_logs(flow_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        return [log.message for log in client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]


@pytest.mark.usefixtures("prefect_server")
def test_a_timed_out_run_publishes_why_and_what_to_do() -> None:
    from prefect import flow

    from flows.guards import publish_failure

    @flow(name="guard-probe-hang", timeout_seconds=1, on_failure=[publish_failure])
    def hangs() -> None:
        time.sleep(10)

    started = time.monotonic()
    state = hangs(return_state=True)
    assert time.monotonic() - started < 9, "the timeout did not stop the run"
    assert state.name == "TimedOut" and state.is_failed()
    markdown = _artifact("failure-guard-probe-hang").data
    assert "# guard-probe-hang: TimedOut" in markdown and "## What to do" in markdown
    assert "FLOW_TIMEOUT_SECONDS" in markdown and "next scheduled run can start" in markdown
    assert any(m.startswith("FAILED guard-probe-hang run") for m in
               _run_logs(state.state_details.flow_run_id))


@pytest.mark.usefixtures("prefect_server")
def test_stage_guard_refuses_when_another_host_holds_the_slot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slot is held here by `server_slot`, as a run on another host would hold it: this
    host's flock is free, so only the Prefect limit can refuse (cross-host locks opted in)."""
    monkeypatch.setenv("S2F_CROSS_HOST_LOCKS", "1")
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.guards import publish_failure, server_slot, stage_guard, stage_limit_name
    from storage.layout import DataLayout
    from storage.lock import StageLocked

    layout = DataLayout(tmp_path / "data").ensure()
    name = stage_limit_name(layout, "ingest")

    @flow(name="guard-probe-locked", on_failure=[publish_failure])
    def locked() -> None:
        with stage_guard(layout, "ingest"):
            pass

    with server_slot(name, 1, None):
        with pytest.raises(StageLocked, match="Prefect global concurrency limit"):
            with stage_guard(layout, "ingest"):
                pass
        state = locked(return_state=True)
    assert state.is_failed()
    markdown = _artifact("failure-guard-probe-locked").data
    assert "another ingest run is using this data directory" in markdown
    assert "wait for it to finish, or stop it" in markdown
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).limit == 1

    # Free again: the guard takes flock + slot; a second run on this host meets the flock.
    with stage_guard(layout, "ingest"):
        with pytest.raises(StageLocked, match=r"ingest\.lock is locked by pid"):
            with stage_guard(layout, "ingest"):
                pass
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0


@pytest.mark.usefixtures("prefect_server")
def test_without_a_server_the_flock_alone_and_the_log_says_so(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.guards import download_slot, prefect_server_url, stage_guard
    from storage.layout import DataLayout

    layout = DataLayout(tmp_path / "data").ensure()
    with temporary_settings(restore_defaults={PREFECT_API_URL}), _records("flows.guards") as seen:
        assert prefect_server_url() is None
        with stage_guard(layout, "preprocess"), download_slot():
            pass
    assert any("flock only" in m and "preprocess" in m for m in seen), seen
    # A server without the opt-in: still the flock only (a killed run's leased slot would
    # refuse its own resume for minutes).
    assert prefect_server_url() is None


def test_a_full_disk_is_not_retried_and_its_failure_has_no_traceback(
        prefect_server: None, caplog: pytest.LogCaptureFixture) -> None:
    """`retry_unless_storage_full` and `quiet_reported_failures` on real Prefect task runs: a
    shard that found no space runs once (not 1 + 2 retries) and its failure record keeps its
    line without a traceback; any other error is retried and keeps its traceback."""
    import errno

    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from flows.guards import retry_unless_storage_full
    from storage.space import DiskFull

    calls: dict[str, int] = {"disk": 0, "bug": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_storage_full,
          cache_policy=NO_CACHE)
    def shard(kind: str) -> None:
        calls[kind] += 1
        if kind == "disk":
            raise DiskFull(errno.ENOSPC, "No space left on device while writing it", "/d/x")
        raise ValueError("a bug")

    @flow
    def two_shards() -> list[str]:
        futures = [shard.submit("disk"), shard.submit("bug"),
                   shard.with_options(retries=0).submit("disk")]  # like ingest's shard task
        return [type(f.result(raise_on_failure=False)).__name__ for f in futures]

    run_logger = logging.getLogger("prefect.task_runs")  # Prefect's loggers do not propagate
    run_logger.addHandler(caplog.handler)
    try:
        assert two_shards() == ["DiskFull", "ValueError", "DiskFull"]
    finally:
        run_logger.removeHandler(caplog.handler)
    assert calls == {"disk": 2, "bug": 3}  # once each
    errors = [r for r in caplog.records
              if r.name == "prefect.task_runs" and r.levelno == logging.ERROR]
    disk = [r for r in errors if "DiskFull" in r.getMessage()]
    bug = [r for r in errors if "ValueError" in r.getMessage()]
    assert any("Task run failed with exception: DiskFull" in r.getMessage() for r in disk)
    assert disk and all(r.exc_info is None for r in disk)
    assert any("No space left on device while writing it: '/d/x'" in r.getMessage()
               for r in disk)
    assert any(r.exc_info is not None for r in bug)
