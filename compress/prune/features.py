"""What the data-aware criteria read: each conv unit's output on a few images.

`collect_features` runs the model once per batch with a forward hook on every requested conv
unit (conv -> BN -> activation, so the maps are post-activation, what the next layers read)
and keeps a strided subsample of each map: at most `max_hw` x `max_hw` positions, taken on a
regular grid so that the sample is still a 2-D map (HRank takes matrix ranks of it). Memory
is then bounded by images x channels x max_hw^2 floats whatever the input size: 16 images of
full YOLOv3 at 16 x 16 are about 0.4 GB, YOLOv3-tiny a few MB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from compress.prune.graph import build_graph


def subsample(x: torch.Tensor, max_hw: int) -> torch.Tensor:
    """[N, C, H, W] -> the same on a regular grid of at most max_hw x max_hw positions."""
    h, w = x.shape[-2:]
    sh, sw = math.ceil(h / max_hw), math.ceil(w / max_hw)
    return x[..., ::sh, ::sw]


@torch.no_grad()
def collect_features(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    convs: Sequence[int] | None = None,
    max_hw: int = 16,
) -> dict[int, torch.Tensor]:
    """Conv index -> its unit's output on every image of `batches`, [N, C, h, w] float32 on
    the CPU (h, w <= max_hw). `convs`: the conv indices to keep (default: every conv of a
    prunable group)."""
    if convs is None:
        graph = build_graph(model.blocks)
        convs = [i for m in graph.prunable_groups().values() for i in m]
    got: dict[int, list[torch.Tensor]] = {i: [] for i in convs}

    def keeper(i: int):
        def hook(_module, _inputs, output):
            got[i].append(subsample(output.detach(), max_hw).float().cpu())

        return hook

    handles = [model.module_list[i].register_forward_hook(keeper(i)) for i in convs]
    was = model.training
    model.eval()
    try:
        for images in batches:
            model(images)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    if not all(got.values()):
        raise ValueError("collect_features needs at least one batch of images")
    return {i: torch.cat(v) for i, v in got.items()}


def as_samples(features: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] or [N, C, P] -> [C, N*P]: one row of samples per channel."""
    if features.dim() not in (3, 4):
        raise ValueError(f"features must be [N, C, H, W] or [N, C, P], got {tuple(features.shape)}")
    return features.flatten(2).transpose(0, 1).reshape(features.shape[1], -1).double()


def loss_grads(model: nn.Module, batches: Iterable[tuple[torch.Tensor, list]]) -> None:
    """Leave in `.grad` the detection loss's gradients summed over `batches` of (images,
    targets): what the `taylor` criterion reads."""
    model.train()
    model.zero_grad(set_to_none=True)
    for images, targets in batches:
        loss, _ = model.loss(model(images), targets)
        loss.backward()
    model.eval()
