"""Multi-network coordinated training: copies that learn from each other during training.

N identical networks train side by side with different lr / seed (/ augmentation). After
every epoch but the last, each network's validation loss L_k is measured and the networks are
pulled toward a consensus built from the better ones. The update rule:

    w_k  = softmax_k( -L_k / (T * mean(L)) )          (lower val loss -> larger weight)
    W*   = sum_k w_k * W_k                            (every float tensor of the state)
    W_k <- (1 - beta) * W_k + beta * W*               (beta = pull, 0.5 by default)

T (temperature, relative to the mean loss, 0.05 by default) sets how sharply the better
network dominates: losses 1.00 and 1.05 give weights 0.73 / 0.27. Unlike grafting's fixed
ring, every network receives the ensemble's best information each epoch, which is what makes
it converge faster; `pull < 1` keeps the copies apart so they keep exploring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from compress.models.base import Detector
from compress.recover.common import best_point, budget_epochs, options, recovery_train_cfg
from compress.recover.together import train_together
from compress.train.engine import default_collate, to_device

DEFAULTS: dict[str, Any] = {
    "networks": 3,
    "temperature": 0.05,
    "pull": 0.5,
    "lr_scale": [1.0, 2.0, 0.5, 1.5],
    "augment": None,
    "val_batches": None,  # cap on validation batches for the loss (None = all)
}


@torch.no_grad()
def validation_loss(
    detector: Detector, dataset: Any, batch_size: int = 8, max_batches: int | None = None
) -> float:
    """Mean `detector.loss` over the validation set, in eval mode (running BN statistics)."""
    device = next(detector.parameters()).device
    was_training = detector.training
    detector.eval()
    total, count = 0.0, 0
    try:
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=default_collate())
        for i, (images, targets) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            loss, _ = detector.loss(detector(images.to(device)), to_device(targets, device))
            total += float(loss) * len(targets)
            count += len(targets)
    finally:
        detector.train(was_training)
    return total / max(count, 1)


def combination_weights(losses: list[float], temperature: float) -> torch.Tensor:
    """softmax(-L / (T * mean L)): the documented rule above."""
    loss = torch.tensor(losses, dtype=torch.float64)
    return torch.softmax(-loss / (temperature * loss.mean().clamp_min(1e-12)), 0)


@torch.no_grad()
def combine(nets: list[nn.Module], weights: torch.Tensor, pull: float) -> None:
    """W_k <- (1 - pull) W_k + pull * sum_j w_j W_j for every float tensor of the state."""
    states = [net.state_dict() for net in nets]
    for key, ref in states[0].items():
        if not ref.is_floating_point():
            continue
        consensus = sum(float(w) * s[key].float().to(ref.device) for w, s in zip(weights, states))
        for s in states:
            t = s[key]
            t.copy_((1 - pull) * t.float() + pull * consensus.to(t.device))


def multinet(
    detector: Detector,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    teacher: Detector | None = None,
) -> tuple[Detector, dict[str, Any]]:
    """Coordinated training of `cfg["multinet"]["networks"]` copies; the best one is returned."""
    if val_ds is None:
        raise ValueError(
            "multinet: the combination weights come from validation losses; give a val set"
        )
    opts = options(cfg, "multinet", DEFAULTS)
    base = recovery_train_cfg(cfg, **budget_epochs(cfg, len(train_ds), int(opts["networks"])))
    if not 0.0 <= float(opts["pull"]) <= 1.0 or float(opts["temperature"]) <= 0:
        raise ValueError(f"multinet: need 0 <= pull <= 1 and temperature > 0, got {opts}")

    def mix(nets: list[nn.Module], epoch: int) -> dict[str, Any]:
        losses = [
            validation_loss(n, val_ds, base.get("batch_size", 8), opts["val_batches"]) for n in nets
        ]
        weights = combination_weights(losses, float(opts["temperature"]))
        combine(nets, weights, float(opts["pull"]))
        return {"val_losses": losses, "weights": weights.tolist()}

    best, log = train_together(detector, train_ds, val_ds, base, opts, out_dir, mix)
    return best, {
        "method": "multinet",
        "settings": {**base, "multinet": opts},
        "rule": "w = softmax(-L/(T*mean L)); W* = sum w W; W <- (1-pull) W + pull W*",
        "best": best_point(log["curve"]),
        "images_seen": log["curve"][-1]["images_seen"] if log["curve"] else 0,
        "wall_s": log["curve"][-1]["wall_s"] if log["curve"] else 0.0,
        **log,
    }
