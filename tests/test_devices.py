"""Device names and the assignment of GPUs to workers and runs (`s2f.devices`), on the CPU:
the round robin and the side-by-side waves are pure functions of a (here: fake) device count.

    pytest -q tests/test_devices.py
"""

from __future__ import annotations

import pytest
import torch

from s2f.devices import (
    DeviceError,
    Placement,
    resolve_device,
    round_robin,
    side_by_side,
    worker_device,
)

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


def test_auto_is_cuda_when_present_else_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda0", "", "cpu:x"])
def test_an_unknown_device_name_is_refused_with_its_name(name: str) -> None:
    with pytest.raises(DeviceError, match=repr(name)):
        resolve_device(name)


@NO_CUDA
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_refused_up_front(name: str) -> None:
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device(name)


def test_round_robin_spreads_ranks_over_the_visible_devices() -> None:
    assert [round_robin(r, 4) for r in range(10)] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [round_robin(r, 1) for r in range(3)] == [0, 0, 0]
    with pytest.raises(DeviceError, match="no CUDA device"):
        round_robin(0, 0)
    with pytest.raises(ValueError, match="from 0"):
        round_robin(-1, 2)


def test_worker_device_names_the_rank_s_gpu() -> None:
    # the device object only: nothing touches CUDA until a tensor goes there
    assert worker_device(5, device_count=8) == torch.device("cuda", 5)
    assert worker_device(9, device_count=8) == torch.device("cuda", 1)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            worker_device(0)


def test_runs_go_one_after_another_with_fewer_than_two_gpus() -> None:
    for count in (0, 1):
        waves = side_by_side(4, count)
        assert waves == [[Placement(i, None)] for i in range(4)]
    assert side_by_side(1, 8) == [[Placement(0, None)]]
    assert side_by_side(0, 8) == []


def test_runs_go_side_by_side_one_per_gpu_in_waves() -> None:
    # 3 seeds + the shuffled control on 2 GPUs: two waves of two
    assert side_by_side(4, 2) == [[Placement(0, "cuda:0"), Placement(1, "cuda:1")],
                                  [Placement(2, "cuda:0"), Placement(3, "cuda:1")]]
    # fewer runs than GPUs: one wave, the first devices
    assert side_by_side(3, 8) == [[Placement(0, "cuda:0"), Placement(1, "cuda:1"),
                                   Placement(2, "cuda:2")]]
    waves = side_by_side(7, 3)
    assert [len(w) for w in waves] == [3, 3, 1]
    placed = [p for w in waves for p in w]
    assert [p.run for p in placed] == list(range(7))  # every run once, in order
    for wave in waves:  # no two runs of a wave share a GPU
        assert len({p.device for p in wave}) == len(wave)


def _rank_and_pid() -> tuple[int | None, int]:
    import os
    import time

    from s2f.preprocess.pool import worker_rank

    time.sleep(0.2)  # keep this worker busy so the next task can go to the other one
    return worker_rank(), os.getpid()


def test_the_shared_counter_hands_out_ranks_in_start_order() -> None:
    import multiprocessing

    from s2f.preprocess.pool import take_rank, worker_rank

    started = multiprocessing.get_context("spawn").Value("i", 0)
    assert [take_rank(started) for _ in range(3)] == [0, 1, 2]
    assert worker_rank() is None  # not a pool worker


def test_pool_workers_each_take_their_own_rank() -> None:
    """Real spawned workers (as `preprocess_parallel` starts them): a worker keeps one rank,
    two workers never share one, and ranks are 0..workers-1, which `worker_device` maps to
    the GPUs round robin."""
    from s2f.preprocess.pool import _pool, shutdown_pools

    try:
        pool = _pool(2)
        seen = [f.result() for f in [pool.submit(_rank_and_pid) for _ in range(6)]]
    finally:
        shutdown_pools()
    rank_of: dict[int, int | None] = {}
    for rank, pid in seen:
        assert rank_of.setdefault(pid, rank) == rank
    assert set(rank_of.values()) <= {0, 1}
    assert len(set(rank_of.values())) == len(rank_of)


def test_seeds_spread_over_gpus_only_when_the_device_setting_lets_them() -> None:
    from flows.train import gpus_to_spread_over
    from s2f.devices import visible_cuda_devices

    assert gpus_to_spread_over("cpu") == 0
    assert gpus_to_spread_over("cuda:1") == 0  # a device named by index: that one only
    assert gpus_to_spread_over("auto") == gpus_to_spread_over("cuda") == visible_cuda_devices()
    if visible_cuda_devices() < 2:  # here: the seeds go one after another, as before
        assert all(p.device is None for w in side_by_side(4, gpus_to_spread_over("auto"))
                   for p in w)


def test_pinned_makes_the_run_s_gpu_current_and_is_nothing_elsewhere() -> None:
    from contextlib import nullcontext

    from s2f.devices import pinned

    for name in (None, "auto", "cpu", "cuda"):
        assert isinstance(pinned(name), nullcontext)
    if torch.cuda.is_available():
        last = torch.cuda.device_count() - 1
        with pinned(f"cuda:{last}"):
            assert torch.cuda.current_device() == last
    else:
        with pytest.raises(DeviceError):
            pinned("cuda:0")
