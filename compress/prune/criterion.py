"""The channel criterion interface every criterion implements (see `importance.py` for the
registry). Its own module so that criteria in other modules (`feature_criteria`) can subclass
it while `importance.py` registers them, without an import circle."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn


class Importance(ABC):
    global_scale = False
    needs_grad = False  # the caller runs loss.backward() on a few batches before scoring
    needs_features = False  # the caller passes features=[N, C, H, W] of the unit's output
    needs_teacher = False  # the caller runs prepare(teacher, model, images) before scoring

    @abstractmethod
    def __call__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, following: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        """One score per output channel of `conv` (higher = more important)."""
