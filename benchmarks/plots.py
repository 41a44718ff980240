"""The report's figures (matplotlib, Agg), each returned as PNG bytes.

PNGs are written without matplotlib's "Software" text chunk so the HTML report holds no
URL at all, not even inside an embedded image.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

STAGE_ORDER = ("capture", "preprocess", "inference", "postprocess", "output")
COLORS = {"unpruned": "#8c8c8c", "final": "#55a868", "peer": "#c44e52", "intermediate": "#4c72b0"}


def _png(fig, layout: bool = True) -> bytes:
    buf = io.BytesIO()
    if layout:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _color(role: str) -> str:
    return COLORS.get(role.split()[0] if role else "", "#4c72b0")


def latency_bars(groups: list[tuple[str, list[dict[str, Any]]]]) -> bytes:
    """One panel per (title, rows); each row: name, role, p50, p90 (ms). Bar = p50, whisker = p90."""
    groups = [(t, rows) for t, rows in groups if rows]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    for ax, (title, rows) in zip(axes[0], groups):
        x = range(len(rows))
        p50 = [r["p50"] for r in rows]
        up = [max(0.0, r["p90"] - r["p50"]) for r in rows]
        ax.bar(
            x, p50, color=[_color(r["role"]) for r in rows], yerr=[[0] * len(rows), up], capsize=6
        )
        tallest = max(v + u for v, u in zip(p50, up)) or 1.0
        for i, v in enumerate(p50):
            if v >= 0.15 * tallest:  # inside the bar: the whisker keeps the top free
                ax.annotate(
                    f"{v:.1f}", (i, v / 2), ha="center", va="center", fontsize=9, color="white"
                )
            else:  # too short to hold white text: dark, just above the whisker
                ax.annotate(
                    f"{v:.1f}", (i, v + up[i]), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=9, color="#222222",
                )  # fmt: skip
        ax.set_ylim(top=tallest * 1.12)
        ax.set_xticks(list(x), [r["name"] for r in rows], rotation=20, ha="right")
        ax.set_ylabel("ms per frame (bar p50, whisker p90)")
        ax.set_title(title)
    return _png(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher x and higher y are
    better), ordered by x: the speed/accuracy trade-offs worth choosing from."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


# Where a point's name may go, in points from the point, tried in order.
LABEL_OFFSETS = [(dx, dy) for dy in (4, -6, 14, -16, 24, -26, 34, -36) for dx in (6, -6)]


def place_labels(fig, ax, points: list[tuple[float, float]], names: list[str]) -> list:
    """Annotate each point with its name where it overlaps no other name and no other point
    (first free slot of LABEL_OFFSETS, else the least crowded one); returns the annotations."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    marks = [ax.transData.transform(p) for p in points]
    placed, boxes = [], []
    for (x, y), name in zip(points, names):
        best = None
        for dx, dy in LABEL_OFFSETS:
            text = ax.annotate(
                name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top",
            )  # fmt: skip
            box = text.get_window_extent(renderer).expanded(1.05, 1.1)
            hits = sum(box.overlaps(b) for b in boxes)
            hits += sum(
                box.x0 - 4 <= mx <= box.x1 + 4 and box.y0 - 4 <= my <= box.y1 + 4
                for mx, my in marks
            )
            # outside the axes a name is cut off at the figure's edge: worse than a crowd
            hits += 10 * (
                box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1
            )
            if best is None or hits < best[0]:
                if best is not None:
                    best[1].remove()
                best = (hits, text, box)
            else:
                text.remove()
            if hits == 0:
                break
        placed.append(best[1])
        boxes.append(best[2])
    return placed


def ap_vs_fps_figure(rows: list[dict[str, Any]], xlabel: str):
    """rows: name, role, fps, AP50. Points, their names (never on top of each other) and the
    Pareto front as a dashed line; the figure, for `ap_vs_fps` and tests."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    pts = [(r["fps"], r["AP50"]) for r in rows]
    for r in rows:
        ax.scatter(r["fps"], r["AP50"], s=60, color=_color(r["role"]), zorder=3)
    front = pareto_front(pts)
    if len(front) > 1:
        ax.plot(
            [pts[i][0] for i in front],
            [pts[i][1] for i in front],
            "--",
            color="#333333",
            lw=1,
            label="Pareto front",
            zorder=2,
        )
        ax.legend(loc="best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("person AP50")
    xs = [p[0] for p in pts if p[0] > 0]
    if xs and max(xs) / min(xs) > 20:  # a log axis only when speeds span orders of magnitude
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        ax.set_xlim(left=0, right=max(xs or [1]) * 1.15)
    ax.set_ylim(bottom=0, top=max([p[1] for p in pts] + [0.01]) * 1.15)
    ax.grid(alpha=0.3)
    ax.set_title("accuracy vs speed")
    fig.tight_layout()  # the final layout first: labels are placed in display coordinates
    place_labels(fig, ax, pts, [str(r["name"]) for r in rows])
    return fig


def ap_vs_fps(rows: list[dict[str, Any]], xlabel: str) -> bytes:
    """rows: name, role, fps, AP50 -> PNG (see `ap_vs_fps_figure`)."""
    return _png(ap_vs_fps_figure(rows, xlabel), layout=False)  # labels were placed on it


def stage_bars(loops: dict[str, dict[str, float]]) -> bytes:
    """{model: {stage: mean ms}} -> stacked horizontal bars (where a frame's time goes)."""
    names = list(loops)
    fig, ax = plt.subplots(figsize=(8.5, 1.4 + 0.6 * len(names)))
    left = [0.0] * len(names)
    cmap = plt.get_cmap("tab10")
    for k, stage in enumerate(STAGE_ORDER):
        vals = [float(loops[n].get(stage) or 0.0) for n in names]
        if not any(vals):
            continue
        ax.barh(names, vals, left=left, color=cmap(k), label=stage)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("mean ms per frame and stage (stages overlap in the threaded loop)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("edge runtime loop: per-stage time")
    return _png(fig)


def layer_widths(series: list[tuple[str, list[dict[str, Any]]]]) -> bytes:
    """[(label, [{layer, before, after}])]: the first's `before` and every series' `after`."""
    first = series[0][1]
    layers = [r["layer"] for r in first]
    idx = list(range(len(layers)))
    fig, ax = plt.subplots(figsize=(max(6.5, 0.28 * len(layers)), 3.8))
    ax.bar(idx, [r["before"] for r in first], color="#dddddd", label="unpruned", width=0.85)
    width = 0.85 / len(series)
    for k, (label, rows) in enumerate(series):
        after = {r["layer"]: r["after"] for r in rows}
        ax.bar(
            [i - 0.425 + width * (k + 0.5) for i in idx],
            [after.get(layer, 0) for layer in layers],
            width=width,
            label=label,
        )
    step = max(1, len(idx) // 25)
    ax.set_xticks(idx[::step], [str(layers[i]) for i in idx[::step]])
    ax.set_xlabel("conv layer (cfg index)")
    ax.set_ylabel("output channels")
    ax.legend(fontsize=8)
    ax.set_title("channels per layer")
    return _png(fig)
