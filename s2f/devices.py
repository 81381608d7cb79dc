"""Which device a process, a worker or a run uses: the one place for the name -> device rule
and for the round robin that gives each worker (and each side-by-side run) its own GPU.

- `resolve_device("auto" | "cpu" | "cuda" | "cuda:N")`: "auto" is CUDA when torch sees a
  device, else the CPU; a name torch does not know, CUDA on a machine without it, or an index
  past the visible devices is refused with a clear error (not a failure deep in a kernel).
- `round_robin(rank, device_count)`: the GPU index of worker (or run) `rank`: rank mod count.
  Counts are `torch.cuda.device_count()`, which honours CUDA_VISIBLE_DEVICES: index 0 is the
  first *visible* device, so a job given GPUs 4-7 spreads over those four.
- `worker_device(rank)`: `cuda:<round_robin(rank, visible)>`, for preprocess workers and
  their DALI pipelines (instead of `torch.cuda.current_device()`, which is GPU 0 in every
  fresh process).
- `side_by_side(runs, device_count)`: the waves in which `runs` training runs go, each run
  with its own device; with fewer than two devices, one run per wave on no fixed device (one
  after another, as on the CPU); `pinned(device)` makes a run's thread use its device.

Torch is imported inside the functions: `flows.params` reads `DEFAULT_DEVICE` without it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_DEVICE = "auto"  # evaluation's default (training and preprocessing say "auto" too)
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # the names a stage's `device` setting takes


class DeviceError(ValueError):
    """A device name that cannot be used here (unknown, or CUDA that is not there)."""


def visible_cuda_devices() -> int:
    """CUDA devices this process may use (0 without CUDA); honours CUDA_VISIBLE_DEVICES."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto" -> cuda when present, else cpu; other names as torch reads them, checked."""
    import torch

    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as exc:
            raise DeviceError(f"device {name!r}: not a device name (auto, cpu, cuda or "
                              f"cuda:N)") from exc
    if device.type == "cuda":
        count = visible_cuda_devices()
        if count == 0:
            raise DeviceError(f"device {str(name)!r}: torch sees no CUDA device here (use "
                              "auto or cpu)")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {str(name)!r}: only {count} CUDA device(s) visible "
                              "(CUDA_VISIBLE_DEVICES counts from 0)")
    return device


def round_robin(rank: int, device_count: int) -> int:
    """The device index of worker or run `rank` (0, 1, ...) over `device_count` devices."""
    if rank < 0:
        raise ValueError(f"rank {rank}: ranks count from 0")
    if device_count < 1:
        raise DeviceError(f"rank {rank}: no CUDA device to assign")
    return rank % device_count


def worker_device(rank: int, device_count: int | None = None) -> torch.device:
    """`cuda:<index>` of worker `rank`, round robin over the visible devices."""
    import torch

    count = visible_cuda_devices() if device_count is None else device_count
    return torch.device("cuda", round_robin(rank, count))


@dataclass(frozen=True)
class Placement:
    """Run `run` (its index in the caller's list) on `device` ("cuda:N"), or, with None, on
    the device its own settings name (runs one after another)."""

    run: int
    device: str | None


def side_by_side(runs: int, device_count: int) -> list[list[Placement]]:
    """Waves of runs: each wave's runs train at once, each on its own GPU (wave k holds runs
    k*count .. k*count+count-1 on cuda:0 .. cuda:count-1); the next wave starts when the
    whole wave is done. Fewer than two devices (or one run): one run per wave, device None."""
    if runs < 0:
        raise ValueError(f"{runs} runs")
    if device_count < 2 or runs < 2:
        return [[Placement(i, None)] for i in range(runs)]
    return [[Placement(i, f"cuda:{round_robin(i, device_count)}")
             for i in range(start, min(start + device_count, runs))]
            for start in range(0, runs, device_count)]


def pinned(device: str | None) -> AbstractContextManager[object]:
    """A context in which `device` ("cuda:N") is this thread's current CUDA device, so code that
    says "cuda" (or `torch.cuda.synchronize()`) means it; nothing for any other name. A run
    started side by side in its own thread needs it: a new thread's current device is 0."""
    if device is None or not device.startswith("cuda:"):
        return nullcontext()
    import torch

    return torch.cuda.device(resolve_device(device))
