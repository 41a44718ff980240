"""torchrun without code changes: read its environment, fall back to one process.

`torchrun --nproc_per_node N -m compress train ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
without them everything runs in one process. gloo on CPU, nccl on CUDA. Only rank 0 writes
files. `cleanup_distributed()` puts a barrier before `destroy_process_group()`: on torch 2.14
with gloo a process can abort at exit when the group is destroyed right after DDP work
(DESIGN.md section 7). A process that `leave_group()`s goes on alone: a later
`init_distributed()` (a trainer's) gives it a one-process `DistInfo` (the prune run after a
structure search spread over the ranks finishes on rank 0 alone).

A loss that averages over its targets (YOLO's box and class terms, SSD's matches) must divide
by the global batch's count, not each rank's, or N processes train a different objective than
one: inside `counts_over_ranks(info)` (the trainer's forward/backward) `global_count` sums a
loss's counts over the ranks; outside it a loss keeps its own counts.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    group: bool = False  # in a process group, even as its only rank (`one_rank_group`)

    @property
    def distributed(self) -> bool:
        """Take the DDP code path: several ranks, or one rank in a process group of its own."""
        return self.world_size > 1 or self.group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """ "auto" -> this process's GPU when CUDA is there, else the CPU."""
    if str(device) == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} asked for, but CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


_LEFT: list[bool] = []  # [True] once this process left torchrun's group (leave_group)


def init_distributed(
    device: str | torch.device = "auto", timeout: datetime.timedelta | None = None
) -> DistInfo:
    """Join torchrun's process group when its variables are set (idempotent), else one process.
    `timeout`: how long a collective waits for the other ranks (None: torch's default)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if _LEFT or (world_size <= 1 and not dist.is_initialized()):
        return DistInfo(device=resolve_device(device, local_rank))
    dev = resolve_device(device, local_rank)
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout)
        atexit.register(cleanup_distributed)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, group=True)


def one_rank_group(device: str | torch.device = "auto") -> DistInfo:
    """Outside torchrun: a process group of this process alone (nccl on CUDA, gloo on the CPU),
    so one process takes the DDP code path a rank of N takes (the GPU smoke test). Under
    torchrun: its group, as `init_distributed`."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or dist.is_initialized():
        return init_distributed(device)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    # an in-process store: a group of one needs no rendezvous address or port
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    atexit.register(cleanup_distributed)
    return DistInfo(0, 1, 0, dev, group=True)


def joined() -> DistInfo:
    """The group this process already joined (init_distributed), or one process: never joins."""
    if _LEFT or not dist.is_available() or not dist.is_initialized():
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = dist.get_backend() == "nccl"
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, group=True)


def leave_group() -> None:
    """Every rank: barrier, destroy the group, and go on as one process from here on."""
    cleanup_distributed()
    if not _LEFT:
        _LEFT.append(True)


def cleanup_distributed() -> None:
    """Barrier, then destroy the group (safe to call twice or without a group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(values: list[float], info: DistInfo) -> list[float]:
    """The mean over ranks of a few scalars (the logged loss equals one process's loss)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / info.world_size).tolist()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


_COUNTING: list[DistInfo] = []  # the ranks of the step whose loss is being computed, if any


@contextmanager
def counts_over_ranks(info: DistInfo) -> Iterator[None]:
    """Within: losses normalise by counts summed over `info`'s ranks (every rank must enter)."""
    _COUNTING.append(info)
    try:
        yield
    finally:
        _COUNTING.pop()


def global_count(count: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """(sum over ranks of `count`, world size) inside a distributed `counts_over_ranks`, else None.

    `count` is a float tensor of a loss's normalisers (matches per head, say); every rank of the
    step calls this once per loss call, in the same order, so the all-reduce pairs up.
    """
    if not _COUNTING or not _COUNTING[-1].distributed:
        return None
    total = count.detach().to(torch.float64).clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(count.dtype), _COUNTING[-1].world_size
