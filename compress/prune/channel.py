"""Channel pruning of a Darknet YOLO: score -> choose (masks per group) -> compact.

`choose_channels` turns per-channel scores and a threshold into the kept channel indices of
each prunable group (a group = convs coupled by shortcuts, decided together): a channel stays
when its best score in the group is over the threshold; the count is rounded UP to a multiple
of `round_to` (8 by default: TensorRT and CPU kernels run whole vector widths, so odd widths
cost FLOPs without speed) and never below `min_channels` / `min_fraction` of the layer; the
kept channels are the top-scored ones.

`compact` rebuilds a smaller YOLO from the edited cfg blocks and copies the kept weights. The
output of a removed channel is not simply dropped: with its gamma near zero it is the constant
act(beta), so its contribution is folded into each consumer (conv weights summed over the
kernel x that constant) and subtracted from the consumer's BN running mean, or added to its
bias when it has no BN -- across routes, upsample, maxpool and shortcuts. Pruning channels
whose gamma is exactly 0 then changes the outputs only at the zero-padded borders of 3x3
consumers (and not at all when beta is 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.models.darknet_cfg import layer_refs
from compress.prune.graph import INPUT, ChannelGraph, build_graph, conv_unit, split_layers
from compress.prune.importance import Importance


@dataclass
class Plan:
    """What a channel pruning will do: kept output channels of every conv (by layer index)."""

    keep: dict[int, list[int]]  # conv index -> kept output channel indices (sorted)
    widths: dict[int, tuple[int, int]]  # conv index -> (before, after)

    def summary(self) -> dict[str, Any]:
        before = sum(b for b, _ in self.widths.values())
        after = sum(a for _, a in self.widths.values())
        return {
            "channels_before": before,
            "channels_after": after,
            "channels_removed": before - after,
        }


def conv_scores(
    model: nn.Module,
    importance: Importance,
    graph: ChannelGraph | None = None,
    features: Mapping[int, torch.Tensor] | None = None,
) -> dict[int, torch.Tensor]:
    """Per prunable conv: its channel scores (divided by the layer max unless the criterion's
    scale is global, so one threshold means the same thing in every layer). `features`
    (conv index -> its unit's output on a few images, `features.collect_features`) is passed
    to criteria that set `needs_features`."""
    graph = graph or build_graph(model.blocks)
    readers = following_weights(model, graph)
    if importance.needs_features and features is None:
        raise ValueError(
            f"{type(importance).__name__} scores feature maps: pass features= "
            "(compress.prune.features.collect_features on a few images)"
        )
    out: dict[int, torch.Tensor] = {}
    for members in graph.prunable_groups().values():
        for i in members:
            conv, bn, _ = conv_unit(model.module_list[i])
            extra = {"features": features[i]} if importance.needs_features else {}
            s = importance(conv, bn, readers.get(i, []), **extra).detach().float().cpu()
            if not importance.global_scale:
                s = s / s.max().clamp_min(1e-12)
            out[i] = s
    return out


def following_weights(model: nn.Module, graph: ChannelGraph) -> dict[int, list[torch.Tensor]]:
    """Conv index -> the weight slices [out, its channels, kh, kw] of every conv that reads its
    output (through max-pools, upsampling and routes)."""
    out: dict[int, list[torch.Tensor]] = {}
    for j in graph.convs():
        weight = conv_unit(model.module_list[j])[0].weight
        offset = 0
        for producer, width in graph.inputs[j]:
            if producer != INPUT:
                out.setdefault(producer, []).append(weight[:, offset : offset + width])
            offset += width
    return out


def group_scores(graph: ChannelGraph, scores: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Group root -> per-channel score: the best member's (the union of the members' masks)."""
    return {
        r: torch.stack([scores[i] for i in m]).amax(0) for r, m in graph.prunable_groups().items()
    }


def keep_count(
    n_over: int, width: int, round_to: int = 8, min_channels: int = 8, min_fraction: float = 0.0
) -> int:
    """Channels to keep: the count over the threshold, rounded up to `round_to`, floored."""
    floor = max(min_channels, math.ceil(min_fraction * width))
    k = max(n_over, floor)
    if round_to > 1:
        k = math.ceil(k / round_to) * round_to
    return min(k, width)


def choose_channels(
    graph: ChannelGraph,
    scores: dict[int, torch.Tensor],
    threshold: float,
    round_to: int = 8,
    min_channels: int = 8,
    min_fraction: float = 0.0,
) -> Plan:
    """Kept channels of every conv for one global threshold (see module docstring)."""
    return _plan(
        graph, scores, lambda s: int((s > threshold).sum()), round_to, min_channels, min_fraction
    )


def choose_uniform(
    graph: ChannelGraph,
    scores: dict[int, torch.Tensor],
    fraction: float,
    round_to: int = 8,
    min_channels: int = 8,
    min_fraction: float = 0.0,
) -> Plan:
    """The fixed baseline: every group drops the same `fraction` of its lowest-scored channels
    (a per-layer percentile, Li et al. 2017 style), with the same rounding and minimums."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"uniform fraction must be in [0, 1), got {fraction}")
    return _plan(
        graph,
        scores,
        lambda s: s.numel() - int(round(fraction * s.numel())),
        round_to,
        min_channels,
        min_fraction,
    )


def _plan(
    graph: ChannelGraph,
    scores: dict[int, torch.Tensor],
    n_over,
    round_to: int,
    min_channels: int,
    min_fraction: float,
) -> Plan:
    keep: dict[int, list[int]] = {}
    groups = graph.groups()
    for root, s in group_scores(graph, scores).items():
        k = keep_count(n_over(s), s.numel(), round_to, min_channels, min_fraction)
        idx = sorted(torch.topk(s, k).indices.tolist())
        for i in groups[root]:
            keep[i] = idx
    for i in graph.convs():
        keep.setdefault(i, list(range(int(graph.layers[i]["filters"]))))
    widths = {i: (int(graph.layers[i]["filters"]), len(keep[i])) for i in graph.convs()}
    return Plan(keep=keep, widths=widths)


def _segment_keep(segs: list[tuple[int, int]], keep: dict[int, list[int]]) -> list[int]:
    """Kept indices (into the full concatenated tensor) of a segment list."""
    out, offset = [], 0
    for conv, width in segs:
        idx = range(width) if conv == INPUT else keep[conv]
        out.extend(offset + j for j in idx)
        offset += width
    return out


@torch.no_grad()
def _removed_constants(
    model: nn.Module, graph: ChannelGraph, keep: dict[int, list[int]]
) -> list[torch.Tensor]:
    """Per layer: the constant each removed output channel would carry (0 for kept ones)."""
    consts: list[torch.Tensor] = []
    for i, block in enumerate(graph.layers):
        kind = block["type"]
        if kind == "convolutional":
            conv, bn, act = conv_unit(model.module_list[i])
            c = torch.zeros(conv.out_channels)
            removed = sorted(set(range(conv.out_channels)) - set(keep[i]))
            if removed and bn is not None:
                beta = bn.bias.detach().float().cpu()[removed]
                c[removed] = act(beta) if act is not None else beta
            consts.append(c)
        elif kind == "route":
            consts.append(torch.cat([consts[r] for r in layer_refs(block, i)]))
        elif kind == "shortcut":
            (ref,) = layer_refs(block, i)
            consts.append(consts[i - 1] + consts[ref])
        elif kind in ("yolo", "region", "detection"):
            consts.append(torch.zeros(0))
        else:  # maxpool, upsample: a constant map stays that constant
            consts.append(consts[i - 1] if i > 0 else torch.zeros(0))
    return consts


def pruned_blocks(blocks: list[dict[str, Any]], keep: dict[int, list[int]]) -> list[dict[str, Any]]:
    """The cfg blocks with each conv's `filters` set to its kept count ([net] kept as is)."""
    net, layers = split_layers(blocks)
    new = [dict(b) for b in layers]
    for i, idx in keep.items():
        new[i]["filters"] = len(idx)
    return ([dict(net)] if net is not None else []) + new


def rebuild(model: nn.Module, blocks: list[dict[str, Any]]) -> nn.Module:
    """A fresh detector of the same class from edited blocks, carrying its settings over."""
    net, layers = split_layers(blocks)
    return model.rebuilt(layers, net=net)


@torch.no_grad()
def compact(model: nn.Module, plan: Plan, fold: bool = True) -> nn.Module:
    """A new, smaller YOLO holding the kept channels of `model` (which is left untouched)."""
    graph = build_graph(model.blocks)
    new = rebuild(model, pruned_blocks(model.blocks, plan.keep))
    consts = _removed_constants(model, graph, plan.keep) if fold else None
    for i in graph.convs():
        conv, bn, _ = conv_unit(model.module_list[i])
        nconv, nbn, _ = conv_unit(new.module_list[i])
        out_idx = torch.tensor(plan.keep[i])
        in_idx = torch.tensor(_segment_keep(graph.inputs[i], plan.keep))
        w = conv.weight.detach()
        nconv.weight.copy_(w[out_idx][:, in_idx])
        delta = torch.zeros(len(out_idx))
        if consts is not None:
            c_in = consts[i - 1] if i > 0 else torch.zeros(conv.in_channels)
            if c_in.abs().sum() > 0:
                # The removed inputs' constant maps, through the kept filters: sum over kernel.
                delta = (w[out_idx].float().sum((2, 3)).cpu() @ c_in.float()).to(w.dtype)
        if conv.bias is not None:
            nconv.bias.copy_(conv.bias.detach()[out_idx] + (delta if bn is None else 0))
        if bn is not None:
            nbn.weight.copy_(bn.weight.detach()[out_idx])
            nbn.bias.copy_(bn.bias.detach()[out_idx])
            nbn.running_var.copy_(bn.running_var[out_idx])
            nbn.running_mean.copy_(bn.running_mean[out_idx] - delta.to(bn.running_mean.device))
            nbn.num_batches_tracked.copy_(bn.num_batches_tracked)
        elif conv.bias is None and delta.abs().sum() > 0:
            raise ValueError(f"layer {i}: no BN and no bias to fold removed channels into")
    new.train(model.training)
    return new.to(next(model.parameters()).device)


def prune_channels(
    model: nn.Module,
    importance: Importance,
    threshold_fn,
    round_to: int = 8,
    min_channels: int = 8,
    min_fraction: float = 0.0,
    fold: bool = True,
) -> tuple[nn.Module, Plan, Any]:
    """score -> threshold (learned from the scores) -> choose -> compact, in one call.

    `threshold_fn(values: np.ndarray) -> thresholds.Threshold`. Returns (new model, plan,
    threshold)."""
    graph = build_graph(model.blocks)
    scores = conv_scores(model, importance, graph)
    if not scores:
        raise ValueError("the model has no prunable conv layers")
    values = torch.cat(list(group_scores(graph, scores).values())).numpy()
    thr = threshold_fn(values)
    plan = choose_channels(graph, scores, thr.value, round_to, min_channels, min_fraction)
    return compact(model, plan, fold=fold), plan, thr
