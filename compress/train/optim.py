"""Optimizers and learning-rate schedules, chosen by name from the recipe's `train:` section.

Weight decay goes to conv/linear weights only: biases and BN scales are left alone (the
slimming stage puts its own L1 on BN scales through a trainer hook).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _sgd(groups, cfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["momentum"] > 0
    )


def _adam(groups, cfg) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg["lr"], betas=(cfg["momentum"], 0.999))


def _adamw(groups, cfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=(cfg["momentum"], 0.999))


OPTIMIZERS: dict[str, Callable[[list, dict], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
}


# progress in [0, 1] after warm-up -> factor of the base lr, ending at `lrf`.
SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "cosine": lambda t, lrf: lrf + (1.0 - lrf) * 0.5 * (1.0 + math.cos(math.pi * t)),
    "linear": lambda t, lrf: 1.0 - (1.0 - lrf) * t,
    "constant": lambda t, lrf: 1.0,
}


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg["optimizer"]](param_groups(model, cfg["weight_decay"]), cfg)


def lr_factor(
    schedule: str, total_steps: int, warmup_steps: int, lrf: float
) -> Callable[[int], float]:
    """Linear warm-up from 0.1x over `warmup_steps` optimizer steps, then the schedule."""
    shape = SCHEDULES[schedule]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.1 + 0.9 * step / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        return shape(min((step - warmup_steps) / span, 1.0), lrf)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = cfg["epochs"] * steps_per_epoch
    warmup = min(round(cfg["warmup_epochs"] * steps_per_epoch), total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(cfg["scheduler"], total, warmup, cfg["lrf"])
    )
