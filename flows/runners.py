"""Which task runner the shard-level stages (ingest, preprocess) use.

    from flows.params import RunnerParams
    from flows.runners import task_runner_scope, with_runner

    params = RunnerParams(kind="dask", dask_workers=4)  # or RunnerParams(): S2F_TASK_RUNNER
    with task_runner_scope(params) as runner:                    # one cluster for all stages
        with_runner(ingest_flow, runner)(ingest_params)
        with_runner(preprocess_flow, runner)(preprocess_params)

Kinds:

- `default`: each stage flow keeps the runner it declares (ingest: 2 threads, preprocess: 1
  thread); `S2F_TASK_RUNNER` may override it (`thread` or `dask`).
- `thread`: `ThreadPoolTaskRunner(max_workers)`: shards run in threads of this process.
- `dask`: prefect-dask's `DaskTaskRunner`. With `dask_address` (or `S2F_DASK_ADDRESS`,
  e.g. `tcp://scheduler:8786`) the shards go to an existing Dask cluster, whose workers (and
  any that join later, through a worker plugin) are first given this process's Prefect API
  URL and the data-dir settings (`FORWARDED_ENV`), as the LocalCluster is; otherwise a
  `LocalCluster` of `dask_workers` processes × `dask_threads_per_worker` threads, dashboard off.
  Inside `task_runner_scope` that LocalCluster is started once and shared by every stage; a
  runner built by `build_task_runner` alone starts one per flow run.

Only paths, shard plans and pydantic params cross process boundaries: the stage tasks load
dlib's models, encoders and DALI pipelines inside the worker (once per worker thread, see
`s2f.faces.detect` and `s2f.faces.features`), because dlib's CNN detector and ResNet cannot be pickled.
Every Dask worker must see the data directory at the same path (a shared file system) and have
this project installed; a cluster on other hosts needs a Prefect server they can reach
(PREFECT_API_URL), not the embedded one on this host's loopback (a warning says so).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from prefect import Flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.params import RunnerParams

F = TypeVar("F", bound=Flow[Any, Any])
log = logging.getLogger(__name__)

# What a worker of a cluster given by address must share with this process besides the API URL:
# the data directory, the tracking store, the free-space reserve (storage.space) and how loud
# to be. A LocalCluster inherits them.
FORWARDED_ENV = ("S2F_DATA_DIR", "MLFLOW_TRACKING_URI", "S2F_QUIET", "PREFECT_LOGGING_LEVEL",
                 "PREFECT_LOGGING_EXTRA_LOGGERS", "MLFLOW_LOGGING_LEVEL", "S2F_MIN_FREE_MB")


def build_task_runner(params: RunnerParams) -> TaskRunner[Any] | None:
    """The task runner for `params` (resolved against the environment); None keeps each
    flow's own default."""
    p = params.resolved()
    if p.kind == "default":
        return None
    if p.kind == "thread":
        return ThreadPoolTaskRunner(max_workers=p.max_workers)
    from prefect_dask import DaskTaskRunner

    if p.dask_address:
        from flows.dask_remote import RemoteDaskTaskRunner

        return RemoteDaskTaskRunner(address=p.dask_address, worker_env=remote_worker_env)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(p))


def local_cluster_kwargs(p: RunnerParams) -> dict[str, Any]:
    """LocalCluster arguments: worker processes (dlib holds the GIL), no dashboard, and the
    Prefect API this process uses, so that workers report task runs to it instead of each
    starting an ephemeral server of their own on the same database."""
    return {"n_workers": p.dask_workers, "threads_per_worker": p.dask_threads_per_worker,
            "processes": True, "dashboard_address": None, "env": worker_env()}


def worker_env() -> dict[str, str]:
    """Environment for local Dask workers: PREFECT_API_URL of the API this process talks to
    (the ephemeral server's address when none is configured)."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            url = str(client.api_url)
    return {"PREFECT_API_URL": url.rstrip("/")}


def remote_worker_env() -> dict[str, str]:
    """Environment for the workers of a cluster given by address: `worker_env()` plus the
    `FORWARDED_ENV` variables this process has. Warns when the API is on loopback (the
    embedded server): workers on other hosts cannot reach it, and need `prefect server start`
    somewhere they can, with PREFECT_API_URL set to it."""
    env = worker_env()
    env.update({k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)})
    host = env["PREFECT_API_URL"].split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost", "[::1]"):
        log.warning("the Dask cluster is given by address but the Prefect API is %s, on this "
                    "host's loopback: workers on other hosts cannot report to it (start the Prefect "
                    "server on an address they reach and set PREFECT_API_URL to it)",
                    env["PREFECT_API_URL"])
    return env


@contextmanager
def task_runner_scope(params: RunnerParams) -> Iterator[TaskRunner[Any] | None]:
    """Like `build_task_runner`, but a Dask LocalCluster is started here once and shared by
    every flow run inside the block (workers keep their loaded models between stages)."""
    p = params.resolved()
    if p.kind != "dask" or p.dask_address:
        yield build_task_runner(p)
        return
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    with LocalCluster(**local_cluster_kwargs(p)) as cluster:
        yield DaskTaskRunner(address=cluster.scheduler_address)


def with_runner(flow: F, runner: TaskRunner[Any] | None) -> F:
    """`flow` with `runner`, or `flow` itself (its declared runner) when `runner` is None."""
    if runner is None:
        return flow
    return flow.with_options(task_runner=runner)  # type: ignore[return-value]


def describe(runner: TaskRunner[Any] | None) -> str:
    if runner is None:
        return "each stage's default (threads)"
    if type(runner).__name__ in ("DaskTaskRunner", "RemoteDaskTaskRunner"):
        address = getattr(runner, "address", None)
        return (f"dask at {address}" if address
                else f"dask LocalCluster {getattr(runner, 'cluster_kwargs', {})}")
    return f"{type(runner).__name__}(max_workers={getattr(runner, '_max_workers', '?')})"
