"""Thresholds learned from a distribution of channel scores (usually BN |gamma|).

After sparsity training the |gamma| of a network splits into a crowd near zero (channels the
L1 term has switched off) and the channels that still carry signal. A threshold is where that
split lies, so the tool finds it from the data instead of asking the user for a ratio. Each
estimator takes the 1-D scores and returns a `Threshold`: the value and how it was found
(kept in report.json). Work happens on log10 scores because the near-zero crowd spans several
decades while the useful channels sit within one.

Registry: `THRESHOLDS[name](scores, **options) -> Threshold`.
    >>> t = THRESHOLDS["otsu"](np.r_[np.full(50, 1e-4), np.full(50, 0.5)])
    >>> 1e-4 < t.value < 0.5
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Scores at or under this are treated as this (log10 of an exact zero is -inf).
FLOOR = 1e-8


@dataclass
class Threshold:
    value: float
    method: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"value": float(self.value), "method": self.method, **self.details}


def _log_scores(scores: Any) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"a threshold needs at least 2 scores, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("scores hold NaN or inf (did sparsity training diverge?)")
    return np.log10(np.maximum(np.abs(x), FLOOR))


def percentile(scores: Any, fraction: float = 0.5) -> Threshold:
    """The fixed baseline: prune the `fraction` of channels with the lowest scores."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"percentile fraction must be in [0, 1), got {fraction}")
    x = np.sort(np.abs(np.asarray(scores, dtype=np.float64).ravel()))
    k = int(round(fraction * x.size))
    # Between the k-th and (k+1)-th smallest so exactly k channels fall under it.
    value = 0.0 if k == 0 else float((x[k - 1] + x[min(k, x.size - 1)]) / 2)
    return Threshold(value, "percentile", {"fraction": fraction})


def otsu(scores: Any, bins: int = 256) -> Threshold:
    """Otsu's split of log|score|: the cut that maximises the between-class variance."""
    logs = _log_scores(scores)
    hist, edges = np.histogram(logs, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    i = int(np.argmax(between[:-1]))
    cut = float(edges[i + 1])
    # Otsu's separability: between-class / total variance (1 = two spikes, ~0.64 for one
    # Gaussian). Near the Gaussian value there is no split for the threshold to find:
    # sparsity training has not separated the channels yet.
    total = w0[-1] ** 2 * np.var(np.repeat(centers, hist))
    separability = float(between[i] / total) if total > 0 else 0.0
    return Threshold(
        10**cut,
        "otsu",
        {
            "log10_threshold": cut,
            "bins": bins,
            "below": int((logs < cut).sum()),
            "separability": separability,
        },
    )


def gmm(scores: Any, seed: int = 0) -> Threshold:
    """Two-component Gaussian mixture on log|score| (scikit-learn); the threshold is where the
    posterior of the low component falls to 1/2 between the two means."""
    from sklearn.mixture import GaussianMixture

    logs = _log_scores(scores)
    if np.ptp(logs) < 1e-9:
        raise ValueError("all scores are equal: no two populations to split")
    model = GaussianMixture(n_components=2, random_state=seed).fit(logs[:, None])
    # BIC of one Gaussian vs two: says whether the scores really hold two populations.
    bic1 = float(GaussianMixture(n_components=1).fit(logs[:, None]).bic(logs[:, None]))
    bic2 = float(model.bic(logs[:, None]))
    means = model.means_.ravel()
    lo, hi = int(np.argmin(means)), int(np.argmax(means))
    grid = np.linspace(means[lo], means[hi], 2001)
    post = model.predict_proba(grid[:, None])[:, lo]
    cut = float(grid[int(np.argmax(post < 0.5))]) if (post < 0.5).any() else float(means[hi])
    return Threshold(
        10**cut,
        "gmm",
        {
            "log10_threshold": cut,
            "means_log10": [float(means[lo]), float(means[hi])],
            "stds_log10": [float(np.sqrt(model.covariances_.ravel()[i])) for i in (lo, hi)],
            "weights": [float(model.weights_[lo]), float(model.weights_[hi])],
            "bic_one": bic1,
            "bic_two": bic2,
            "two_populations": bic2 < bic1 - 10.0,
        },
    )


def largest_gap(scores: Any, max_fraction: float = 0.9, min_fraction: float = 0.05) -> Threshold:
    """The widest empty stretch in sorted log|score| among the lowest `max_fraction` (and above
    the lowest `min_fraction`, so one stray zero does not make the cut): sparsity training
    leaves a hole between the switched-off channels and the rest."""
    logs = np.sort(_log_scores(scores))
    n = logs.size
    lo, hi = max(int(n * min_fraction), 1), max(int(n * max_fraction), 2)
    gaps = np.diff(logs)[lo - 1 : hi - 1]
    i = int(np.argmax(gaps)) + lo - 1
    cut = float((logs[i] + logs[i + 1]) / 2)
    return Threshold(
        10**cut,
        "gap",
        {"log10_threshold": cut, "gap_log10": float(logs[i + 1] - logs[i]), "below": i + 1},
    )


def knee(scores: Any) -> Threshold:
    """Kneedle on the sorted log|score| curve: the point farthest from the chord joining its
    ends, i.e. where the curve turns from the steep near-zero crowd to the flat useful part."""
    logs = np.sort(_log_scores(scores))
    x = np.linspace(0.0, 1.0, logs.size)
    y = (logs - logs[0]) / max(float(np.ptp(logs)), 1e-12)
    # Distance to the chord y = x (both normalized); the sorted curve lies above it at a knee.
    dist = y - x
    i = int(np.argmax(np.abs(dist)))
    i = min(i, logs.size - 2)
    cut = float((logs[i] + logs[i + 1]) / 2)
    return Threshold(10**cut, "knee", {"log10_threshold": cut, "below": i + 1})


THRESHOLDS: dict[str, Callable[..., Threshold]] = {
    "percentile": percentile,
    "otsu": otsu,
    "gmm": gmm,
    "gap": largest_gap,
    "knee": knee,
}


def estimate(name: str, scores: Any, **options: Any) -> Threshold:
    """`THRESHOLDS[name](scores, **options)` with a clear error for an unknown name."""
    try:
        fn = THRESHOLDS[name]
    except KeyError:
        raise ValueError(
            f"unknown threshold {name!r}; choose one of {', '.join(THRESHOLDS)}"
        ) from None
    return fn(scores, **options)
