"""Data-parallel training over several processes (GPUs, nodes) as `torchrun` launches them.

torchrun starts one process per GPU and gives each RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT. `init()` reads them and joins the process group: NCCL with one GPU per
process (`cuda:LOCAL_RANK`) on CUDA, gloo on CPU. Without them (or with WORLD_SIZE=1) it does
nothing and `current()` is the single-process context, so the training loop runs unchanged.

What the voice encoder's loop (`s2f.train.voice` + `s2f.train.runner`) does with a context of world size W > 1:
- `TrainConfig.batch_size` is the global batch. Every rank computes the same seeded batch plan
  (it depends only on seed and epoch) and loads only its contiguous slice of each batch
  (`rank_slice`: batch_size / W pairs; batch_size must divide by W);
- BatchNorm becomes synchronised (`sync_batchnorm`, default on): statistics over the global
  batch. CUDA uses `nn.SyncBatchNorm`; it refuses CPU tensors, so on CPU (gloo) the layers
  become `GlobalBatchNorm2d`, which all-reduces the same sums itself;
- the model is wrapped in `DistributedDataParallel` (gradients averaged over ranks). With
  synchronised BatchNorm and equal slices this is the optimisation of one process with the
  whole batch, up to float rounding (tests/test_train_ddp.py checks it on CPU);
- validation metrics are summed over ranks (`all_reduce_sum`), the checkpoint to resume from
  is read by rank 0 and broadcast (`broadcast`), and only rank 0 writes checkpoints, logs to
  MLflow and registers the model (`unwrap`/`plain_copy`: no `module.` prefix, plain
  BatchNorm2d).

    torchrun --standalone --nproc-per-node 2 -m flows.torchrun --data-dir D --device cpu ...
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def rank_slice(positions: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's contiguous part of a global batch: `np.array_split` into `world` parts (the
    first `len % world` parts one longer), so the parts concatenate back to the batch."""
    if world <= 1:
        return positions
    return np.array_split(positions, world)[rank]


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the job. The default is one process (rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None   # the rank's device; None: one process, config's device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def _nccl(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def all_reduce_sum(self, values: dict[str, float]) -> dict[str, float]:
        """Sum each value over ranks (float64). Every rank must pass the same keys."""
        if not self.distributed or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                         device=self.device if self._nccl else "cpu")
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over ranks."""
        if not self.distributed:
            return dict(values)
        return {k: v / self.world for k, v in self.all_reduce_sum(values).items()}

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (pickled; tensors come back on the CPU if sent so)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self._nccl else None)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            if self._nccl:
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def wrap(self, model: nn.Module, sync_batchnorm: bool = True) -> tuple[nn.Module, nn.Module]:
        """(the model to save and evaluate, the module to train through). One process: both are
        `model`. Several: BatchNorm synchronised (if asked), then DistributedDataParallel."""
        if not self.distributed:
            return model, model
        if sync_batchnorm:
            model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if self._nccl
                     else convert_global_batchnorm(model))
        ddp = DistributedDataParallel(model, device_ids=[self.local_rank] if self._nccl else None)
        return model, ddp


_CONTEXT = DistContext()


def current() -> DistContext:
    """The context `init()` set up (the single-process one before, or after `teardown()`)."""
    return _CONTEXT


def init(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes in the environment (no-op for one process).

    `device`: auto (CUDA when present) | cuda | cpu. On CUDA every process takes
    cuda:LOCAL_RANK and NCCL; on CPU, gloo."""
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CONTEXT = DistContext()
        return _CONTEXT
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", rank=rank,
                                world_size=world)
    _CONTEXT = DistContext(rank=rank, world=world, local_rank=local, device=dev)
    return _CONTEXT


def teardown() -> None:
    """Leave the process group (if any); `current()` is the single-process context again."""
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = DistContext()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are over the global batch (all ranks), for CPU
    process groups, where `nn.SyncBatchNorm` refuses to run. Sums are all-reduced through
    autograd (`torch.distributed.nn.functional.all_reduce`), so the backward pass is that of
    BatchNorm over the whole batch; evaluation, and one process, is plain BatchNorm2d. The
    sums are taken in float64, which keeps it within rounding of one-process BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c, dims = x.shape[1], (0, 2, 3)
        count = torch.tensor([x.numel() // c], dtype=torch.float64)
        dist.all_reduce(count)
        n = float(count.item())
        mean = all_reduce(x.sum(dims, dtype=torch.float64)) / n
        centered = x - mean.to(x.dtype).view(1, c, 1, 1)
        var = all_reduce(centered.pow(2).sum(dims, dtype=torch.float64)) / n
        if self.track_running_stats and self.running_mean is not None \
                and self.running_var is not None and self.num_batches_tracked is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(x.dtype), alpha=m)
                unbiased = var.detach() * (n / max(n - 1, 1.0))
                self.running_var.mul_(1 - m).add_(unbiased.to(x.dtype), alpha=m)
        y = centered * torch.rsqrt(var + self.eps).to(x.dtype).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def _swap_batchnorm(module: nn.Module, make: type[nn.BatchNorm2d],
                    kinds: tuple[type[nn.Module], ...]) -> nn.Module:
    """Replace every module of `kinds` by a `make` sharing its parameters and buffers."""
    out = module
    if isinstance(module, kinds) and type(module) is not make:
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        out = make(module.num_features, module.eps, module.momentum, module.affine,
                   module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _swap_batchnorm(child, make, kinds))
    return out


def convert_global_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm2d → GlobalBatchNorm2d, in place (same parameters and buffers)."""
    return _swap_batchnorm(model, GlobalBatchNorm2d, (nn.BatchNorm2d,))


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy with plain BatchNorm2d in place of SyncBatchNorm / GlobalBatchNorm2d (same state
    dict): what is registered, so that it loads and runs in one process anywhere."""
    return _swap_batchnorm(copy.deepcopy(model), nn.BatchNorm2d,
                           (nn.SyncBatchNorm, GlobalBatchNorm2d))


def state_digest(model: nn.Module) -> str:
    """sha1 of the state dict (names, dtypes, shapes, bytes): equal digests, equal weights."""
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
