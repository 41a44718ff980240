"""Latency statistics: what a list of per-frame times says, in milliseconds and FPS.

Device-side (runs on the Nano's Python 3.6 with numpy 1.19): no torch, no `compress`.
Speed is reported as a distribution (median, p90, p99), never a single best run, because a
real-time loop is judged by its slow frames as much as by its average (DESIGN.md section 6).
"""

import numpy as np

PERCENTILES = (50, 90, 99)


def summarize(times_s):
    """Per-iteration times in seconds -> dict in milliseconds.

    Keys: n, mean, std, min, p50, p90, p99, max (ms); fps (1000 / mean, the throughput a
    loop of these calls sustains) and fps_p50 (1000 / p50, the typical frame).
    Raises ValueError on an empty list or a negative time (a broken clock, not a fast model).
    """
    ms = np.asarray(list(times_s), dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no timings to summarize")
    if not np.all(np.isfinite(ms)) or np.any(ms < 0):
        raise ValueError("timings must be finite and non-negative")
    # numpy's default linear interpolation; no `method=` keyword (numpy 1.19 lacks it).
    p50, p90, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
    mean = float(ms.mean())
    return {
        "n": int(ms.size),
        "mean": mean,
        "std": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "min": float(ms.min()),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": float(ms.max()),
        "fps": 1000.0 / mean if mean > 0 else float("inf"),
        "fps_p50": 1000.0 / p50 if p50 > 0 else float("inf"),
    }


def speedup(baseline, candidate, key="p50"):
    """How many times faster `candidate` is than `baseline` (two `summarize` dicts)."""
    if candidate[key] <= 0:
        raise ValueError(f"candidate {key} is {candidate[key]}: cannot form a ratio")
    return baseline[key] / candidate[key]


def round_robin_orders(n_models, iterations):
    """The model order of every timed iteration: a rotation per iteration.

    With A/B/C, iteration 0 runs A,B,C, iteration 1 B,C,A, iteration 2 C,A,B, ... so every
    model is first (cold caches, just after another model) equally often and a machine that
    warms up or throttles over the run slows every model alike: drift cannot bias a ratio.
    """
    base = list(range(n_models))
    return [base[i % n_models :] + base[: i % n_models] for i in range(iterations)]
