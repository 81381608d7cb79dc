"""A Dask cluster given by address (`dask_address`, S2F_DASK_ADDRESS) gets what the project's
own LocalCluster gets: the Prefect API URL this process talks to and the data-dir settings
(`flows.runners.FORWARDED_ENV`), on its workers and on those that join later. The cluster is a
`distributed.LocalCluster` started here *before* the variables are set, and passed by address:
to the project's code it is a remote cluster whose workers inherited nothing.

    pytest -x -q tests/test_dask_remote.py     # ~30-60 s on 2 busy cores
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

PROBED = ("PREFECT_API_URL", "S2F_DATA_DIR", "MLFLOW_TRACKING_URI")


def _seen() -> dict[str, Any]:
    """What a worker process sees."""
    return {**{k: os.environ.get(k) for k in PROBED}, "pid": os.getpid()}


@pytest.mark.usefixtures("prefect_server")
def test_cluster_given_by_address_gets_the_api_url_and_data_dir_env(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.params import RunnerParams
    from flows.runners import FORWARDED_ENV, build_task_runner

    for var in (*FORWARDED_ENV, "PREFECT_API_URL", "S2F_DASK_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster.scheduler_address) as dc:
        # The workers exist and inherited none of the settings below.
        (before,) = dc.run(_seen).values()
        assert before["PREFECT_API_URL"] is None and before["S2F_DATA_DIR"] is None
        data_dir = tmp_path / "data"
        monkeypatch.setenv("S2F_DATA_DIR", str(data_dir))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        runner = build_task_runner(RunnerParams(kind="dask",
                                                dask_address=cluster.scheduler_address))
        assert type(runner).__name__ == "RemoteDaskTaskRunner"

        @task
        def probe() -> dict[str, Any]:
            return _seen()

        @flow(task_runner=runner)
        def probe_flow() -> tuple[dict[str, Any], str]:
            from prefect.runtime import flow_run

            return probe.submit().result(), str(flow_run.id)

        # A handler of our own: Prefect's logging set-up replaces the root's (and caplog's).
        warnings: list[str] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("flows.runners").addHandler(handler)
        try:
            seen, flow_run_id = probe_flow()
        finally:
            logging.getLogger("flows.runners").removeHandler(handler)
        # A worker that joins later runs the plugin too.
        cluster.scale(2)
        dc.wait_for_workers(2, timeout=120)
        joined = list(dc.run(_seen).values())

    with get_client(sync_client=True) as client:
        api_url = str(client.api_url).rstrip("/")
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
    assert seen["pid"] != os.getpid()
    assert seen["PREFECT_API_URL"] == api_url
    assert seen["S2F_DATA_DIR"] == str(data_dir)
    assert seen["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The worker reported its task run to this process's API (not to a server of its own).
    assert [(t.name.split("-")[0], t.state.type.value) for t in task_runs] == [("probe", "COMPLETED")]
    assert len(joined) == 2 and all(j["PREFECT_API_URL"] == api_url for j in joined), joined
    # The test API is on loopback: the log says that other hosts could not reach it.
    assert any("cannot report to it" in w for w in warnings), warnings
