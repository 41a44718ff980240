"""Cluster each unit's channels by their responses on real images: the first keep count.

A channel is described by its feature map averaged over H x W on N images (a vector of N
numbers, collected by forward hooks on each unit's root conv). Two channels that respond alike
on every image carry the same information, so one of them can go.

Channels are compared by the cosine distance of their *centred* responses (each channel's mean
over the images subtracted), which is 1 - Pearson correlation. Raw mean responses share a large
constant part (a channel whose output is mostly positive looks like every other such channel),
so the raw cosine would merge nearly everything. Constant channels (no variance over the
images) carry nothing but a bias and form one cluster of their own.

eps (the DBSCAN radius, and the agglomerative distance cut) is chosen per layer when
`eps: auto`: the `eps_quantile` quantile of each channel's distance to its nearest other
channel, clipped to [eps_min, eps_max]. The quantile adapts to the layer (early layers with
few, very distinct channels get a small radius); the cap keeps a layer with no real
duplicates from being merged, since a cosine distance of 0.05 is already a correlation of 0.95.

Keep count = clusters + noise points (DBSCAN, min_samples=2) or clusters (agglomerative,
singletons included). Each cluster's representative is its medoid: the channel with the
smallest summed distance to the rest of its cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.cluster import DBSCAN, AgglomerativeClustering
from sklearn.metrics import pairwise_distances
from torch import nn

CLUSTER_DEFAULTS: dict[str, Any] = {
    "method": "dbscan",  # dbscan | agglomerative | none (every channel its own cluster)
    "images": 256,  # N: images whose mean responses describe a channel
    "batch_size": 16,
    "eps": "auto",  # a float, or auto (per layer, see module docstring)
    "eps_quantile": 0.25,
    "eps_min": 1.0e-3,
    "eps_max": 0.05,
    "center": True,  # compare centred responses (correlation); False = raw cosine
}


@dataclass
class Clusters:
    labels: list[int]  # per channel; -1 = DBSCAN noise (a cluster of one)
    representatives: list[int]  # one channel per cluster and per noise point, ascending
    eps: float
    keep: int = field(init=False)

    def __post_init__(self) -> None:
        self.keep = len(self.representatives)

    def summary(self) -> dict[str, Any]:
        sizes = np.bincount([lab for lab in self.labels if lab >= 0]) if self.labels else []
        return {
            "width": len(self.labels),
            "keep": self.keep,
            "eps": round(float(self.eps), 6),
            "clusters": int(len(sizes)),
            "noise": int(sum(1 for lab in self.labels if lab < 0)),
            "largest_cluster": int(max(sizes)) if len(sizes) else 0,
            "representatives": list(self.representatives),
        }


@torch.no_grad()
def channel_responses(
    detector: nn.Module, modules: dict[str, nn.Module], batches: Iterable[torch.Tensor]
) -> dict[str, np.ndarray]:
    """name -> [N images, C channels]: each module's output averaged over H x W."""
    store: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: store[name].append(out.mean((2, 3))))
        for name, m in modules.items()
    ]
    param = next(detector.parameters())
    was_training = detector.training
    detector.eval()
    try:
        for images in batches:
            detector(images.to(param.device, param.dtype))
    finally:
        for h in hooks:
            h.remove()
        detector.train(was_training)
    return {name: torch.cat(parts).double().cpu().numpy() for name, parts in store.items()}


def _distances(responses: np.ndarray, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """(pairwise cosine distances between channels [C, C], constant-channel mask [C])."""
    x = responses.T.astype(np.float64)  # [C, N]
    if center:
        x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1)
    constant = norm <= 1e-12 * max(1.0, float(np.abs(responses).max(initial=0.0)))
    x = np.where(constant[:, None], 0.0, x)
    x[constant, 0] = 1.0  # any unit vector: these rows are relabelled afterwards
    d = pairwise_distances(x, metric="cosine")
    np.fill_diagonal(d, 0.0)
    return np.clip(d, 0.0, 2.0), constant


def choose_eps(d: np.ndarray, cfg: dict[str, Any]) -> float:
    if cfg["eps"] != "auto":
        return float(cfg["eps"])
    if len(d) < 2:
        return float(cfg["eps_min"])
    nearest = np.where(np.eye(len(d), dtype=bool), np.inf, d).min(axis=1)
    q = float(np.quantile(nearest, float(cfg["eps_quantile"])))
    return float(np.clip(q, float(cfg["eps_min"]), float(cfg["eps_max"])))


def _dbscan(d: np.ndarray, eps: float) -> np.ndarray:
    return DBSCAN(eps=eps, min_samples=2, metric="precomputed").fit_predict(d)


def _agglomerative(d: np.ndarray, eps: float) -> np.ndarray:
    if len(d) < 2:
        return np.zeros(len(d), dtype=int)
    model = AgglomerativeClustering(
        n_clusters=None, distance_threshold=eps, metric="precomputed", linkage="average"
    )
    return model.fit_predict(d)


def _none(d: np.ndarray, eps: float) -> np.ndarray:
    return np.arange(len(d))


# Each takes the precomputed cosine distances and eps; returns a label per channel (-1 noise).
CLUSTERERS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "dbscan": _dbscan,
    "agglomerative": _agglomerative,
    "none": _none,
}


def cluster_channels(responses: np.ndarray, cfg: dict[str, Any] | None = None) -> Clusters:
    """Cluster the channels (columns) of `responses` [N, C]; see the module docstring."""
    cfg = {**CLUSTER_DEFAULTS, **(cfg or {})}
    if cfg["method"] not in CLUSTERERS:
        raise ValueError(f"cluster.method {cfg['method']!r}; known: {', '.join(CLUSTERERS)}")
    d, constant = _distances(responses, bool(cfg["center"]))
    eps = choose_eps(d[~constant][:, ~constant], cfg) if (~constant).sum() else 0.0
    labels = np.full(len(d), -1, dtype=int)
    live = np.flatnonzero(~constant)
    if len(live):
        labels[live] = CLUSTERERS[cfg["method"]](d[np.ix_(live, live)], eps)
    if constant.any():
        labels[constant] = labels.max(initial=-1) + 1  # one cluster: they differ only by bias
    reps = [int(i) for i in np.flatnonzero(labels < 0)]
    for lab in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == lab)
        reps.append(int(members[d[np.ix_(members, members)].sum(axis=1).argmin()]))
    return Clusters([int(v) for v in labels], sorted(reps), eps)
