"""Scale-out: the shard-level stages on a Dask cluster give the same tables as the default
thread runner, and only paths and small records cross process boundaries (dlib's models are
loaded inside the workers, never pickled).

    pytest tests/test_dask_runner.py     # ~1-2 min on 2 cores (two pipeline runs)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from s2f.media.packs import read_encoded
from storage.layout import DataLayout
from tests.pipeline_helpers import make_corpus, read_table, table_digest


def test_runner_selection_from_params_and_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.ingest import ingest_flow
    from flows.runners import RunnerParams, build_task_runner, local_cluster_kwargs, with_runner

    for var in ("S2F_TASK_RUNNER", "S2F_DASK_ADDRESS", "S2F_DASK_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    assert build_task_runner(RunnerParams()) is None
    assert with_runner(ingest_flow, None) is ingest_flow  # the flow keeps its own runner
    threads = build_task_runner(RunnerParams(kind="thread", max_workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner)
    wrapped = with_runner(ingest_flow, threads)
    assert wrapped.task_runner is threads and wrapped.name == "ingest"
    assert isinstance(ingest_flow.task_runner, ThreadPoolTaskRunner)  # the original unchanged

    monkeypatch.setenv("S2F_TASK_RUNNER", "dask")
    monkeypatch.setenv("S2F_DASK_ADDRESS", "tcp://scheduler.example:8786")
    runner = build_task_runner(RunnerParams())
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://scheduler.example:8786"
    # An explicit choice beats the environment.
    assert isinstance(build_task_runner(RunnerParams(kind="thread")), ThreadPoolTaskRunner)

    monkeypatch.delenv("S2F_DASK_ADDRESS")
    monkeypatch.setenv("S2F_DASK_WORKERS", "3")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    p = RunnerParams().resolved()
    assert (p.kind, p.dask_address, p.dask_workers) == ("dask", None, 3)
    assert local_cluster_kwargs(p) == {
        "n_workers": 3, "threads_per_worker": 1, "processes": True,
        "dashboard_address": None, "env": {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}}
    runner = build_task_runner(RunnerParams(dask_workers=2))
    assert isinstance(runner, DaskTaskRunner) and runner.cluster_kwargs["n_workers"] == 2

    monkeypatch.setenv("S2F_TASK_RUNNER", "spark")
    with pytest.raises(ValueError, match="S2F_TASK_RUNNER"):
        build_task_runner(RunnerParams())


def test_scope_starts_one_local_cluster_for_all_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client

    from flows.runners import RunnerParams, task_runner_scope

    monkeypatch.delenv("S2F_DASK_ADDRESS", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4999/api")
    with task_runner_scope(RunnerParams(kind="dask", dask_workers=1)) as runner:
        assert runner is not None and runner.address and runner.address.startswith("tcp://")
        with Client(runner.address) as client:
            env = client.run(lambda: (os.environ.get("PREFECT_API_URL"), os.getpid()))
    ((url, pid),) = env.values()
    assert url == "http://127.0.0.1:4999/api" and pid != os.getpid()
    with task_runner_scope(RunnerParams(kind="thread", max_workers=2)) as runner:
        assert type(runner).__name__ == "ThreadPoolTaskRunner"


def test_task_inputs_are_small_records_not_models(tmp_path: Path) -> None:
    """What goes to a Dask worker per shard: a shard plan or a path, plus the params."""
    from flows.preprocess import PreprocessParams
    from s2f.ingest.manifest import plan_manifests

    manifest = tmp_path / "avspeech_train.csv"
    manifest.write_text("abcdefghijk,0,1,0.5,0.5\n" * 300)
    plan = plan_manifests([manifest], 256)[0].shards[0]
    for obj in (plan, PreprocessParams(data_dir=tmp_path),
                tmp_path / "tables/clips/m/shard-00000.parquet"):
        assert len(pickle.dumps(obj)) < 20_000, type(obj)


@pytest.mark.slow
def test_dask_cluster_gives_the_same_tables_as_threads(
        prefect_server: None, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from flows.params import STAGES, PipelineParams, RunnerParams
    from flows.pipeline import pipeline_flow
    from flows.runners import worker_env

    manifest, media = make_corpus(tmp_path / "corpus")
    dirs = {"threads": tmp_path / "threads", "dask": tmp_path / "dask"}

    def params(name: str, runner: RunnerParams) -> PipelineParams:
        return PipelineParams(data_dir=dirs[name], manifests=[manifest], media_root=media,
                              stages=[s.name for s in STAGES if s.shard_level], shard_size=2, preprocess_workers=1 if name == "threads" else None,
                              runner=runner)

    threads = pipeline_flow(params("threads", RunnerParams(kind="thread", max_workers=2)))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, env=worker_env()) as cluster, \
            Client(cluster) as client:
        dask = pipeline_flow(params("dask", RunnerParams(
            kind="dask", dask_address=cluster.scheduler_address)))
        # The shard tasks ran in the worker processes, which loaded dlib and the stages there.
        loaded = client.run(lambda: (os.getpid(), "dlib" in __import__("sys").modules,
                                     "s2f.preprocess.clips" in __import__("sys").modules))
    assert len(loaded) == 2 and all(pid != os.getpid() for pid, _, _ in loaded.values())
    assert any(dlib and stage for _, dlib, stage in loaded.values())

    assert threads.results["ingest"].counts == dask.results["ingest"].counts == {
        "missing_media": 1, "ok": 2}
    assert threads.results["preprocess"].counts == dask.results["preprocess"].counts == {"ok": 2}
    clips_columns = ["clip_key", "manifest", "line_no", "status", "error", "video_codec",
                     "width", "height", "media_duration_s", "audio_samples"]
    assert table_digest(dirs["dask"], "clips", clips_columns) == table_digest(
        dirs["threads"], "clips", clips_columns)
    for table, columns, by in (
            ("preprocess", ["clip_key", "status", "frames_sampled", "faces_found"], ["clip_key"]),
            ("faces", ["clip_key", "frame_time_s", "bbox", "landmarks"],
             ["clip_key", "frame_time_s"]),
            ("face_features", ["clip_key", "feature"], ["clip_key"])):
        a = read_table(dirs["dask"], table).select(columns).sort(by)
        b = read_table(dirs["threads"], table).select(columns).sort(by)
        assert a.height > 0
        assert_frame_equal(a, b, check_exact=False, rel_tol=1e-5, abs_tol=1e-5)
    # The audio cuts are byte-identical too (each pack's name has its own token: by clip key).
    cuts = {}
    for name in ("threads", "dask"):
        ok = read_table(dirs[name], "clips").filter(pl.col("status") == "ok")
        layout = DataLayout(dirs[name])
        cuts[name] = {k: read_encoded(layout.resolve(p))
                      for k, p in ok.select("clip_key", "audio_path").iter_rows()}
    assert len(cuts["threads"]) == 2 and cuts["threads"] == cuts["dask"]
