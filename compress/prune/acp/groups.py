"""The prunable channel groups of a detector, found by Torch-Pruning's DependencyGraph.

A *unit* is one group of coupled channels (a conv's outputs plus everything that must shrink
with them: its BN, a depthwise conv, the convs reading it, residual partners), named by the
group's root conv. Its width is the root conv's `out_channels`; a structure is one width per
unit. What must not shrink (SSD's final head convs, YOLO's prediction convs) is given per
family by `SETUPS`; add a family by adding a function there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from compress.prune.reconstruct import Target


def _ssd_setup(detector: nn.Module) -> dict[str, Any]:
    kw = detector.pruning_kwargs()
    return {
        "ignored_layers": list(kw.get("ignored_layers") or []),
        "unwrapped_parameters": kw.get("unwrapped_parameters"),
    }


def _yolo_setup(detector: nn.Module) -> dict[str, Any]:
    # The conv before each [yolo] layer predicts anchors x (5 + classes): it keeps its width.
    heads = [detector.module_list[i - 1].conv for i in detector.yolo_indices]
    return {"ignored_layers": heads, "unwrapped_parameters": None}


SETUPS: dict[str, Callable[[nn.Module], dict[str, Any]]] = {"ssd": _ssd_setup, "yolo": _yolo_setup}


@dataclass
class Unit:
    name: str  # module name of the group's root conv in the detector
    width: int  # its out_channels before pruning

    def module(self, detector: nn.Module) -> nn.Conv2d:
        return detector.get_submodule(self.name)


def setup(detector: nn.Module) -> dict[str, Any]:
    family = getattr(detector, "family", None)
    if family not in SETUPS:
        raise ValueError(f"ACP knows families {', '.join(SETUPS)}; got {family!r}")
    return SETUPS[family](detector)


def build_graph(detector: nn.Module) -> tuple[tp.DependencyGraph, dict[str, Any]]:
    """The DependencyGraph of `detector` traced at its input size (eval mode, CPU-cheap)."""
    opts = setup(detector)
    h, w = detector.input_size
    param = next(detector.parameters())
    was_training = detector.training
    detector.eval()
    # Torch-Pruning traces the autograd graph: a frozen model (a distillation teacher) would
    # show no groups at all, so parameters require grad while it traces.
    flags = [p.requires_grad for p in detector.parameters()]
    detector.requires_grad_(True)
    try:
        graph = tp.DependencyGraph().build_dependency(
            detector,
            example_inputs=torch.zeros(1, 3, h, w, device=param.device, dtype=param.dtype),
            unwrapped_parameters=opts["unwrapped_parameters"],
        )
    finally:
        detector.train(was_training)
        for p, flag in zip(detector.parameters(), flags):
            p.requires_grad_(flag)
    return graph, opts


def find_units(detector: nn.Module, graph: tp.DependencyGraph | None = None) -> list[Unit]:
    """The prunable groups in the order of the detector's modules (input side first)."""
    if graph is None:
        graph, opts = build_graph(detector)
    else:
        opts = setup(detector)
    names = {m: n for n, m in detector.named_modules()}
    roots = {
        names[g[0].dep.target.module]
        for g in graph.get_all_groups(
            ignored_layers=opts["ignored_layers"], root_module_types=[nn.Conv2d]
        )
    }
    order = [n for n, _ in detector.named_modules()]
    return [Unit(n, detector.get_submodule(n).out_channels) for n in sorted(roots, key=order.index)]


def channel_scores(detector: nn.Module, graph: tp.DependencyGraph, unit: Unit) -> torch.Tensor:
    """L1 magnitude of each root channel summed over the whole coupled group (Torch-Pruning's
    GroupMagnitudeImportance): the fallback ranking for weight inheritance."""
    group = graph.get_pruning_group(
        unit.module(detector), tp.prune_conv_out_channels, list(range(unit.width))
    )
    scores = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)(group)
    return scores.detach().float().cpu()


def prune_to(
    detector: nn.Module,
    keep: dict[str, list[int]],
    removed: dict[str, list[int]] | None = None,
) -> nn.Module:
    """Prune `detector` in place so that unit `name` keeps the root channels `keep[name]`
    (indices in the unpruned numbering; groups are disjoint, so order does not matter).
    `removed`, when given, receives every conv's removed output channels by module name
    (the group's root and the convs coupled to it), which a reconstruction needs."""
    graph, _ = build_graph(detector)
    names = {m: n for n, m in detector.named_modules()}
    for name, idxs in keep.items():
        conv = detector.get_submodule(name)
        drop = sorted(set(range(conv.out_channels)) - set(int(i) for i in idxs))
        if not drop:
            continue
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, drop)
        if removed is not None:
            for item in group.items:
                module = item.dep.target.module
                if (
                    isinstance(module, nn.Conv2d)
                    and item.dep.handler.__name__ == "prune_out_channels"
                ):
                    removed[names[module]] = sorted(int(i) for i in item.idxs)
        group.prune()
    if hasattr(detector, "sync_blocks"):  # YOLO: the cfg must say the new filter counts
        detector.sync_blocks()
    return detector


def refit_targets(
    original: nn.Module, pruned: nn.Module, removed: dict[str, list[int]]
) -> list[Target]:
    """The convs of `pruned` (a `prune_to` copy of `original`) whose inputs were cut, in module
    order, each with its kept output channels and the BN right after it (from the graph)."""
    graph, _ = build_graph(original)
    names = {m: n for n, m in original.named_modules()}
    out = []
    for name, conv in original.named_modules():
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
            continue
        new = pruned.get_submodule(name)
        if new.in_channels == conv.in_channels:
            continue
        after = (
            [n.module for n in graph.module2node[conv].outputs] if conv in graph.module2node else []
        )
        bn = after[0] if len(after) == 1 and isinstance(after[0], nn.BatchNorm2d) else None
        gone = set(removed.get(name, []))
        out.append(
            Target(
                name,
                conv,
                new,
                [i for i in range(conv.out_channels) if i not in gone],
                bn,
                pruned.get_submodule(names[bn]) if bn is not None else None,
            )
        )
    return out


def widths_of(detector: nn.Module, units: list[Unit]) -> list[int]:
    return [detector.get_submodule(u.name).out_channels for u in units]
