"""Plots of a prune run (matplotlib, Agg): what a user looks at before trusting the numbers.

- `gamma_histogram`: the log10 score distribution with the learned threshold.
- `channels_per_layer`: channels before/after per conv layer.
- `ap_vs_flops`: AP50 against FLOPs over the cycles (with the unpruned model and the
  fixed-percentile baseline when present).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

from compress.io import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())  # like every other output: never half a file
    return path


def gamma_histogram(
    hist: dict[str, Any], threshold: dict[str, Any], path: Path, title: str = ""
) -> Path:
    counts, edges = hist["counts"], hist["edges"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(
        edges[:-1],
        counts,
        width=[b - a for a, b in zip(edges[:-1], edges[1:])],
        align="edge",
        color="#4c72b0",
    )
    import math

    cut = math.log10(max(float(threshold["value"]), 1e-8))
    ax.axvline(
        cut,
        color="#c44e52",
        lw=2,
        label=f"{threshold['method']} threshold = {threshold['value']:.3g}",
    )
    ax.set_xlabel("log10 channel score (|gamma|)")
    ax.set_ylabel("channels")
    ax.set_title(title or "channel scores")
    ax.legend()
    return _save(fig, path)


def channels_per_layer(per_layer: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    idx = list(range(len(per_layer)))
    fig, ax = plt.subplots(figsize=(max(6, len(idx) * 0.18), 3.5))
    ax.bar(idx, [r["before"] for r in per_layer], color="#cccccc", label="before")
    ax.bar(idx, [r["after"] for r in per_layer], color="#55a868", label="after")
    step = max(1, len(idx) // 20)
    ax.set_xticks(idx[::step], [str(per_layer[i]["layer"]) for i in idx[::step]])
    ax.set_xlabel("conv layer (cfg index)")
    ax.set_ylabel("channels")
    ax.set_title(title or "channels per layer")
    ax.legend()
    return _save(fig, path)


def ap_vs_flops(
    points: list[dict[str, Any]], path: Path, baseline: dict[str, Any] | None = None
) -> Path:
    """`points`: dicts with label, flops, AP50 (in order)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [p for p in points if "AP50" in p]
    ax.plot(
        [p["flops"] / 1e9 for p in pts],
        [p["AP50"] for p in pts],
        "o-",
        color="#4c72b0",
        label="adaptive cycles",
    )
    for p in pts:
        ax.annotate(
            p["label"],
            (p["flops"] / 1e9, p["AP50"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if baseline and "AP50" in baseline:
        ax.plot(
            [baseline["flops"] / 1e9],
            [baseline["AP50"]],
            "s",
            color="#c44e52",
            label="fixed percentile",
        )
    ax.set_xlabel("GFLOPs (2 x MACs)")
    ax.set_ylabel("AP50 (held-out)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_report(report: dict[str, Any], out_dir: Path) -> list[str]:
    """Every plot of a slimming report into `out_dir`; returns their file names."""
    out: list[Path] = []
    for rec in report.get("cycles", []):
        k, p = rec["cycle"], rec.get("prune", {})
        if "scores_log10_hist" in p:
            out.append(
                gamma_histogram(
                    p["scores_log10_hist"],
                    p["threshold"],
                    out_dir / f"gamma_hist_cycle{k}.png",
                    f"cycle {k}: channel scores",
                )
            )
        if p.get("per_layer"):
            out.append(
                channels_per_layer(
                    p["per_layer"],
                    out_dir / f"channels_cycle{k}.png",
                    f"cycle {k}: channels per layer",
                )
            )
    points = []
    if report.get("baseline"):
        points.append({"label": "unpruned", **report["baseline"]})
    for rec in report.get("cycles", []):
        for stage in ("pruned", "recovered"):
            if stage in rec:
                points.append({"label": f"c{rec['cycle']} {stage}", **rec[stage]})
    comp = (report.get("threshold_comparison") or {}).get("percentile", {}).get("recovered")
    if points:
        out.append(ap_vs_flops(points, out_dir / "ap_vs_flops.png", comp))
    return [p.name for p in out]
