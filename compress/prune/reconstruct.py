"""Least-squares reconstruction of a channel-pruned YOLO from a few unlabelled images.

After `channel.compact`, every conv that lost input channels computes something else than it
did: the removed channels' signal is gone (the beta fold only restores their constant part).
Here each such conv is refitted, layer by layer in network order, so that on real images its
output (before BN) matches the unpruned model's output for the kept filters:

    W', b' = argmin  sum || W' * x_pruned + b' - y_original ||^2  +  lam * || W' - W_fold ||^2

where `x_pruned` is what the pruned network (already refitted up to here) feeds the conv, so
errors do not pile up from layer to layer (He et al. 2017, "Channel Pruning for Accelerating
Very Deep Neural Networks"; Luo et al. 2017, ThiNet). The problem is linear in the weights:
the conv's input patches (`unfold`) at a sample of positions are the rows, so one solve of a
(Cin*k*k + 1)^2 system per layer does it. The ridge pulls toward the folded weights, which
keeps layers with few samples per unknown stable. The intercept goes into the BN's running
mean (or the conv bias for BN-less head convs).

It needs no labels and no gradient, so a few dozen images recover most of what a one-shot
prune loses before any fine-tuning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from compress.prune.channel import Plan, _segment_keep
from compress.prune.graph import build_graph, conv_unit

log = logging.getLogger(__name__)


# `prune.reconstruct` settings, the same for slimming and ACP: images refitted on, output
# positions sampled per image, ridge (fraction of the mean diagonal of X^T X), batch size.
REFIT_DEFAULTS: dict[str, Any] = {"images": 64, "positions": 256, "ridge": 1.0e-2, "batch_size": 8}


def refit_images(
    dataset: Any, detector: nn.Module, images: int, batch_size: int
) -> list[torch.Tensor]:
    """The first `images` images of `dataset` as `detector` sees them at evaluation (no
    augmentation: the unpruned model's outputs are the targets, so both see the same pixels)."""
    from compress.data.build import batches, eval_view, first_images

    view = first_images(eval_view(dataset, detector), images)
    return [x for x, _ in batches(view, batch_size)]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def _capture(model: nn.Module, conv: nn.Conv2d, images: torch.Tensor, what: str) -> torch.Tensor:
    """The input or output of `conv` when `model` runs on `images` (the rest is not computed)."""
    got: dict[str, torch.Tensor] = {}

    def hook(_m, inputs, output):
        got["x"] = inputs[0] if what == "input" else output
        raise _Stop

    handle = conv.register_forward_hook(hook)
    try:
        model(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got["x"]


def _positions(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.arange(n) if n <= k else torch.randperm(n, generator=gen)[:k]


def patches(x: torch.Tensor, conv: nn.Conv2d, pick: torch.Tensor, out_w: int) -> torch.Tensor:
    """`F.unfold(x, ...)[:, :, pick]` for `conv`'s geometry, built from the picked output
    positions only: unfolding whole 208x208 maps to keep a few hundred columns of them cost
    most of the refit's time and memory. `out_w`: width of the conv's output map."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
    )
    oy, ox = pick // out_w, pick % out_w
    padded = F.pad(x, (pw, pw, ph, ph))
    taps = [
        padded[:, :, oy * sh + i * dh, ox * sw + j * dw] for i in range(kh) for j in range(kw)
    ]  # each [B, Cin, P]
    # unfold's row order is channel-major, then kernel row, then kernel column
    return torch.stack(taps, 2).reshape(x.shape[0], -1, len(pick))


@dataclass
class Target:
    """One conv to refit: the unpruned conv (and the BN after it, if any), its pruned copy, and
    which of the unpruned conv's output channels the copy kept."""

    name: str
    original: nn.Conv2d
    pruned: nn.Conv2d
    out_idx: list[int]
    original_bn: nn.BatchNorm2d | None = None
    pruned_bn: nn.BatchNorm2d | None = None


@torch.no_grad()
def reconstruct(
    original: nn.Module,
    pruned: nn.Module,
    plan: Plan,
    batches: Iterable[torch.Tensor],
    positions: int = 256,
    ridge: float = 1e-2,
    seed: int = 0,
) -> dict[str, Any]:
    """Refit, in place, every conv of a Darknet YOLO pruned by `plan` whose input channels
    were cut (see module doc). `batches`: image tensors as the detector takes them.
    `positions`: output positions sampled per image. `ridge`: lam as a fraction of the mean
    diagonal of X^T X. Returns per layer the relative output error before and after."""
    graph = build_graph(original.blocks)
    targets = []
    for i in graph.convs():
        conv, bn, _ = conv_unit(original.module_list[i])
        if len(_segment_keep(graph.inputs[i], plan.keep)) == conv.in_channels:
            continue  # same inputs: the kept filters are exact copies already
        nconv, nbn, _ = conv_unit(pruned.module_list[i])
        targets.append(Target(str(i), conv, nconv, plan.keep[i], bn, nbn))
    return refit_convs(original, pruned, targets, batches, positions, ridge, seed)


@torch.no_grad()
def refit_convs(
    original: nn.Module,
    pruned: nn.Module,
    targets: list[Target],
    batches: Iterable[torch.Tensor],
    positions: int = 256,
    ridge: float = 1e-2,
    seed: int = 0,
) -> dict[str, Any]:
    """Refit `targets` in the order given (network order: each fit sees the refitted layers
    before it). Grouped (depthwise) convs are skipped: a channel of theirs reads one input."""
    batches = list(batches)
    if not batches:
        raise ValueError("reconstruct needs at least one batch of images")
    was = original.training, pruned.training
    original.eval()
    pruned.eval()
    report: dict[str, Any] = {}
    try:
        active = [(n, t) for n, t in enumerate(targets) if t.pruned.groups == 1]
        wanted = _sample_targets(original, active, batches, positions, seed)
        for (_, t), samples in zip(active, wanted):
            report[t.name] = _refit(pruned, t, ridge, batches, samples)
    finally:
        original.train(was[0])
        pruned.train(was[1])
    return report


def _sample_targets(
    original: nn.Module,
    active: list[tuple[int, Target]],
    batches: list[torch.Tensor],
    positions: int,
    seed: int,
) -> list[list[tuple[torch.Tensor, torch.Tensor, int]]]:
    """Per target, per batch: (picked output positions, the unpruned conv's kept outputs
    there, output width). One forward of the unpruned model per batch serves every target,
    where a forward per target and batch cost as much as the refit itself; each target draws
    its positions from its own generator (seed + its index), batch after batch."""
    gens = [torch.Generator().manual_seed(seed + n) for n, _ in active]
    wanted: list[list[tuple[torch.Tensor, torch.Tensor, int]]] = [[] for _ in active]
    for images in batches:
        outputs = _outputs(original, [t.original for _, t in active], images)
        for k, ((_, t), y) in enumerate(zip(active, outputs)):
            conv, dev = t.original, y.device
            y = y[:, torch.tensor(t.out_idx, device=dev)]  # pre-BN, kept filters
            if conv.bias is not None:
                y = y - conv.bias[t.out_idx].view(1, -1, 1, 1)  # what the weights must produce
            pick = _positions(y.shape[2] * y.shape[3], positions, gens[k]).to(dev)
            wanted[k].append((pick, y.flatten(2)[:, :, pick], y.shape[3]))
    return wanted


def _outputs(model: nn.Module, convs: list[nn.Conv2d], images: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of `convs` (their first call) in one forward pass of `model`."""
    got: dict[int, torch.Tensor] = {}

    def hook_for(k: int):
        def hook(_m, _inputs, output):
            got.setdefault(k, output)

        return hook

    handles = [c.register_forward_hook(hook_for(k)) for k, c in enumerate(convs)]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return [got[k] for k in range(len(convs))]


def _refit(
    pruned: nn.Module,
    t: Target,
    ridge: float,
    batches: list[torch.Tensor],
    samples: list[tuple[torch.Tensor, torch.Tensor, int]],
) -> dict[str, float]:
    conv, bn, nconv, nbn = t.original, t.original_bn, t.pruned, t.pruned_bn
    # The intercept needs somewhere to go: the BN's running mean or the conv's bias.
    free = nbn is not None or nconv.bias is not None
    k = nconv.in_channels * nconv.kernel_size[0] * nconv.kernel_size[1] + int(free)
    dev = nconv.weight.device
    xtx = torch.zeros(k, k, dtype=torch.float64, device=dev)
    xty = torch.zeros(k, len(t.out_idx), dtype=torch.float64, device=dev)
    yy = 0.0
    out = torch.tensor(t.out_idx, device=dev)
    for images, (pick, y, out_w) in zip(batches, samples):
        x = _capture(pruned, nconv, images, "input")
        cols = patches(x, nconv, pick, out_w)  # [B, Cin*k*k, P]
        xs = cols.permute(0, 2, 1).reshape(-1, cols.shape[1]).double()
        if free:
            xs = torch.cat([xs, torch.ones(len(xs), 1, dtype=xs.dtype, device=dev)], 1)
        ys = y.permute(0, 2, 1).reshape(-1, len(t.out_idx)).double()
        xtx += xs.T @ xs
        xty += xs.T @ ys
        yy += float((ys**2).sum())

    w0 = nconv.weight.detach().flatten(1).double()  # the inherited copy: [Cout, Cin*k*k]
    # Where the copy already carries an intercept (the beta fold put it into the BN mean or
    # the bias), that is the starting point.
    if nbn is not None and bn is not None:
        b0 = bn.running_mean[out].double() - nbn.running_mean.double()
    elif nconv.bias is not None:
        b0 = nconv.bias.double() - (conv.bias[out].double() if conv.bias is not None else 0)
    else:
        b0 = None
    theta0 = (torch.cat([w0, b0.view(-1, 1)], 1) if free else w0).T  # [k, Cout]
    n_w = nconv.weight[0].numel()
    lam = ridge * float(xtx.diagonal()[:n_w].mean().clamp_min(1e-12))
    reg = lam * torch.eye(k, dtype=torch.float64, device=dev)
    if free:
        reg[-1, -1] = 0.0  # the intercept is not pulled anywhere
    theta = torch.linalg.solve(xtx + reg, xty + reg @ theta0)

    def err(th: torch.Tensor) -> float:  # ||X th - Y||^2 / ||Y||^2 from the accumulated sums
        sq = yy - 2 * float((th * xty).sum()) + float((th * (xtx @ th)).sum())
        return max(sq, 0.0) / max(yy, 1e-12)

    before, after = err(theta0), err(theta)
    nconv.weight.copy_(theta[:n_w].T.float().view_as(nconv.weight))
    if free:
        b = theta[n_w].float()
        if nbn is not None and bn is not None:
            # The refitted conv reproduces the unpruned pre-BN signal: the unpruned statistics
            # hold for it again (minus the intercept, which the BN subtracts).
            nbn.running_mean.copy_(bn.running_mean[out] - b)
            nbn.running_var.copy_(bn.running_var[out])
        else:
            nconv.bias.copy_((conv.bias[out] if conv.bias is not None else 0) + b)
    log.info("%s: relative error %.4f -> %.4f", t.name, before, after)
    return {"error_before": round(before, 6), "error_after": round(after, 6)}
