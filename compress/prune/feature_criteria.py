"""Data-aware channel criteria: they judge a filter by what it computes on real images.

Each reads `features` = its conv unit's post-activation output on a few images ([N, C, H, W],
`features.collect_features`), except `OutputTaylor`, which reads the gradients of a
distillation loss (`prepare(teacher, model, batches)` first). Higher = more important, as for
every criterion in `importance.py`.

A channel whose output is constant on the data gets the lowest score from the redundancy
criteria (similarity, correlation, reconstruction): `channel.compact` folds a removed
channel's constant into its consumers, so removing it changes almost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from compress.prune.criterion import Importance
from compress.prune.features import as_samples


def _maps(features: torch.Tensor | None, name: str) -> torch.Tensor:
    if features is None:
        raise ValueError(f"{name} scores feature maps: call it with features=[N, C, H, W]")
    if features.dim() != 4:
        raise ValueError(f"{name} needs 2-D maps [N, C, H, W], got {tuple(features.shape)}")
    return features


def average_rank(features: torch.Tensor) -> torch.Tensor:
    """Per channel: the matrix rank of its [H, W] map, averaged over the images."""
    return torch.linalg.matrix_rank(features.float()).double().mean(0)


def _cosine(x: torch.Tensor) -> torch.Tensor:
    """|cosine| between the rows of [C, S] (a zero row is similar to nothing)."""
    n = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (n @ n.T).abs()


def _correlation(x: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """(|correlation| matrix of the rows of [C, S], mask of the rows that vary at all)."""
    centred = x - x.mean(1, keepdim=True)
    std = centred.pow(2).mean(1).sqrt()
    alive = std > eps * std.max().clamp_min(1e-30)
    return _cosine(centred), alive


def _redundancy_discount(order: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """Per channel: its largest similarity to a channel ahead of it in `order` (the first
    gets 0). Applied as (1 - that), the first of a group of near-duplicates keeps its score
    and the others lose theirs, so a cut removes copies before originals."""
    out = torch.zeros(len(order), dtype=similarity.dtype)
    for pos in range(1, len(order)):
        c = order[pos]
        out[c] = similarity[c, order[:pos]].max()
    return out


class HRank(Importance):
    """HRank (Lin et al. 2020, 'HRank: Filter Pruning using High-Rank Feature Map'): the
    average matrix rank of a filter's output maps over a few images. A low-rank map holds
    little information, whatever its magnitude; a dead (all-zero) map has rank 0. Ranks are
    taken on the strided sample `collect_features` keeps (a sub-matrix: its rank is a lower
    bound of the full map's, with the same ordering in practice); equal ranks are ordered by
    the map's mean magnitude."""

    needs_features = True

    def __call__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        following: Sequence[torch.Tensor] = (),
        *,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        maps = _maps(features, "hrank")
        # Ranks are whole numbers and many maps are full-rank: equal ranks are ordered by the
        # map's mean magnitude (a term under 1e-3, below any difference in rank).
        size = maps.abs().mean((0, 2, 3)).double()
        return (average_rank(maps) + 1e-3 * size / size.max().clamp_min(1e-30)).float()


class SimilarityRank(Importance):
    """Feature-map similarity combined with average rank: a channel's HRank score (average
    rank / the largest rank a map of that size can have) times (1 - its largest |correlation|
    with a higher-ranked channel of the layer, over the same images and positions). Rank
    alone keeps two copies of a rich map; the similarity term keeps one. Correlation, not
    cosine: post-activation maps are mostly positive, so any two have a large cosine."""

    needs_features = True

    def __call__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        following: Sequence[torch.Tensor] = (),
        *,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        maps = _maps(features, "similarity_rank")
        rank = average_rank(maps) / max(1, min(maps.shape[-2:]))
        x = as_samples(maps)
        # ties in rank (common: many full-rank maps) are broken by output energy
        order = torch.argsort(
            rank + 1e-6 * x.norm(dim=1) / x.norm(dim=1).max().clamp_min(1e-30), descending=True
        )
        return (rank * (1 - _redundancy_discount(order, _correlation(x)[0]))).float()


class FunctionalSimilarity(Importance):
    """Functional similarity of filters (TCFP): two filters whose outputs on data are
    near-duplicates (|correlation| >= `threshold`) compute the same function up to an affine
    map, which the next layer (and the refit) can take from either. Channels are grouped
    around representatives, strongest output first; a representative scores 1 + its relative
    output energy, a member of a group (1 - its correlation with the representative) / 2, so
    a cut takes every duplicate before any representative and keeps one of each group.
    Constant outputs score 0."""

    needs_features = True

    def __init__(self, threshold: float = 0.9) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"tcfp threshold is a correlation in (0, 1), got {threshold}")
        self.threshold = threshold

    def __call__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        following: Sequence[torch.Tensor] = (),
        *,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = as_samples(_maps_or_samples(features, "tcfp"))
        corr, alive = _correlation(x)
        energy = (x - x.mean(1, keepdim=True)).norm(dim=1)
        energy = energy / energy.max().clamp_min(1e-30)
        scores = torch.zeros(len(x), dtype=torch.float64)
        reps: list[int] = []
        for c in torch.argsort(energy, descending=True).tolist():
            if not alive[c]:
                continue
            best = corr[c, reps].max() if reps else torch.tensor(0.0, dtype=corr.dtype)
            if best >= self.threshold:
                scores[c] = (1 - best) / 2
            else:
                reps.append(c)
                scores[c] = 1 + energy[c]
        return scores.float()


def _maps_or_samples(features: torch.Tensor | None, name: str) -> torch.Tensor:
    if features is None:
        raise ValueError(f"{name} scores feature maps: call it with features=[N, C, H, W]")
    return features


def eliminate(cov: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy backward elimination of the channels of a layer, cheapest first; returns one
    score per channel that grows with how late it went (the error level at which it went).

    `cov`: [C, C] covariance of the channels' outputs (ridged, positive definite). Removing
    channel c when the set S is left costs its conditional variance given S\\{c}, 1 / P_cc
    (P = inverse covariance of S): what no linear combination of the others can replace.
    With `gram` = W W^T of the weights that read the channels, the cost is the error that
    removal leaves in the readers' output after a least-squares refit, G_cc / P_cc, and the
    refit's move (c's weights onto the others by the regression coefficients -P_jc / P_cc)
    is carried into G for the next step. O(C^3) per layer."""
    n = cov.shape[0]
    ids = torch.arange(n)  # original index of each row still held
    p = torch.linalg.inv(cov)
    g = None if gram is None else gram.clone()
    gone = torch.zeros(n, dtype=torch.bool)
    level = torch.zeros(n, dtype=torch.float64)
    order = torch.zeros(n, dtype=torch.float64)
    current = 0.0
    for step in range(n):
        if len(gone) > 64 and gone.sum() > len(gone) // 4:
            # in-place rank-1 downdates on the full matrices, compacted now and then: ten
            # times faster than re-indexing at every step for a 1024-channel layer
            held = ~gone
            p, ids, gone = p[held][:, held].contiguous(), ids[held], gone[held]
            if g is not None:
                g = g[held][:, held].contiguous()
        cost = 1.0 / p.diagonal()
        if g is not None:
            cost = cost * g.diagonal()
        k = int(torch.argmin(cost.masked_fill(gone, float("inf"))))
        current = max(current, float(cost[k]))
        level[ids[k]], order[ids[k]] = current, step
        pk = p[:, k].clone()
        pkk = float(pk[k])
        if g is not None:
            beta = -pk / pkk  # regression of channel k on the others
            gk = g[:, k].clone()
            g.addr_(beta, gk).addr_(gk, beta).addr_(beta, beta, alpha=float(gk[k]))
        p.addr_(pk, pk, alpha=-1.0 / pkk)
        gone[k] = True
    # equal levels (e.g. several constant channels) keep the elimination order
    return level + order * 1e-9 * max(current, 1e-30) / max(n, 1)


def _ridged(c: torch.Tensor, ridge: float) -> torch.Tensor:
    lam = ridge * float(c.diagonal().mean().clamp_min(1e-30))
    return c + lam * torch.eye(len(c), dtype=c.dtype)


class CorrelationIndependence(Importance):
    """Correlation independence: a filter whose output is predictable from the others' in its
    layer is redundant. Its predictability is the multiple correlation R^2 of its output on
    the others' (for Gaussian outputs the conditional entropy is 1/2 log(2 pi e (1 - R^2)),
    so low conditional entropy = high R^2). Scored by backward elimination on the
    correlation matrix (`eliminate`): the most predictable channel goes first and the others'
    R^2 are recomputed without it, so of two duplicates only one is judged redundant.
    Score = the 1 - R^2 level at which the channel went; constant outputs score 0."""

    needs_features = True

    def __init__(self, ridge: float = 1e-6) -> None:
        self.ridge = ridge

    def __call__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        following: Sequence[torch.Tensor] = (),
        *,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = as_samples(_maps_or_samples(features, "correlation"))
        centred = x - x.mean(1, keepdim=True)
        std = centred.pow(2).mean(1).sqrt()
        alive = std > 1e-8 * std.max().clamp_min(1e-30)
        scores = torch.zeros(len(x), dtype=torch.float64)
        if alive.any():
            z = centred[alive] / std[alive, None]
            corr = z @ z.T / z.shape[1]
            scores[alive] = eliminate(_ridged(corr, self.ridge)) + 1e-12
        return scores.float()


class Reconstruction(Importance):
    """Reconstruction-driven selection (He et al. 2017, 'Channel Pruning for Accelerating Very
    Deep Neural Networks'; Luo et al. 2017, ThiNet): keep the channels whose removal the
    least-squares refit of the next layer cannot absorb. Removing input channel c of the
    reading convs, with the refit free to re-weight the remaining inputs, leaves in their
    output the part of c's signal no linear combination of the others reproduces, weighted by
    how strongly they read it: Var(x_c | others) * ||W_{:, c}||^2 (pre-BN output error, the
    quantity `reconstruct` minimises; each kernel tap gets the same pointwise prediction, so
    the taps' weights add). Greedy backward elimination (`eliminate`), the refit's weight
    update carried along: ThiNet's greedy selection with the refit inside. Cost: one C x C
    covariance and O(C^3) per layer: a few seconds for all of YOLOv3-tiny on one CPU core."""

    needs_features = True

    def __init__(self, ridge: float = 1e-6) -> None:
        self.ridge = ridge

    def __call__(
        self,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        following: Sequence[torch.Tensor] = (),
        *,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not following:
            raise ValueError(f"reconstruction needs the convs that read {conv}'s output")
        x = as_samples(_maps_or_samples(features, "reconstruction"))
        centred = x - x.mean(1, keepdim=True)  # the intercept goes into the next BN's mean
        cov = centred @ centred.T / centred.shape[1]
        w = torch.cat([r.detach().double().transpose(0, 1).flatten(1) for r in following], 1)
        return eliminate(_ridged(cov, self.ridge), w @ w.T).float()


@torch.enable_grad()
def distillation_taylor(
    teacher: nn.Module,
    student: nn.Module,
    batches: Iterable[torch.Tensor],
    box_weight: float = 1.0,
    seed: int = 0,
) -> dict[nn.BatchNorm2d, torch.Tensor]:
    """Per BN of `student`: mean over batches of (gamma dL/dgamma + beta dL/dbeta)^2, L = a
    distillation loss between the student's and the teacher's decoded outputs on unlabelled
    images (score BCE + teacher-confidence-weighted box L1, `recover.distill.response_loss`).

    The BCE targets are Bernoulli draws of the teacher's scores, not the scores themselves:
    where the student equals the teacher (the unpruned model scoring itself) the loss against
    soft targets is at its minimum and every gradient is 0; with sampled targets the expected
    squared gradient is the Fisher information of the outputs, which is what the squared
    first-order term estimates (Molchanov et al. 2019). Both models run in eval mode (BN on
    running statistics, as deployed)."""
    from compress.recover.distill import response_loss

    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in student.modules() if isinstance(m, nn.BatchNorm2d)]
    acc = {bn: torch.zeros_like(bn.weight, dtype=torch.float64) for bn in bns}
    was = teacher.training, student.training
    teacher.eval()
    student.eval()
    n = 0
    try:
        for images in batches:
            with torch.no_grad():
                t_boxes, t_scores = teacher.decode(teacher(images))
            student.zero_grad(set_to_none=True)
            s_boxes, s_scores = student.decode(student(images))
            target = torch.bernoulli(t_scores.float().clamp(0, 1).cpu(), generator=gen)
            _, box = response_loss(
                s_boxes, s_scores, t_boxes, t_scores, float(max(images.shape[-2:])), box_weight
            )
            score = F.binary_cross_entropy(
                s_scores.float().clamp(1e-6, 1 - 1e-6), target.to(s_scores.device)
            )
            (score + box).backward()
            for bn in bns:
                if bn.weight.grad is None:
                    continue
                c = bn.weight.detach() * bn.weight.grad
                if bn.bias is not None and bn.bias.grad is not None:
                    c = c + bn.bias.detach() * bn.bias.grad
                acc[bn] += c.double().pow(2).cpu()
            n += 1
    finally:
        student.zero_grad(set_to_none=True)
        teacher.train(was[0])
        student.train(was[1])
    if n == 0:
        raise ValueError("distillation_taylor needs at least one batch of images")
    return {bn: v / n for bn, v in acc.items()}


class OutputTaylor(Importance):
    """Output-aware importance: the first-order Taylor estimate of how much removing a channel
    (zeroing its BN gamma and beta) changes a distillation loss between the unpruned model's
    and the working model's person outputs (`distillation_taylor`). It sees what the person
    head uses: a channel only the other 79 COCO classes needed moves no person score, however
    large its gamma. `prepare(teacher, model, batches)` before scoring."""

    needs_teacher = True

    def __init__(self, box_weight: float = 1.0, seed: int = 0) -> None:
        self.box_weight, self.seed = box_weight, seed
        self._scores: dict[nn.BatchNorm2d, torch.Tensor] | None = None

    def prepare(
        self, teacher: nn.Module, model: nn.Module, batches: Iterable[torch.Tensor]
    ) -> None:
        self._scores = distillation_taylor(teacher, model, batches, self.box_weight, self.seed)

    def __call__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, following: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        if self._scores is None:
            raise ValueError("output_taylor: call prepare(teacher, model, batches) before scoring")
        if bn is None or bn not in self._scores:
            raise ValueError(f"output_taylor: no gradients for the BN after {conv}")
        return self._scores[bn].float()
