"""Guard rails for scheduled runs: timeouts, a failure hook, and locks that hold across hosts.

    from flows.guards import download_slot, flow_guard, stage_guard

    @flow(name="ingest", **flow_guard("ingest"))        # timeout + on_failure/on_crashed hook
    def ingest_flow(...):
        with stage_guard(layout, "ingest"):              # flock, and a Prefect slot if a server
            ...

- Timeouts come from `flows.params.FLOW_TIMEOUT_SECONDS` (one source), on flows only: a stage
  flow runs in the main thread, where Prefect can stop it; a task runs in a worker thread, where
  Prefect 3.9 only marks it timed out *after* it returns (and warns on every task run), so a task
  timeout would fail finished work and stop nothing.
- `publish_failure` (the hook of every stage flow, on failure, time-out and crash) publishes a
  markdown artifact `failure-<flow name>` saying what failed, why, and what to do, and logs one
  ERROR line that starts with `FAILED`.
- `stage_guard`: today's `storage.lock.stage_lock` (flock, per host), plus, where a Prefect
  server is configured (PREFECT_API_URL), one slot of the global concurrency limit
  `s2f-<stage>-<data dir hash>` (limit 1, created on first use): the server enforces it for
  every host, and a run that dies loses its slot when its lease expires (no stale locks). A run
  that cannot get the slot within `STAGE_SLOT_WAIT_SECONDS` raises `StageLocked` like the flock.
  Without a server the flock alone is used, and the log says so.
- `download_slot`: with a server, at most `MAX_CONCURRENT_DOWNLOADS` downloads at a time over all
  hosts (limit `s2f-downloads`); without one, nothing beyond the per-process dedup of ingest.
- `quiet_reported_failures` (installed on import): Prefect logs every failed task and flow
  run with its traceback. For a full disk (`storage.space.is_storage_full`: ENOSPC, EDQUOT,
  EFBIG, SQLite's "database or disk is full") and for `ShardsFailed` (the stage's summary,
  raised after it is logged) the one-line message says it all: their records keep the
  message, naming the error and the path, and lose the traceback. Any other error keeps it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

from flows.params import (
    FLOW_TIMEOUT_SECONDS,
    MAX_CONCURRENT_DOWNLOADS,
    STAGE_SLOT_WAIT_SECONDS,
)
from flows.summaries import ShardsFailed
from storage.layout import DataLayout
from storage.lock import StageLocked, stage_lock
from storage.space import is_storage_full

log = logging.getLogger(__name__)
DOWNLOADS_LIMIT = "s2f-downloads"
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _NoTracebackForReportedFailures(logging.Filter):
    """Drops the traceback of a run's failure record when the failure is a full disk or a
    stage's `ShardsFailed` summary; the record itself (its one line) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, ShardsFailed) or is_storage_full(exc)):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_reported_failures() -> None:
    """Install the filter on Prefect's flow- and task-run loggers (once)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForReportedFailures) for f in logger.filters):
            logger.addFilter(_NoTracebackForReportedFailures())


quiet_reported_failures()


def retry_unless_storage_full(task: Any, task_run: Any, state: Any) -> bool:
    """A task's `retry_condition_fn`: a shard that found no space is not retried (the disk is
    as full two seconds later); any other failure is."""
    exc = getattr(state, "data", None)
    return not (isinstance(exc, BaseException) and is_storage_full(exc))


def flow_guard(name: str) -> dict[str, Any]:
    """Decorator options of stage flow `name`: its timeout and the failure hook."""
    return {"timeout_seconds": FLOW_TIMEOUT_SECONDS[name], "on_failure": [publish_failure],
            "on_crashed": [publish_failure]}


def failure_advice(state_name: str, message: str, timeout_s: float | None) -> str:
    """What the reader of a failed run should do, from the state and its message."""
    if state_name == "TimedOut":
        return (f"The run exceeded its timeout ({timeout_s or '?'} s, "
                "`FLOW_TIMEOUT_SECONDS` in flows/params.py) and was stopped, so the next "
                "scheduled run can start. Look at the run's last log lines for the step that "
                "hung; rerun when it is fixed: finished shards are skipped.")
    if "another" in message and "run is using this data directory" in message:
        return ("Another run of this stage holds the data directory (this host's lock or the "
                "Prefect global concurrency limit): wait for it to finish, or stop it.")
    if state_name == "Crashed":
        return ("The run's process or infrastructure died (killed, out of memory, node lost). "
                "Rerun: finished shards are skipped and training resumes from its checkpoint.")
    return "See the run's log for the traceback; rerun when fixed (finished work is skipped)."


def failure_markdown(flow_name: str, run_name: str, run_id: str, state_name: str, message: str,
                     timeout_s: float | None, parameters: dict[str, Any]) -> str:
    data_dir = (parameters.get("params") or {}) if isinstance(parameters, dict) else {}
    data_dir = data_dir.get("data_dir") if isinstance(data_dir, dict) else None
    return "\n".join([
        f"# {flow_name}: {state_name}", "",
        "| | |", "|---|---|",
        f"| flow run | {run_name} (`{run_id}`) |",
        f"| state | {state_name} |",
        f"| data directory | {data_dir or '(not given)'} |", "",
        "## Why", "", "```", (message or "(no message)")[:4000], "```", "",
        "## What to do", "", failure_advice(state_name, message or "", timeout_s)])


def publish_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure / on_crashed hook: one markdown artifact and one ERROR log line. Never raises
    (a hook's own error would hide the run's)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.logging.loggers import flow_run_logger

    logger = flow_run_logger(flow_run, flow)
    message = str(state.message or "")
    key = "failure-" + "".join(c if c.isalnum() else "-" for c in flow.name.lower())
    logger.error("FAILED %s run %s: %s (%s): %s", flow.name, flow_run.name, state.name,
                 state.type.value, message[:500])
    try:  # through the client: a hook has no run context that create_markdown_artifact needs
        with get_client(sync_client=True) as client:
            client.create_artifact(ArtifactCreate(
                key=key, type="markdown", flow_run_id=flow_run.id,
                description=f"why {flow.name} run {flow_run.name} ended {state.name}",
                data=failure_markdown(flow.name, flow_run.name, str(flow_run.id), state.name,
                                      message, flow.timeout_seconds, flow_run.parameters or {})))
    except Exception as exc:  # the API may be what failed
        logger.error("could not publish the failure artifact %s: %s", key, exc)


CROSS_HOST_LOCKS_ENV = "S2F_CROSS_HOST_LOCKS"


def prefect_server_url() -> str | None:
    """The Prefect API whose global concurrency limits lock stages across hosts: only when
    S2F_CROSS_HOST_LOCKS=1 and PREFECT_API_URL is set. Opt-in because a killed run's slot
    stays leased until its lease expires (minutes), so a run resumed at once after a kill would
    be refused; the host's flock is released the moment its process dies."""
    import os

    from prefect.settings import PREFECT_API_URL

    if os.environ.get(CROSS_HOST_LOCKS_ENV, "").strip() not in ("1", "true", "yes"):
        return None
    return PREFECT_API_URL.value() or None


def stage_limit_name(layout: DataLayout, stage: str) -> str:
    digest = hashlib.sha256(str(layout.root).encode()).hexdigest()[:12]
    return f"s2f-{stage}-{digest}"


def ensure_limit(name: str, limit: int) -> None:
    """Create global concurrency limit `name` unless it exists (another host may race us)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True))
            except ObjectAlreadyExists:
                pass


@contextmanager
def server_slot(name: str, limit: int, wait_s: float | None) -> Iterator[None]:
    """One slot of global limit `name` (created with `limit`); TimeoutError after `wait_s`."""
    from prefect.concurrency.sync import concurrency

    ensure_limit(name, limit)
    with concurrency(name, occupy=1, timeout_seconds=wait_s, strict=True,
                     raise_on_lease_renewal_failure=False):
        yield


class StageLockedAcrossHosts(StageLocked):
    """Another host's run of the stage holds the Prefect global concurrency limit."""

    def __init__(self, stage: str, layout: DataLayout, limit: str, api: str) -> None:
        RuntimeError.__init__(
            self, f"another {stage} run is using this data directory ({layout.root}: the "
                  f"Prefect global concurrency limit {limit} on {api} is taken, by a run on "
                  f"this or another host); wait for it to finish or stop it, then run again")
        self.stage, self.path, self.holder = stage, layout.root, {"limit": limit, "api": api}


@contextmanager
def stage_guard(layout: DataLayout, stage: str) -> Iterator[None]:
    """This host's flock on the stage, and with a Prefect server its global slot as well."""
    with stage_lock(layout, stage):
        api = prefect_server_url()
        if api is None:
            log.info("the %s lock is this host's flock only (cross-host locks need a Prefect "
                     "server and %s=1); runs on other hosts are not excluded", stage,
                     CROSS_HOST_LOCKS_ENV)
            yield
            return
        with ExitStack() as stack:
            name = stage_limit_name(layout, stage)
            try:
                stack.enter_context(server_slot(name, 1, STAGE_SLOT_WAIT_SECONDS))
            except TimeoutError:
                raise StageLockedAcrossHosts(stage, layout, name, api) from None
            yield

def download_slot() -> Any:
    """A context: one of `MAX_CONCURRENT_DOWNLOADS` download slots over all hosts (server), or
    nothing (no server: ingest's per-process dedup only)."""
    if prefect_server_url() is None:
        return nullcontext()
    return server_slot(DOWNLOADS_LIMIT, MAX_CONCURRENT_DOWNLOADS, None)
