"""Channel scores of any registered criterion in one call, whatever it reads.

`score_channels` gives each criterion what it declares it needs (`Importance.needs_grad`,
`needs_features`, `needs_teacher`) and returns `channel.conv_scores`; the model is left as it
was (gradient criteria run on a copy: the detection loss runs in training mode, which moves
BN running statistics).

    scores = score_channels(model, "hrank", images=[x])               # feature criteria
    scores = score_channels(model, "output_taylor", images=[x], teacher=unpruned)
    scores = score_channels(model, "taylor", labelled=[(x, targets)])  # loss gradients
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from compress.prune.channel import conv_scores
from compress.prune.features import collect_features, loss_grads
from compress.prune.graph import ChannelGraph, build_graph
from compress.prune.importance import Importance, build_importance


def score_channels(
    model: nn.Module,
    criterion: str | Importance,
    images: Sequence[torch.Tensor] = (),
    labelled: Sequence[tuple[torch.Tensor, list[dict[str, Any]]]] = (),
    teacher: nn.Module | None = None,
    features: dict[int, torch.Tensor] | None = None,
    graph: ChannelGraph | None = None,
    max_hw: int = 16,
) -> dict[int, torch.Tensor]:
    """Conv index -> channel scores of `criterion` (a registry name or an instance).
    `images`: unlabelled batches (feature maps, output_taylor); `labelled`: (images, targets)
    batches (taylor); `teacher`: what output_taylor distils from (default: `model` itself);
    `features`: maps already collected on `images` (reused instead of collected again)."""
    crit = build_importance(criterion) if isinstance(criterion, str) else criterion
    name = criterion if isinstance(criterion, str) else type(criterion).__name__
    graph = graph or build_graph(model.blocks)
    work = model
    if crit.needs_grad:
        if not labelled:
            raise ValueError(f"{name} needs labelled batches to take loss gradients on")
        work = copy.deepcopy(model)
        loss_grads(work, labelled)
    if (crit.needs_features and features is None or crit.needs_teacher) and not images:
        raise ValueError(f"{name} needs a few unlabelled image batches (images=)")
    if crit.needs_teacher:
        crit.prepare(teacher if teacher is not None else model, work, images)
    if crit.needs_features and features is None:
        features = collect_features(model, images, max_hw=max_hw)
    return conv_scores(work, crit, graph, features=features if crit.needs_features else None)
