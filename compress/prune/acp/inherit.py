"""A candidate structure's weights: which channels each unit keeps, then BN recalibration and
an optional few training steps, so the fitness judges the structure, not a broken start.

Channel choice for a unit cut to k channels (`inherit: cluster`): the clusters'
representatives (and noise channels) first, ranked by their group L1 magnitude; when k is
larger than the number of representatives, the rest of the k by L1 among the others; when
smaller, the k representatives of largest L1. `inherit: l1` ranks every channel by L1 only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from compress.prune.acp.cluster import Clusters
from compress.prune.acp.groups import Unit, prune_to


def rank_order(scores: torch.Tensor, clusters: Clusters | None = None) -> list[int]:
    """A unit's channels in the order a cut keeps them: representatives of clusters first,
    each part by descending score."""
    order = [int(i) for i in torch.argsort(scores, descending=True, stable=True)]
    if clusters is not None:
        reps = set(clusters.representatives)
        order = [i for i in order if i in reps] + [i for i in order if i not in reps]
    return order


def keep_indices(k: int, scores: torch.Tensor, clusters: Clusters | None = None) -> list[int]:
    """The k channels a unit keeps (ascending), representatives of clusters first."""
    return sorted(rank_order(scores, clusters)[:k])


def inherit(
    detector: nn.Module,
    units: Sequence[Unit],
    widths: Sequence[int],
    scores: dict[str, torch.Tensor],
    clusters: dict[str, Clusters] | None = None,
    removed: dict[str, list[int]] | None = None,
) -> nn.Module:
    """A pruned deep copy of `detector` with unit i cut to widths[i] channels (`removed`: see
    `groups.prune_to`)."""
    model = copy.deepcopy(detector)
    keep = {
        u.name: keep_indices(int(w), scores[u.name], (clusters or {}).get(u.name))
        for u, w in zip(units, widths)
        if int(w) < u.width
    }
    return prune_to(model, keep, removed)


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[torch.Tensor]) -> bool:
    """Re-estimate every BN's running mean/var on `batches` (train-mode forwards, no grad,
    cumulative average); returns False when the model has no BN (SSD300-VGG16)."""
    norms = batchnorms(model)
    if not norms or not batches:
        return False
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts the same
    param = next(model.parameters())
    was_training = model.training
    model.train()
    try:
        for images in batches:
            model(images.to(param.device, param.dtype))
    finally:
        for bn, m in zip(norms, momenta):
            bn.momentum = m
        model.train(was_training)
    return True


def train_steps(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, list[dict]]],
    steps: int,
    lr: float = 1e-3,
    momentum: float = 0.9,
) -> list[float]:
    """A few SGD steps with the detector's own loss on fixed (images, targets) batches."""
    if steps <= 0 or not batches:
        return []
    param = next(model.parameters())
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum
    )
    losses = []
    model.train()
    for step in range(steps):
        images, targets = batches[step % len(batches)]
        targets = [
            {k: v.to(param.device) if torch.is_tensor(v) else v for k, v in t.items()}
            for t in targets
        ]
        loss, _ = model.loss(model(images.to(param.device, param.dtype)), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
