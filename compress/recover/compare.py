"""`--compare`: every recovery method on the same pruned model and the same image budget.

Each method starts from a copy of the same pruned detector and reads about the same number of
training images (`budget_images`, by default recover.epochs x the training-set size; a method
with N networks gives each N times fewer epochs; label-free distillation counts frames). The
table (AP50, AP50:95, wall time, images seen) goes into the report and `compare.md`, and
`compare.png` plots val AP50 against wall time and images seen per method.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

from compress.io import atomic_write_bytes, atomic_write_text
from compress.models.base import Detector
from compress.recover.methods import NEEDS_TEACHER, RECOVERY_METHODS

COLUMNS = ("method", "AP50", "AP50_95", "wall_s", "images_seen", "epochs")


def start_point(detector: Detector, val_ds: Any, batch_size: int) -> dict[str, Any]:
    from compress.evaluate import evaluate_detector

    metrics = evaluate_detector(detector, val_ds, batch_size=batch_size)
    return {"wall_s": 0.0, "images_seen": 0, "AP50": metrics["AP50"], "AP50_95": metrics["AP50_95"]}


def compare_methods(
    detector: Detector,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    teacher: Detector | None = None,
    methods: list[str] | None = None,
) -> tuple[Detector, dict[str, Any]]:
    """Run `methods` (default: all that can run) and return (best detector by AP50, report)."""
    out_dir = Path(out_dir)
    names = list(
        methods or [m for m in RECOVERY_METHODS if teacher is not None or m not in NEEDS_TEACHER]
    )
    unknown = [m for m in names if m not in RECOVERY_METHODS]
    if unknown:
        raise ValueError(
            f"compare: unknown method(s) {', '.join(unknown)}; known: {', '.join(RECOVERY_METHODS)}"
        )
    if teacher is None and NEEDS_TEACHER & set(names):
        raise ValueError(f"compare: {', '.join(sorted(NEEDS_TEACHER & set(names)))} need a teacher")
    budget = int(cfg.get("budget_images") or int(cfg.get("epochs", 5)) * len(train_ds))
    start = start_point(detector, val_ds, int(cfg.get("batch_size", 8)))
    rows, reports, models = [], {}, {}
    for name in names:
        model, report = RECOVERY_METHODS[name](
            copy.deepcopy(detector),
            train_ds,
            val_ds,
            {**cfg, "budget_images": budget},
            out_dir / name,
            teacher,
        )
        report["curve"] = [start, *report["curve"]]
        reports[name], models[name] = report, model
        best = report.get("best") or {}
        rows.append(
            {
                "method": name,
                "AP50": best.get("AP50"),
                "AP50_95": best.get("AP50_95"),
                "wall_s": report["wall_s"],
                "images_seen": report["images_seen"],
                "epochs": report.get("settings", {}).get("epochs"),
            }
        )
    winner = max(rows, key=lambda r: -1.0 if r["AP50"] is None else r["AP50"])["method"]
    atomic_write_text(out_dir / "compare.md", markdown_table(rows, start))
    plot_curves(reports, out_dir / "compare.png")
    return models[winner], {
        "method": "compare",
        "budget_images": budget,
        "start": start,
        "table": rows,
        "best_method": winner,
        "table_md": "compare.md",
        "plot": "compare.png",
        "methods": reports,
    }


def markdown_table(rows: list[dict[str, Any]], start: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))

    lines = [
        f"Pruned model before recovery: AP50 {cell(start['AP50'])}, AP50:95 {cell(start['AP50_95'])}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_curves(reports: dict[str, dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, report in reports.items():
        pts = [p for p in report["curve"] if p.get("AP50") is not None]
        for ax, key in zip(axes, ("wall_s", "images_seen")):
            ax.plot([p[key] for p in pts], [p["AP50"] for p in pts], marker="o", label=name)
    axes[0].set(xlabel="wall time (s)", ylabel="val AP50 (person)", title="recovery: AP over time")
    axes[1].set(xlabel="training images seen", title="recovery: AP per image budget")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
