"""A Dask cluster given by address (`s2f ... --dask-address tcp://scheduler:8786`): the task
runner that first gives its workers this process's Prefect API URL and data-dir settings, as
the LocalCluster of `flows/runners.py` gets them through its `env`.

    from flows.dask_remote import RemoteDaskTaskRunner
    runner = RemoteDaskTaskRunner(address="tcp://scheduler:8786",
                                  worker_env=lambda: {"PREFECT_API_URL": "http://prefect:4200/api"})

`worker_env` is called when the runner first connects (inside the flow run, where the API this
process talks to is known), not when it is built.

Imported only when such a cluster is used (prefect-dask and distributed cost ~1 s to import).
The plugin is registered by name, so a second flow run replaces it instead of stacking copies,
and workers that join the cluster later run it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin
from prefect_dask import DaskTaskRunner

WORKER_ENV_PLUGIN = "s2f-worker-env"


class WorkerEnv(WorkerPlugin):  # type: ignore[misc]
    """Sets environment variables in each worker process (pickled to the scheduler: a dict)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)

    def setup(self, worker: Any) -> None:
        os.environ.update(self.env)


class RemoteDaskTaskRunner(DaskTaskRunner):  # type: ignore[misc]
    """prefect-dask's runner on an existing cluster that registers `WorkerEnv(worker_env)` when
    it first connects, before any task is submitted; `worker_env()` is called then."""

    def __init__(self, *args: Any, worker_env: Callable[[], dict[str, str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker_env = worker_env

    def duplicate(self) -> RemoteDaskTaskRunner:
        copy = super().duplicate()  # type(self)(...) without worker_env: set it here
        copy.worker_env = self.worker_env
        return copy

    def __eq__(self, other: object) -> bool:
        return bool(super().__eq__(other)) and \
            self.worker_env == getattr(other, "worker_env", None)

    __hash__ = None  # type: ignore[assignment]

    @property
    def client(self) -> Any:
        connecting = self._client is None
        client = super().client
        if connecting and self.worker_env is not None:
            client.register_plugin(WorkerEnv(self.worker_env()), name=WORKER_ENV_PLUGIN)
        return client
