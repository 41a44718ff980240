"""Sparsity training: an L1 pull on BN scaling factors, added through the trainer's hook.

After each `backward()` the hook adds `s * sign(gamma)` to the gradient of every prunable BN's
weight (Network Slimming). Channels the task does not need drift to zero and the |gamma|
distribution splits into two populations that `thresholds` can separate. `s` follows a
schedule (constant, or step-down after a fraction of the epochs so the last epochs recover
accuracy; tanluren's recipe); s about 1e-3, 1e-4 for large data (DESIGN.md section 4).

The hook also logs the |gamma| distribution at the end of every epoch (quantiles and a
histogram of log10|gamma|) for the report and the plots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn


def constant(s: float, epoch: int, epochs: int, **_: Any) -> float:
    return s


def step_down(
    s: float, epoch: int, epochs: int, at: float = 0.5, factor: float = 0.1, **_: Any
) -> float:
    """`s` until `at` of the epochs, then `s * factor`."""
    return s if epoch < int(at * epochs) else s * factor


SCHEDULES: dict[str, Callable[..., float]] = {"constant": constant, "step": step_down}

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def gamma_stats(bns: Iterable[nn.BatchNorm2d], bins: int = 40) -> dict[str, Any]:
    """Quantiles and a log10 histogram of |gamma| over the given BNs."""
    g = torch.cat([bn.weight.detach().abs().flatten().cpu() for bn in bns]).double().numpy()
    logs = np.log10(np.maximum(g, 1e-8))
    hist, edges = np.histogram(logs, bins=bins, range=(-8.0, 1.0))
    return {
        "channels": int(g.size),
        "mean": float(g.mean()),
        "quantiles": {str(q): float(np.quantile(g, q)) for q in QUANTILES},
        "below_1e-2": int((g < 1e-2).sum()),
        "log10_hist": {"counts": hist.tolist(), "edges": edges.tolist()},
    }


class BNL1Sparsity:
    """Trainer hook: `after_backward` adds the L1 sub-gradient, `on_epoch_end` logs gammas.

    Args:
        bns: the prunable BN layers (not the heads, not layers that must keep their width).
        s: L1 strength.
        epochs: planned epochs (the schedule needs them).
        schedule: a key of `SCHEDULES`; options go to it (`at`, `factor` for "step").

    Example:
        hook = BNL1Sparsity(prunable_bns(model), s=1e-3, epochs=10, schedule="step")
        train(detector, train_ds, val_ds, cfg, out_dir, hooks=[hook]); hook.log
    """

    def __init__(
        self,
        bns: Iterable[nn.BatchNorm2d],
        s: float,
        epochs: int,
        schedule: str = "constant",
        **options: Any,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(
                f"unknown sparsity schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}"
            )
        if s < 0:
            raise ValueError(f"sparsity strength s must be >= 0, got {s}")
        self.bns = list(bns)
        if not self.bns:
            raise ValueError("sparsity training got no BN layers to act on")
        self.s, self.epochs, self.schedule, self.options = s, max(int(epochs), 1), schedule, options
        self.log: list[dict[str, Any]] = [{"epoch": -1, "s": 0.0, **gamma_stats(self.bns)}]

    def strength(self, epoch: int) -> float:
        return SCHEDULES[self.schedule](self.s, epoch, self.epochs, **self.options)

    @torch.no_grad()
    def after_backward(self, model: nn.Module, epoch: int, step: int) -> None:
        s = self.strength(epoch)
        if s == 0:
            return
        for bn in self.bns:
            if bn.weight.grad is not None:
                bn.weight.grad.add_(torch.sign(bn.weight), alpha=s)

    def on_epoch_end(
        self, model: nn.Module, epoch: int, metrics: dict[str, Any] | None = None
    ) -> None:
        self.log.append({"epoch": int(epoch), "s": self.strength(epoch), **gamma_stats(self.bns)})
