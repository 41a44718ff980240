"""The search space as the learned optimisers (ddpg, adversarial) see it.

A structure is one keep ratio per unit (groups.py). The particle swarm, the GA and random
search need nothing more; the agents of `ddpg` need each unit's layer shape and how the
FLOPs move with the ratios, and the gate generator of `adversarial` needs the model itself.
`Space` gives them that, each part computed on first use, so the searches that never ask pay
nothing:

  features  one row per unit: index, in/out channels, kernel, stride, output size, whether
            it is depthwise, and the share of the model's FLOPs its ratio controls (each
            column divided by its largest value)
  flops     `FlopsModel`: the FLOPs ratio of a ratio vector in closed form (numpy or torch,
            so differentiable), from the convs' full FLOPs and which unit feeds which conv's
            inputs and outputs (the Torch-Pruning groups)
  gated     a copy of the detector whose units' channels are scaled by soft gates (`Gates`)

`FlopsModel`: FLOPs(r) = rest + sum_c base_c * out_c(r) * in_c(r), where out_c is the ratio
of the unit that owns conv c's outputs (1 if none) and in_c the kept fraction of its inputs
(a concatenation mixes units by their channel counts); a depthwise conv scales once. It is
exact for unrounded widths; the searches still meet the budget through the real count
(`Search.to_budget`), the model only steers proposals and the agents' state. With a latency
budget (`fitness.budget: latency`) the FLOPs ratio stands in for the latency ratio there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from compress.prune.acp.cluster import Clusters
from compress.prune.acp.groups import Unit, build_graph
from compress.prune.acp.inherit import rank_order

FEATURES = (
    "index",
    "in_channels",
    "out_channels",
    "kernel",
    "stride",
    "size",
    "depthwise",
    "flops",
)


@dataclass
class FlopsModel:
    base: np.ndarray  # (convs,) each modelled conv's FLOPs at full width
    out_units: np.ndarray  # (convs, units) 1 where the conv's outputs are the unit's channels
    in_share: np.ndarray  # (convs, units) the fraction of the conv's inputs from the unit
    rest: float = 0.0  # FLOPs no ratio changes (other ops, layers kept whole)

    @property
    def total(self) -> float:
        return float(self.rest + self.base.sum())

    def ratio(self, r: Sequence[float]) -> float:
        """FLOPs of ratios `r` over the unpruned model's."""
        r = np.asarray(r, dtype=np.float64)
        out = 1.0 - self.out_units.sum(1) + self.out_units @ r
        inn = 1.0 - self.in_share.sum(1) + self.in_share @ r
        return float((self.rest + self.base @ (out * inn)) / self.total)

    def ratio_torch(self, r: torch.Tensor) -> torch.Tensor:
        """`ratio` of [..., units] ratios, differentiable in `r`."""
        t = lambda a: torch.as_tensor(a, dtype=r.dtype)  # noqa: E731
        out = t(1.0 - self.out_units.sum(1)) + r @ t(self.out_units).T
        inn = t(1.0 - self.in_share.sum(1)) + r @ t(self.in_share).T
        return (self.rest + (out * inn) @ t(self.base)) / self.total

    def share(self) -> np.ndarray:
        """Per unit: the FLOPs ratio its own ratio moves (d ratio / d r_u at full width)."""
        return (self.base @ (self.out_units + self.in_share)) / self.total

    def affine_in(self, r: np.ndarray, i: int) -> tuple[float, float]:
        """(a, b) with ratio(r with r[i] = x) = a + b x: no conv has both its inputs and its
        outputs in one unit (a depthwise conv counts once), so FLOPs are affine in each r_i."""
        lo, hi = r.copy(), r.copy()
        lo[i], hi[i] = 0.0, 1.0
        a = self.ratio(lo)
        return a, self.ratio(hi) - a


def _conv_sizes(detector: nn.Module) -> dict[nn.Conv2d, tuple[int, int]]:
    """Each conv's output H x W at the detector's input size (one zero image)."""
    sizes: dict[nn.Conv2d, tuple[int, int]] = {}
    convs = [m for m in detector.modules() if isinstance(m, nn.Conv2d)]
    hooks = [
        c.register_forward_hook(lambda m, _i, o: sizes.__setitem__(m, tuple(o.shape[-2:])))
        for c in convs
    ]
    param = next(detector.parameters())
    h, w = detector.input_size
    was = detector.training
    detector.eval()
    try:
        with torch.no_grad():
            detector(torch.zeros(1, 3, h, w, device=param.device, dtype=param.dtype))
    finally:
        detector.train(was)
        for hook in hooks:
            hook.remove()
    return sizes


def _depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels


def conv_flops(conv: nn.Conv2d, size: tuple[int, int]) -> float:
    """2 x MACs of one conv (what torch's flop counter counts)."""
    kh, kw = conv.kernel_size
    return 2.0 * conv.out_channels * conv.in_channels // conv.groups * kh * kw * size[0] * size[1]


class Space:
    """Units, their channel ranking and the model, with the derived views computed lazily."""

    def __init__(
        self,
        detector: nn.Module,
        units: Sequence[Unit],
        scores: dict[str, torch.Tensor],
        clusters: dict[str, Clusters] | None = None,
        images: Sequence[torch.Tensor] = (),
        target: float = 0.5,
        key: Callable[[np.ndarray], str] | None = None,
    ) -> None:
        self.detector, self.units = detector, list(units)
        self.scores, self.clusters, self.images = scores, clusters or {}, list(images)
        self.target = float(target)  # the FLOPs ratio the search aims at
        self._key = key

    def key(self, ratios: np.ndarray) -> str:
        """The structure `ratios` stands for, as the search caches it (its rounded widths;
        without the search's rounding, whole channels)."""
        if self._key is not None:
            return self._key(ratios)
        return ",".join(str(int(w)) for w in np.round(np.asarray(ratios) * self.widths))

    @property
    def widths(self) -> np.ndarray:
        return np.array([u.width for u in self.units], dtype=np.float64)

    @cached_property
    def groups(self) -> list[list[tuple[nn.Module, str, list[int]]]]:
        """Per unit: (module, handler name, channel indices) of every layer its cut touches."""
        graph, _ = build_graph(self.detector)
        out = []
        for u in self.units:
            group = graph.get_pruning_group(
                u.module(self.detector), tp.prune_conv_out_channels, list(range(u.width))
            )
            out.append(
                [
                    (it.dep.target.module, it.dep.handler.__name__, [int(i) for i in it.idxs])
                    for it in group.items
                    if isinstance(it.dep.target.module, nn.Module)
                ]
            )
        return out

    @cached_property
    def _sizes(self) -> dict[nn.Conv2d, tuple[int, int]]:
        return _conv_sizes(self.detector)

    @cached_property
    def flops(self) -> FlopsModel:
        from compress.evaluate import count_flops

        convs = [m for m in self.detector.modules() if isinstance(m, nn.Conv2d)]
        index = {c: i for i, c in enumerate(convs)}
        out_units = np.zeros((len(convs), len(self.units)))
        in_share = np.zeros((len(convs), len(self.units)))
        for j, items in enumerate(self.groups):
            for module, handler, idxs in items:
                if module not in index:
                    continue
                if handler == "prune_out_channels":
                    out_units[index[module], j] = 1.0
                elif handler == "prune_in_channels" and not _depthwise(module):
                    in_share[index[module], j] += len(idxs) / module.in_channels
        base = np.array([conv_flops(c, self._sizes[c]) for c in convs])
        total = float(count_flops(self.detector, self.detector.input_size))
        return FlopsModel(base, out_units, in_share, max(0.0, total - float(base.sum())))

    @cached_property
    def features(self) -> np.ndarray:
        """[units, len(FEATURES)] layer features, each column scaled to at most 1."""
        rows = []
        n = len(self.units)
        share = self.flops.share()
        for i, u in enumerate(self.units):
            conv = u.module(self.detector)
            h, w = self._sizes[conv]
            rows.append(
                [
                    i / max(1, n - 1),
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size[0],
                    conv.stride[0],
                    math.sqrt(h * w),
                    float(_depthwise(conv)),
                    share[i],
                ]
            )
        f = np.asarray(rows, dtype=np.float64)
        return f / np.maximum(np.abs(f).max(0), 1e-12)

    def order(self, i: int) -> list[int]:
        """Unit i's channels in the order a cut keeps them (inherit.rank_order)."""
        u = self.units[i]
        return rank_order(self.scores[u.name], self.clusters.get(u.name))

    def gated(self) -> Gates:
        """A frozen copy of the detector with soft gates on every unit (see `Gates`)."""
        return Gates(self)


class Gates:
    """A frozen copy of the detector whose unit i scales its channels by `gates[i]`.

    A gate multiplies the output of every BatchNorm the unit's cut touches (the convs' outputs
    where there is no BatchNorm), as GAL's soft mask sits after BN: the activations here are
    0 at 0 and leaky/ReLU ones scale with the gate, so gate 0 is exactly the cut channel and
    the gated model is the pruned model before its BN statistics are recomputed.

    `gates_of(ratios, temperature)`: the soft width of a ratio vector: channel at rank k of
    unit i (its order in `Space.order`) gets sigmoid((r_i * width_i - k - 0.5) / temperature),
    so the kept channels are the ones an inherited cut keeps, and the gates are differentiable
    in the ratios.
    """

    def __init__(self, space: Space) -> None:
        self.space = space
        self.model = copy.deepcopy(space.detector).eval().requires_grad_(False)
        names = {m: n for n, m in space.detector.named_modules()}
        self._ranks = [
            torch.as_tensor(np.argsort(space.order(i)), dtype=torch.float32)
            for i in range(len(space.units))
        ]
        self.gates: list[torch.Tensor | None] = [None] * len(space.units)
        self._hooks = []
        for i, items in enumerate(space.groups):
            outs = [(m, idx) for m, h, idx in items if h == "prune_out_channels"]
            norms = [(m, idx) for m, idx in outs if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            for module, idxs in norms or [(m, x) for m, x in outs if isinstance(m, nn.Conv2d)]:
                target = self.model.get_submodule(names[module])
                self._hooks.append(target.register_forward_hook(self._hook(i, idxs)))

    def _hook(self, i: int, idxs: list[int]):
        where = torch.as_tensor(idxs, dtype=torch.long)

        def scale(_m: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
            g = self.gates[i]
            if g is None:
                return out
            full = torch.ones(g.shape[0], out.shape[1], dtype=out.dtype)
            full = full.index_copy(1, where, g.to(out.dtype))
            return out * full[:, :, None, None]

        return scale

    def gates_of(self, ratios: torch.Tensor, temperature: float = 1.0) -> list[torch.Tensor]:
        """[batch, units] ratios -> per unit [batch, width] gates in the unit's channel order."""
        widths = torch.as_tensor(self.space.widths, dtype=ratios.dtype)
        kept = ratios * widths
        return [
            torch.sigmoid((kept[:, i : i + 1] - rank[None, :] - 0.5) / temperature)
            for i, rank in enumerate(self._ranks)
        ]

    def scores(
        self, images: torch.Tensor, ratios: torch.Tensor | None, temperature: float = 1.0
    ) -> torch.Tensor:
        """The gated model's decoded class scores [batch, anchors, classes]; image b runs
        with ratios[b] (None: ungated, the unpruned model)."""
        self.gates = (
            [None] * len(self.gates) if ratios is None else self.gates_of(ratios, temperature)
        )
        try:
            return self.model.decode(self.model(images))[1]
        finally:
            self.gates = [None] * len(self.gates)

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
