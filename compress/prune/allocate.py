"""Layer-rate allocators: how many channels each layer keeps at a FLOPs goal.

A criterion scores channels; an allocator decides each prunable group's keep ratio, and the
group's best-scored channels (by the criterion) fill it. Every allocator hits the goal: the
one free knob (a global threshold, a common fraction, or a scale factor on per-layer
retentions) is found by bisection on FLOPs, with `round_to` / `min_channels` /
`min_fraction` applied to every layer as in `channel.choose_channels`.

Registry: `ALLOCATORS[name](context, flops_goal) -> Allocation`.
- `global`: one threshold on the (layer-normalised) scores of all layers: plain global
  ranking, what the slimming method does.
- `uniform`: every layer drops the same fraction (`channel.choose_uniform`).
- `entropy`: layer entropy of the feature maps sets the retention (a layer whose outputs hold
  less information keeps fewer filters).
- `boxplot`: layer entropy and mean filter L1 norm, each clipped to the box-plot (IQR) fences
  across layers, fused into one information richness that sets the retention.
- `ga_correlation`: a genetic algorithm over the per-layer ratios (filters inside layers by
  the scores given, correlation independence in the criteria table), fitness = how well the
  cut model agrees with the unpruned one on a few images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.prune.channel import (
    Plan,
    _segment_keep,
    choose_channels,
    choose_uniform,
    compact,
    group_scores,
    keep_count,
)
from compress.prune.features import as_samples
from compress.prune.graph import ChannelGraph, conv_unit


@dataclass
class Floors:
    """The per-layer limits every plan respects (as in `choose_channels`)."""

    round_to: int = 8
    min_channels: int = 8
    min_fraction: float = 0.0

    def args(self) -> tuple[int, int, float]:
        return int(self.round_to), int(self.min_channels), float(self.min_fraction)


class FlopCounter:
    """Conv FLOPs (2 x MACs, as `evaluate.count_flops` counts them) of the model a plan would
    build, without building it: the spatial sizes do not change with the widths."""

    def __init__(self, model: nn.Module, graph: ChannelGraph) -> None:
        self.graph = graph
        self.units: dict[int, tuple[int, int, int]] = {}  # conv -> (out h*w, kernel area, groups)
        hooks = []
        for i in graph.convs():
            conv = conv_unit(model.module_list[i])[0]

            def hook(m, _inp, out, i=i):
                self.units[i] = (
                    out.shape[-2] * out.shape[-1],
                    m.kernel_size[0] * m.kernel_size[1],
                    m.groups,
                )

            hooks.append(conv.register_forward_hook(hook))
        size = model.input_size
        h, w = (size, size) if isinstance(size, int) else (int(size[-2]), int(size[-1]))
        param = next(model.parameters())
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, h, w, device=param.device, dtype=param.dtype))
        finally:
            model.train(was)
            for x in hooks:
                x.remove()
        self.full = self(None)

    def __call__(self, plan: Plan | None) -> int:
        total = 0
        for i in self.graph.convs():
            hw, k, groups = self.units[i]
            layer = self.graph.layers[i]
            out = int(layer["filters"]) if plan is None else len(plan.keep[i])
            cin = (
                sum(w for _, w in self.graph.inputs[i])
                if plan is None
                else len(_segment_keep(self.graph.inputs[i], plan.keep))
            )
            total += 2 * hw * k * out * cin // groups
        return total


@dataclass
class AllocContext:
    """What an allocator may use. `features`: conv -> its unit's output maps (entropy,
    boxplot); `fitness`: a function scoring a cut model, lower = better (ga_correlation)."""

    model: nn.Module
    graph: ChannelGraph
    scores: dict[int, torch.Tensor]
    floors: Floors
    flops: FlopCounter
    features: dict[int, torch.Tensor] | None = None
    fitness: Callable[[nn.Module], float] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Allocation:
    plan: Plan
    flops: int
    details: dict[str, Any]

    def ratios(self, graph: ChannelGraph) -> dict[int, float]:
        """Group root -> kept fraction of its channels."""
        return {
            r: len(self.plan.keep[r]) / int(graph.layers[r]["filters"])
            for r in graph.prunable_groups()
        }


def plan_from_ratios(
    graph: ChannelGraph, scores: dict[int, torch.Tensor], ratios: dict[int, float], floors: Floors
) -> Plan:
    """Each prunable group keeps round(ratio x width) channels (floors applied), its
    best-scored ones."""
    keep: dict[int, list[int]] = {}
    groups = graph.groups()
    for root, s in group_scores(graph, scores).items():
        n = int(round(min(1.0, max(0.0, ratios[root])) * s.numel()))
        k = keep_count(n, s.numel(), *floors.args())
        idx = sorted(torch.topk(s, k).indices.tolist())
        for i in groups[root]:
            keep[i] = idx
    for i in graph.convs():
        keep.setdefault(i, list(range(int(graph.layers[i]["filters"]))))
    widths = {i: (int(graph.layers[i]["filters"]), len(keep[i])) for i in graph.convs()}
    return Plan(keep=keep, widths=widths)


def bisect(
    make: Callable[[float], Plan],
    flops: FlopCounter,
    goal: int,
    lo: float,
    hi: float,
    shrinks_with_x: bool,
    steps: int = 24,
) -> tuple[Plan, int, float]:
    """The plan of `make(x)`, x in [lo, hi], whose FLOPs are closest to `goal` (FLOPs are
    monotone in x: falling when `shrinks_with_x`)."""
    best: tuple[Plan, int, float] | None = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        plan = make(mid)
        f = flops(plan)
        if best is None or abs(f - goal) < abs(best[1] - goal):
            best = (plan, f, mid)
        too_big = f > goal
        if too_big == shrinks_with_x:
            lo = mid
        else:
            hi = mid
    assert best is not None
    return best


def global_ranking(ctx: AllocContext, goal: int) -> Allocation:
    """One threshold over every prunable channel's score. The scores are replaced by their
    position in one stable global sort first: the same cut as a threshold on the values
    wherever they differ, and one that can still land on the goal when a criterion gives
    many equal scores (HRank's ranks, a layer of zero gammas)."""
    gs = group_scores(ctx.graph, ctx.scores)
    roots = list(gs)
    flat = torch.cat([gs[r] for r in roots]).double()
    n = len(flat)
    position = torch.empty(n, dtype=torch.float64)
    position[torch.argsort(flat, stable=True)] = torch.arange(n, dtype=torch.float64) / n
    ranked: dict[int, torch.Tensor] = {}
    for r, part in zip(roots, position.split([len(gs[r]) for r in roots])):
        for i in ctx.graph.prunable_groups()[r]:
            ranked[i] = part

    def make(q: float) -> Plan:
        return choose_channels(ctx.graph, ranked, q - 0.5 / n, *ctx.floors.args())

    plan, f, q = bisect(make, ctx.flops, goal, 0.0, 1.0, shrinks_with_x=True)
    return Allocation(plan, f, {"quantile": q})


def uniform(ctx: AllocContext, goal: int) -> Allocation:
    def make(fraction: float) -> Plan:
        return choose_uniform(ctx.graph, ctx.scores, fraction, *ctx.floors.args())

    plan, f, fraction = bisect(make, ctx.flops, goal, 0.0, 0.99, shrinks_with_x=True)
    return Allocation(plan, f, {"fraction": fraction})


def channel_entropy(features: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Per channel: entropy (bits) of the histogram of its outputs over all images and
    positions, bins spanning the channel's own range (so the scale of a layer does not
    matter, only how its values spread); a constant channel has 0."""
    x = as_samples(features)
    lo, hi = x.min(1, keepdim=True).values, x.max(1, keepdim=True).values
    span = (hi - lo).clamp_min(1e-12)
    idx = ((x - lo) / span * bins).long().clamp_(0, bins - 1)
    counts = torch.zeros(len(x), bins, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones_like(x, dtype=torch.float64)
    )
    p = counts / counts.sum(1, keepdim=True)
    h = -(p * torch.log2(p.clamp_min(1e-300))).sum(1)
    return torch.where((hi - lo).squeeze(1) > 1e-12, h, torch.zeros_like(h))


def layer_entropy(ctx: AllocContext) -> dict[int, float]:
    """Group root -> mean channel entropy over its members' outputs."""
    if ctx.features is None:
        raise ValueError("the entropy allocators need features (collect_features)")
    return {
        r: float(torch.cat([channel_entropy(ctx.features[i]) for i in m]).mean())
        for r, m in ctx.graph.prunable_groups().items()
    }


def layer_l1(ctx: AllocContext) -> dict[int, float]:
    """Group root -> mean |w| of its filters (per weight, so layers of any fan-in compare)."""
    return {
        r: float(
            np.mean(
                [
                    conv_unit(ctx.model.module_list[i])[0].weight.detach().abs().mean().item()
                    for i in m
                ]
            )
        )
        for r, m in ctx.graph.prunable_groups().items()
    }


def iqr_clip(values: Sequence[float], k: float = 1.5) -> np.ndarray:
    """Values clipped to the box-plot fences [Q1 - k IQR, Q3 + k IQR] (Tukey)."""
    v = np.asarray(values, dtype=float)
    q1, q3 = np.percentile(v, [25, 75])
    return np.clip(v, q1 - k * (q3 - q1), q3 + k * (q3 - q1))


def retention_allocation(
    ctx: AllocContext, goal: int, info: dict[int, float], name: str
) -> Allocation:
    """Retention of each group proportional to its `info` (relative to the richest layer),
    the common scale found by bisection on FLOPs."""
    roots = list(info)
    v = np.array([info[r] for r in roots], dtype=float)
    rel = v / max(v.max(), 1e-12)
    top = 1.0 / max(rel[rel > 0].min() if (rel > 0).any() else 1.0, 1e-3)

    def make(scale: float) -> Plan:
        return plan_from_ratios(
            ctx.graph, ctx.scores, dict(zip(roots, np.minimum(1.0, scale * rel))), ctx.floors
        )

    plan, f, scale = bisect(make, ctx.flops, goal, 0.0, top, shrinks_with_x=False)
    return Allocation(
        plan, f, {"scale": scale, name: {int(r): round(float(x), 4) for r, x in zip(roots, v)}}
    )


def entropy(ctx: AllocContext, goal: int) -> Allocation:
    """Layer entropy -> retention (Luo & Wu 2017, 'An Entropy-based Pruning Method for CNN
    Compression'; entropy-guided layer rates): a layer whose outputs spread over fewer
    histogram states carries less information and keeps fewer filters."""
    return retention_allocation(ctx, goal, layer_entropy(ctx), "layer_entropy")


def boxplot(ctx: AllocContext, goal: int) -> Allocation:
    """Information richness = mean of layer entropy and mean filter L1 norm, each first clipped
    to its box-plot fences across layers (so one extreme layer does not squash the others'
    spread) and divided by its largest value; the richness sets each layer's retention."""
    ent, l1 = layer_entropy(ctx), layer_l1(ctx)
    roots = list(ent)
    e = iqr_clip([ent[r] for r in roots])
    n = iqr_clip([l1[r] for r in roots])
    rich = 0.5 * e / max(e.max(), 1e-12) + 0.5 * n / max(n.max(), 1e-12)
    out = retention_allocation(ctx, goal, dict(zip(roots, rich)), "richness")
    out.details["entropy_clipped"] = {int(r): round(float(x), 4) for r, x in zip(roots, e)}
    out.details["l1_clipped"] = {int(r): round(float(x), 6) for r, x in zip(roots, n)}
    return out


GA_DEFAULTS: dict[str, Any] = {"population": 8, "generations": 6, "mutation": 0.15, "seed": 0}


def ga_correlation(ctx: AllocContext, goal: int) -> Allocation:
    """Genetic algorithm over per-layer keep ratios (the global ranking of layers' ratios of
    correlation-independence pruning). Each genome is a ratio per prunable group; its plan is
    the genome times the common scale that lands on the FLOPs goal (so every individual is
    feasible and only the shape of the allocation evolves), filters chosen inside each layer
    by `ctx.scores`. Fitness = `ctx.fitness(cut model)`, lower = better (the criteria table
    uses the distillation loss against the unpruned model's outputs on a few images).
    Tournament selection, uniform crossover, Gaussian mutation, one elite; the uniform
    allocation and the global ranking's seed the first population."""
    if ctx.fitness is None:
        raise ValueError("ga_correlation needs a fitness function (AllocContext.fitness)")
    opts = {**GA_DEFAULTS, **ctx.options.get("ga", {})}
    rng = np.random.default_rng(int(opts["seed"]))
    roots = list(ctx.graph.prunable_groups())
    cache: dict[bytes, tuple[float, Allocation]] = {}

    def realise(genome: np.ndarray) -> Allocation:
        def make(scale: float) -> Plan:
            return plan_from_ratios(
                ctx.graph, ctx.scores, dict(zip(roots, np.minimum(1.0, scale * genome))), ctx.floors
            )

        plan, f, scale = bisect(
            make, ctx.flops, goal, 0.0, 1.0 / genome.min(), shrinks_with_x=False, steps=16
        )
        return Allocation(plan, f, {"scale": scale})

    def score(genome: np.ndarray) -> float:
        key = np.round(genome, 4).tobytes()
        if key not in cache:
            a = realise(genome)
            cache[key] = (float(ctx.fitness(compact(ctx.model, a.plan))), a)
        return cache[key][0]

    pop_n = max(2, int(opts["population"]))
    seed_global = np.array([x for x in global_ranking(ctx, goal).ratios(ctx.graph).values()])
    pop = [np.ones(len(roots)), np.clip(seed_global, 0.05, 1.0)]
    while len(pop) < pop_n:
        pop.append(np.clip(rng.uniform(0.2, 1.0, len(roots)), 0.05, 1.0))
    fit = [score(g) for g in pop]
    history = [min(fit)]
    for _ in range(int(opts["generations"])):
        order = np.argsort(fit)
        new = [pop[order[0]]]
        while len(new) < pop_n:
            a, b = (
                pop[min(rng.choice(pop_n, 2, replace=False), key=lambda j: fit[j])]
                for _ in range(2)
            )
            child = np.where(rng.random(len(roots)) < 0.5, a, b)
            child = np.clip(child + rng.normal(0, float(opts["mutation"]), len(roots)), 0.05, 1.0)
            new.append(child)
        pop = new
        fit = [score(g) for g in pop]
        history.append(min(fit))
    best = pop[int(np.argmin(fit))]
    value, alloc = cache[np.round(best, 4).tobytes()]
    alloc.details.update(
        {"fitness": value, "fitness_by_generation": history, "evaluations": len(cache)}
    )
    return alloc


ALLOCATORS: dict[str, Callable[[AllocContext, int], Allocation]] = {
    "global": global_ranking,
    "uniform": uniform,
    "entropy": entropy,
    "boxplot": boxplot,
    "ga_correlation": ga_correlation,
}
