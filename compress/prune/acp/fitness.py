"""The fitness of a candidate: accuracy proxy minus a penalty for missing the budget.

    fitness = accuracy - penalty * max(0, cost / target - 1)

cost is the candidate's FLOPs (or measured CPU latency) over the unpruned model's; target the
budget as that ratio. The original ACP has no budget term, so its swarm drifts back to the
widest structures (accuracy always prefers more channels); with it, the optimum sits at the
budget.

Accuracy proxies (`PROXIES`), each `(model, ctx) -> float`, higher is better:
  teacher  agreement with the unpruned model on the fitness images: soft Jaccard of the
           decoded class scores, sum(min(s, t)) / sum(max(s, t)), 1 = identical. No labels,
           cheap (one forward pass), and smooth where AP on a few images is a step function.
  ap50     person AP50 (pycocotools) on the fitness images: the real target, slower and
           noisy on a small subset.
  loss     minus the detector's own training loss on the labelled fitness images.
Budgets (`COSTS`), each `(model, ctx) -> float` (absolute; divided by the unpruned value):
  flops    torch.utils.flop_counter FLOPs (2 x MACs) at the input size
  latency  median CPU time of `latency_runs` batch-1 forward passes (noisy: only the ratio
           within one run means anything)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

FITNESS_DEFAULTS: dict[str, Any] = {
    "proxy": "teacher",  # teacher | ap50 | loss
    "images": 32,  # fitness images (held-out set)
    "batch_size": 8,
    "budget": "flops",  # flops | latency
    "target": 0.5,  # cost ratio to the unpruned model
    "penalty": 2.0,
    "bn_batches": 4,  # BN recalibration batches (training images, no augmentation)
    "train_steps": 0,  # optional SGD steps per candidate (0 = inheritance + BN only)
    "train_lr": 1.0e-3,
    "latency_runs": 10,
}


@dataclass
class Context:
    """What every candidate's evaluation shares: images, teacher outputs, unpruned costs."""

    input_size: tuple[int, int]
    images: list[torch.Tensor]  # fitness image batches
    labelled: list[tuple[torch.Tensor, list[dict]]]  # same images with targets
    dataset: Any  # the fitness images as a dataset (ap50)
    teacher_scores: list[torch.Tensor] = field(default_factory=list)
    base_cost: float = 1.0
    latency_runs: int = 10


@torch.no_grad()
def _scores(model: nn.Module, images: list[torch.Tensor]) -> list[torch.Tensor]:
    model.eval()
    return [model.decode(model(x))[1] for x in images]


def proxy_teacher(model: nn.Module, ctx: Context) -> float:
    num = den = 0.0
    for s, t in zip(_scores(model, ctx.images), ctx.teacher_scores):
        num += float(torch.minimum(s, t).sum())
        den += float(torch.maximum(s, t).sum())
    return num / den if den > 0 else 1.0


def proxy_ap50(model: nn.Module, ctx: Context) -> float:
    from compress.evaluate import evaluate_detector

    model.eval()
    return float(evaluate_detector(model, ctx.dataset, batch_size=len(ctx.images[0]))["AP50"])


@torch.no_grad()
def proxy_loss(model: nn.Module, ctx: Context) -> float:
    model.eval()
    losses = [float(model.loss(model(x), t)[0]) for x, t in ctx.labelled]
    return -sum(losses) / max(1, len(losses))


PROXIES: dict[str, Callable[[nn.Module, Context], float]] = {
    "teacher": proxy_teacher,
    "ap50": proxy_ap50,
    "loss": proxy_loss,
}


def cost_flops(model: nn.Module, ctx: Context) -> float:
    from compress.evaluate import count_flops

    return float(count_flops(model, ctx.input_size))


@torch.no_grad()
def cost_latency(model: nn.Module, ctx: Context) -> float:
    model.eval()
    x = ctx.images[0][:1]
    model(x)  # warm-up
    times = []
    for _ in range(max(1, ctx.latency_runs)):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


COSTS: dict[str, Callable[[nn.Module, Context], float]] = {
    "flops": cost_flops,
    "latency": cost_latency,
}


def combine(accuracy: float, cost_ratio: float, cfg: dict[str, Any]) -> float:
    excess = max(0.0, cost_ratio / float(cfg["target"]) - 1.0)
    return accuracy - float(cfg["penalty"]) * excess


def check(cfg: dict[str, Any]) -> None:
    if cfg["proxy"] not in PROXIES:
        raise ValueError(f"fitness.proxy {cfg['proxy']!r}; known: {', '.join(PROXIES)}")
    if cfg["budget"] not in COSTS:
        raise ValueError(f"fitness.budget {cfg['budget']!r}; known: {', '.join(COSTS)}")
    if not 0 < float(cfg["target"]) <= 1:
        raise ValueError(f"fitness.target {cfg['target']}: a cost ratio in (0, 1]")
