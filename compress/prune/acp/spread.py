"""A structure search's fitness evaluations spread over torchrun's ranks.

    torchrun --nproc_per_node N -m compress prune --method pso|ga|random|... --recipe R --out O

Rank 0 runs the search as one process would: the optimiser, the cache, the state, the log and
every file are its alone. Each batch the optimiser proposes, it sends the structures not yet
in the cache (each once, in the batch's order) to every rank; structure i is evaluated on rank
i mod N and the records are all-gathered back into that order. The optimiser therefore gets
the same fitness values in the same order as in one process and needs no code of its own: any
`ask`/`tell` optimiser spreads. That holds because a candidate's fitness is a function of its
widths alone (fixed fitness images, BN recalibration on fixed batches, training steps seeded
with the search's seed, search.py `Search.build`), not of the rank or of what else that rank
evaluated.

The ranks other than 0 `serve`: evaluate their share of each batch until rank 0's search ends.
Then every rank leaves the process group, and the rest of the prune run (refit, recovery,
evaluation, saving) is rank 0's alone, a one-process run; the others exit. That keeps every
writer on one rank and needs no DDP in the recovery.

Collectives are Python-object broadcasts and all-gathers (a record is a small dict), on the
group `compress prune` joins over gloo, whatever the device: the candidates are built and
scored where the unpruned model is, on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch.distributed as dist

from compress.train.distributed import DistInfo, leave_group

T = TypeVar("T")
R = TypeVar("R")

_STOP = None  # the batch that tells the other ranks the search has ended


def share(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items rank `rank` evaluates: every world_size-th from its own index on (round robin,
    so a batch's wide and narrow structures fall on every rank alike)."""
    return list(items[rank::world_size])


def interleave(parts: Sequence[Sequence[R]]) -> list[R]:
    """The inverse of `share`: per-rank results back into the items' order."""
    out: list[R] = []
    for i in range(max((len(p) for p in parts), default=0)):
        out.extend(p[i] for p in parts if i < len(p))
    return out


class Ranks:
    """The ranks a search's evaluations spread over (one process: a plain loop)."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self.open = info.distributed  # other ranks serve (False alone, and once closed)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Rank 0: `[fn(x) for x in items]`, each rank computing its share."""
        if not self.open:
            return [fn(x) for x in items]
        box: list[Any] = [list(items)]
        dist.broadcast_object_list(box, src=0)
        return self._gather(fn, box[0])

    def _gather(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        mine = [fn(x) for x in share(items, self.info.rank, self.info.world_size)]
        parts: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(parts, mine)
        return interleave(parts)

    def serve(self, fn: Callable[[T], R]) -> int:
        """A rank other than 0: evaluate this rank's share of every batch rank 0 sends until
        its search ends, then leave the group. Returns the number of batches served."""
        if self.info.is_main:
            raise RuntimeError("rank 0 runs the search; only the other ranks serve it")
        batches = 0
        while True:
            box: list[Any] = [None]
            dist.broadcast_object_list(box, src=0)
            if box[0] is _STOP:
                break
            self._gather(fn, box[0])
            batches += 1
        self.open = False
        leave_group()
        return batches

    def close(self) -> None:
        """Rank 0, once its search has ended: release the serving ranks and leave the group
        (from here on this process runs alone)."""
        if not self.open:
            return
        dist.broadcast_object_list([_STOP], src=0)
        self.open = False
        leave_group()
