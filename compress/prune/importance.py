"""Channel importance criteria: one small class per idea, one `__call__` each.

A criterion scores the output channels of one conv unit (a conv and the BN after it, if any):
`criterion(conv, bn, following) -> tensor [out_channels]`, higher = more important, where
`following` holds the weight slices [out, channels, kh, kw] of the convs that read this unit's
output (most criteria ignore it). Criteria whose scores
are comparable across layers (BN |gamma| after sparsity training) say so with `global_scale =
True`; the others are divided by each layer's maximum before one global threshold is applied,
so a layer with large weights does not keep everything.

Data-aware criteria (HRank, feature similarity, correlation, reconstruction; module
`feature_criteria`) set `needs_features = True`: the caller collects each conv unit's
post-activation output on a few images (`features.collect_features`) and passes it as
`features=` ([N, C, H, W]). Criteria that need a teacher's view (`output_taylor`) set
`needs_teacher = True` and are `prepare`d with the teacher, the working model and images.
`__call__(conv, bn, following)` stays the contract of every other criterion.

Registry: `IMPORTANCE[name](**options)`.
    >>> conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    >>> IMPORTANCE["l1"]()(conv, bn).shape
    torch.Size([4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compress.prune import feature_criteria
from compress.prune.criterion import Importance


class BNScale(Importance):
    """|gamma| of the BN after the conv (Network Slimming, Liu et al. 2017)."""

    global_scale = True

    def __init__(self, per_layer: bool = False) -> None:
        # per_layer: divide by the layer's largest |gamma| before the global threshold. For
        # weights that were not sparsity-trained long (gammas of 0.5-5 whose scale differs by
        # layer) a raw global threshold would empty whole layers and spare others.
        self.global_scale = not per_layer

    def __call__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, following: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        if bn is None:
            raise ValueError(f"bn_scale needs a BatchNorm after {conv}; this conv has none")
        return bn.weight.detach().abs().clone()


class BNScaleNext(Importance):
    """|gamma| times the L2 norm of the weights that read the channel in the next convs.

    Why not |gamma| alone: conv -> BN -> leaky ReLU -> conv computes the same function when a
    channel's gamma and beta are scaled by a > 0 and the next conv's weights on that channel by
    1/a (leaky ReLU, max-pool and upsampling are positively homogeneous), so |gamma| carries a
    scale each layer is free to choose, and one global threshold on it compares those scales
    as much as the channels (Ye et al. 2018, 'Rethinking the Smaller-Norm-Less-Informative
    Assumption in Channel Pruning of Convolution Layers'). The product is invariant to that
    rescaling: it is the size of what the channel feeds the next layer. Long sparsity training
    fixes the scale through the L1 term; a short one (the quick profile) does not, and there
    this score placed the cut where it costs less: YOLOv3-tiny's held-out AP50 after the
    least-squares refit at 0.40x / 0.50x / 0.60x FLOPs was 0.136 / 0.154 / 0.230 against
    0.058 / 0.094 / 0.143 with |gamma| divided by the layer max."""

    global_scale = True

    def __call__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, following: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        gamma = BNScale()(conv, bn)
        if not following:
            raise ValueError(
                f"bn_scale_next needs the convs that read {conv}'s output; none were given"
            )
        read = sum(w.detach().float().pow(2).sum((0, 2, 3)) for w in following)
        return gamma * read.sqrt().to(gamma)


class FilterNorm(Importance):
    """Lp norm of each filter (L1: Li et al. 2017, 'Pruning Filters for Efficient ConvNets')."""

    def __init__(self, p: int = 1) -> None:
        self.p = p

    def __call__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, following: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        w = conv.weight.detach().flatten(1)
        return w.norm(p=self.p, dim=1)


class BNTaylor(Importance):
    """First-order Taylor estimate of the loss change when a channel is removed, taken on the
    BN affine parameters: |gamma * dL/dgamma + beta * dL/dbeta| (Molchanov et al. 2019).
    Needs gradients: run a backward pass on a few batches first (the pipeline does)."""

    needs_grad = True

    def __call__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, following: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        if bn is None or bn.weight.grad is None:
            raise ValueError(
                "taylor needs a BN with gradients: call loss.backward() on a batch first"
            )
        g = bn.weight.detach() * bn.weight.grad.detach()
        if bn.bias is not None and bn.bias.grad is not None:
            g = g + bn.bias.detach() * bn.bias.grad.detach()
        return g.abs()


class FPGM(Importance):
    """Filter Pruning via Geometric Median (He et al. 2019): a filter close to all the others
    is replaceable, so its score is its summed distance to the layer's other filters."""

    def __call__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, following: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        w = conv.weight.detach().flatten(1)
        return torch.cdist(w, w).sum(dim=1)


IMPORTANCE: dict[str, type[Importance] | object] = {
    "bn_scale": BNScale,
    "bn_scale_layer": lambda: BNScale(per_layer=True),
    "bn_scale_next": BNScaleNext,
    "l1": lambda: FilterNorm(p=1),
    "l2": lambda: FilterNorm(p=2),
    "taylor": BNTaylor,
    "fpgm": FPGM,
    "hrank": feature_criteria.HRank,
    "similarity_rank": feature_criteria.SimilarityRank,
    "tcfp": feature_criteria.FunctionalSimilarity,
    "correlation": feature_criteria.CorrelationIndependence,
    "reconstruction": feature_criteria.Reconstruction,
    "output_taylor": feature_criteria.OutputTaylor,
}


def build_importance(name: str, **options) -> Importance:
    try:
        factory = IMPORTANCE[name]
    except KeyError:
        raise ValueError(
            f"unknown importance {name!r}; choose one of {', '.join(IMPORTANCE)}"
        ) from None
    return factory(**options)
