"""Exponential moving average of the weights (and float buffers), on torch's AveragedModel.

The decay ramps up as `decay * (1 - exp(-updates / tau))`, so the first updates follow the
model closely instead of averaging in the random start (the YOLOv5 schedule).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ramped_ema_fn(decay: float, tau: float):
    """multi_avg_fn for AveragedModel: float tensors lerp, integer buffers are copied."""

    @torch.no_grad()
    def update(ema_tensors: list[torch.Tensor], tensors: list[torch.Tensor], num_averaged) -> None:
        d = decay * (1.0 - math.exp(-float(num_averaged) / tau))
        if ema_tensors[0].is_floating_point():
            torch._foreach_lerp_(
                ema_tensors, [t.to(e.dtype) for e, t in zip(ema_tensors, tensors)], 1.0 - d
            )
        else:
            for e, t in zip(ema_tensors, tensors):
                e.copy_(t)

    return update


def build_ema(model: nn.Module, decay: float = 0.9999, tau: float = 2000.0) -> AveragedModel:
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
    ema = AveragedModel(model, multi_avg_fn=ramped_ema_fn(decay, tau), use_buffers=True)
    ema.requires_grad_(False)
    return ema.eval()
