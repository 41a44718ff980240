"""Adaptive joint filter grafting (Meng et al., CVPR 2020, "Filter Grafting for Deep Neural
Networks"; DESIGN.md section 4).

N >= 2 copies of the pruned network train with different lr / seed / augmentation. After
every epoch each conv layer of network i takes weights from network i-1 (a ring):

    W_i <- a * W_i + (1 - a) * W_{i-1},   a = A / pi * arctan(c * (H_i - H_{i-1})) + 0.5

H is the entropy of a 10-bin histogram of the conv's weights: the layer holding more
information keeps more of itself. "Joint": the conv's `a` is applied to the BN that follows it
(gamma, beta, running mean and variance), so conv and BN stay consistent. Filter level: one
coefficient per output channel, from the BN scaling factors, a_k = A/pi*arctan(c*(|g_i,k| -
|g_{i-1},k|)) + 0.5 (convs without a BN fall back to the layer coefficient).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.models.base import Detector
from compress.recover.common import best_point, budget_epochs, options, recovery_train_cfg
from compress.recover.together import train_together

DEFAULTS: dict[str, Any] = {
    "networks": 2,
    "A": 0.4,
    "c": 500.0,
    "bins": 10,
    "filter_level": False,
    "lr_scale": [1.0, 2.0, 0.5, 1.5],  # network k trains at lr * lr_scale[k]
    "augment": None,  # optional list of per-network augment settings
}


def entropy(weight: torch.Tensor, bins: int = 10) -> float:
    """Entropy (nats) of the histogram of a tensor's values over its own range."""
    w = weight.detach().float().flatten().cpu()
    hist = torch.histc(w, bins=bins, min=float(w.min()), max=float(w.max()))
    p = hist / hist.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def coefficient(
    info_self: torch.Tensor | float, info_other: torch.Tensor | float, A: float, c: float
):
    """a = A/pi * arctan(c * (info_self - info_other)) + 0.5 (scalar or per channel)."""
    diff = torch.as_tensor(info_self, dtype=torch.float64) - torch.as_tensor(
        info_other, dtype=torch.float64
    )
    return A / math.pi * torch.atan(c * diff) + 0.5


def conv_bn_pairs(
    model: nn.Module,
) -> list[tuple[str, nn.Conv2d, str | None, nn.BatchNorm2d | None]]:
    """Every Conv2d with the BatchNorm2d registered right after it (same width), if any.

    Registration order puts a BN right after its conv in Darknet blocks (conv, bn, act) and
    torchvision's Conv2dNormActivation, which is what both families use.
    """
    pairs: list[list[Any]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            pairs.append([name, module, None, None])
        elif isinstance(module, nn.BatchNorm2d) and pairs and pairs[-1][3] is None:
            if pairs[-1][1].out_channels == module.num_features:
                pairs[-1][2:] = [name, module]
    return [tuple(p) for p in pairs]


def _mix(tensor: torch.Tensor, other: torch.Tensor, a: torch.Tensor) -> None:
    a = a.to(tensor.device, torch.float32)
    if a.ndim == 1 and tensor.ndim > 1:
        a = a.view(-1, *([1] * (tensor.ndim - 1)))
    tensor.copy_(a * tensor.float() + (1 - a) * other.to(tensor.device).float())


@torch.no_grad()
def graft(
    nets: list[nn.Module],
    A: float = 0.4,
    c: float = 500.0,
    bins: int = 10,
    filter_level: bool = False,
) -> dict:
    """Graft every network from its ring neighbour, all from one snapshot; returns the log."""
    snapshots = [{k: v.detach().clone() for k, v in net.state_dict().items()} for net in nets]
    layers: dict[str, list[dict[str, Any]]] = {}
    for i, net in enumerate(nets):
        j = (i - 1) % len(nets)
        other = snapshots[j]
        own = snapshots[i]
        for name, conv, bn_name, bn in conv_bn_pairs(net):
            h_i, h_j = entropy(own[f"{name}.weight"], bins), entropy(other[f"{name}.weight"], bins)
            a = coefficient(h_i, h_j, A, c)
            if filter_level and bn is not None:
                a = coefficient(
                    own[f"{bn_name}.weight"].abs(), other[f"{bn_name}.weight"].abs(), A, c
                )
            _mix(conv.weight, other[f"{name}.weight"], a)
            if conv.bias is not None:
                _mix(conv.bias, other[f"{name}.bias"], a)
            if bn is not None:
                for key in ("weight", "bias", "running_mean", "running_var"):
                    _mix(getattr(bn, key), other[f"{bn_name}.{key}"], a)
            layers.setdefault(name, []).append(
                {
                    "network": i,
                    "from": j,
                    "H_self": h_i,
                    "H_other": h_j,
                    "a": float(a.mean()),
                    "bn": bn_name,
                }
            )
    return {"layers": layers}


def grafting(
    detector: Detector,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    teacher: Detector | None = None,
) -> tuple[Detector, dict[str, Any]]:
    """Adaptive joint grafting of `cfg["grafting"]["networks"]` copies; the best one is returned."""
    opts = options(cfg, "grafting", DEFAULTS)
    base = recovery_train_cfg(cfg, **budget_epochs(cfg, len(train_ds), int(opts["networks"])))

    def mix(nets: list[nn.Module], epoch: int) -> dict[str, Any]:
        return graft(nets, opts["A"], opts["c"], opts["bins"], opts["filter_level"])

    best, log = train_together(detector, train_ds, val_ds, base, opts, out_dir, mix)
    return best, {
        "method": "grafting",
        "settings": {**base, "grafting": opts},
        "best": best_point(log["curve"]),
        "images_seen": log["curve"][-1]["images_seen"] if log["curve"] else 0,
        "wall_s": log["curve"][-1]["wall_s"] if log["curve"] else 0.0,
        **log,
    }
