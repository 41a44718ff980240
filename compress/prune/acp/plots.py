"""Plots of an ACP search (matplotlib, Agg): fitness over cycles, widths per layer."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

from compress.io import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())  # like every other output: never half a file
    return path.name


def fitness_over_cycles(history: list[dict[str, Any]], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    cycles = [h["cycle"] for h in history]
    ax.plot(cycles, [h["best"] for h in history], "o-", label="best so far")
    ax.plot(cycles, [h["mean"] for h in history], "s--", label="swarm mean")
    ax.set_xlabel("cycle")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("fitness (accuracy - budget penalty)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def widths_per_layer(per_layer: list[dict[str, Any]], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(per_layer)), 3.8))
    x = range(len(per_layer))
    ax.bar(x, [u["before"] for u in per_layer], color="#cccccc", label="unpruned")
    clustered = [u["cluster"]["keep"] if u.get("cluster") else None for u in per_layer]
    if any(c is not None for c in clustered):
        ax.plot(
            x,
            [c if c is not None else float("nan") for c in clustered],
            "k_",
            markersize=10,
            label="clusters",
        )
    ax.bar(x, [u["after"] for u in per_layer], color="#4c72b0", label="searched")
    ax.set_xticks(list(x))
    ax.set_xticklabels(
        [u["layer"].replace("core.", "").replace("backbone.", "") for u in per_layer],
        rotation=90,
        fontsize=6,
    )
    ax.set_ylabel("channels")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_search(report: dict[str, Any], out_dir: Path) -> list[str]:
    out = []
    history = (report.get("search") or {}).get("history") or []
    if history:
        out.append(fitness_over_cycles(history, Path(out_dir) / "acp_fitness.png"))
    if report.get("per_layer"):
        out.append(widths_per_layer(report["per_layer"], Path(out_dir) / "acp_widths.png"))
    return out


def plot_evaluations(
    logs: dict[str, list[dict[str, Any]]], out_dir: Path, name: str = "search_fitness.png"
) -> str:
    """Best fitness so far against fitness evaluations, one line per strategy."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    markers = "osD^vP*X"
    for i, (label, rows) in enumerate(logs.items()):
        if not rows:
            continue
        ax.plot(
            [r["evaluation"] for r in rows],
            [r["best"] for r in rows],
            marker=markers[i % len(markers)],
            markevery=max(1, len(rows) // 12),
            label=label,
        )
    ax.set_xlabel("fitness evaluations")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("best fitness so far")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, Path(out_dir) / name)
