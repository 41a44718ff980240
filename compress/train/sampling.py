"""Data order and augmentation that depend only on (seed, epoch, index).

- `ResumableSampler` is a DistributedSampler (one shuffled order per epoch, split across
  ranks; one rank = the whole order) that can start part-way through an epoch, so a resumed
  run reads exactly the batches the killed run had not read yet.
- `SeededSamples` seeds the python / numpy / torch RNGs from (seed, epoch, index) around each
  `dataset[i]`, so random augmentation gives the same sample whether it runs in the main
  process or a worker, on one rank or several, uninterrupted or after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    def __init__(
        self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Epoch `epoch`, skipping the first `start` indices of this rank's share."""
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch (CPU) RNGs inside the block, restore them after."""
    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)


class SeededSamples(Dataset):
    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        with seeded_rng(seed):
            return self.dataset[index]
