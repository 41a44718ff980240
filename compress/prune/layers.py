"""Layer pruning: remove whole residual units (conv 1x1, conv 3x3, shortcut) of a Darknet YOLO.

Channel pruning alone thins layers but keeps their count, and on small devices the count (one
kernel launch per layer) is much of the latency. A residual unit computes `x + f(x)`; when the
last BN of `f` has all its gammas near zero, `f(x)` is close to a constant and the unit can go
(tanluren's layer pruning). Units are ranked by the mean |gamma| of that last BN; those under a
layer-level threshold (an estimator from `thresholds`, or the `count` lowest) are removed.
`darknet_cfg.drop_blocks` renumbers every route/shortcut reference, so the result loads,
trains and exports like any cfg.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.models.darknet_cfg import drop_blocks, layer_refs
from compress.prune.channel import rebuild
from compress.prune.graph import conv_unit


@dataclass
class ResidualUnit:
    shortcut: int  # layer index of the [shortcut]
    convs: tuple[int, int]  # the two conv layers before it
    score: float  # mean |gamma| of the last conv's BN

    def layers(self) -> list[int]:
        return [*self.convs, self.shortcut]


def residual_units(model: nn.Module) -> list[ResidualUnit]:
    """Every `conv, conv, shortcut(from=-3)` unit whose convs have BNs, in layer order."""
    units = []
    for i, block in enumerate(model.blocks):
        if block["type"] != "shortcut" or i < 3:
            continue
        if layer_refs(block, i) != [i - 3]:
            continue
        a, b = model.blocks[i - 2], model.blocks[i - 1]
        if a["type"] != "convolutional" or b["type"] != "convolutional":
            continue
        _, bn, _ = conv_unit(model.module_list[i - 1])
        if bn is None or conv_unit(model.module_list[i - 2])[1] is None:
            continue
        units.append(ResidualUnit(i, (i - 2, i - 1), float(bn.weight.detach().abs().mean())))
    return units


def choose_units(
    units: list[ResidualUnit],
    threshold_fn=None,
    count: int | None = None,
    max_fraction: float = 0.75,
) -> tuple[list[ResidualUnit], dict[str, Any]]:
    """Units to remove: the `count` lowest-scored, or those under `threshold_fn(scores)`.

    At most `max_fraction` of the units go, lowest first, so one estimator on a two-dozen
    sample cannot strip the backbone."""
    if not units:
        return [], {"method": "none", "reason": "no residual units in this model"}
    ranked = sorted(units, key=lambda u: u.score)
    cap = int(max_fraction * len(units))
    if count is not None:
        if count < 0:
            raise ValueError(f"layer pruning count must be >= 0, got {count}")
        n, how = min(count, cap), {"method": "count", "count": count}
    elif threshold_fn is not None:
        thr = threshold_fn(np.array([u.score for u in units]))
        n, how = min(sum(u.score < thr.value for u in units), cap), thr.as_dict()
    else:
        raise ValueError("layer pruning needs a threshold estimator or a count")
    chosen = sorted(ranked[:n], key=lambda u: u.shortcut)
    how.update({"units": len(units), "removed": len(chosen), "cap": cap})
    return chosen, how


@torch.no_grad()
def remove_units(model: nn.Module, units: list[ResidualUnit]) -> tuple[nn.Module, dict[int, int]]:
    """A new model without `units`; returns it and the old -> new index of each kept layer."""
    drop = {i for u in units for i in u.layers()}
    if not drop:
        return copy.deepcopy(model), {i: i for i in range(len(model.blocks))}
    new = rebuild(model, drop_blocks(model.blocks, drop))
    mapping, j = {}, 0
    for i in range(len(model.blocks)):
        if i not in drop:
            mapping[i] = j
            j += 1
    for old, idx in mapping.items():
        new.module_list[idx].load_state_dict(model.module_list[old].state_dict())
    new.train(model.training)
    return new.to(next(model.parameters()).device), mapping


def prune_layers(
    model: nn.Module, threshold_fn=None, count: int | None = None, max_fraction: float = 0.75
) -> tuple[nn.Module, dict[str, Any]]:
    """rank -> choose -> remove; returns (new model, report)."""
    units = residual_units(model)
    chosen, how = choose_units(units, threshold_fn, count, max_fraction)
    new, _ = remove_units(model, chosen)
    report = {
        "threshold": how,
        "scores": {u.shortcut: round(u.score, 6) for u in units},
        "removed_shortcuts": [u.shortcut for u in chosen],
        "layers_before": len(model.blocks),
        "layers_after": len(new.blocks),
    }
    return new, report
