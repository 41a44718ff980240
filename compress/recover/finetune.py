"""Fine-tuning: the trainer with the recovery schedule; the best epoch by val AP is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.models.base import Detector
from compress.recover.common import (
    best_point,
    budget_epochs,
    curve_from_history,
    recovery_train_cfg,
)
from compress.train.engine import load_best, train


def finetune(
    detector: Detector,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    teacher: Detector | None = None,
) -> tuple[Detector, dict[str, Any]]:
    """Train `detector` in place for `cfg["epochs"]` epochs; return it with the best weights."""
    train_cfg = recovery_train_cfg(cfg, **budget_epochs(cfg, len(train_ds)))
    history = train(detector, train_ds, val_ds, train_cfg, out_dir)
    kept_best = load_best(detector, out_dir)
    curve = curve_from_history(history)
    return detector, {
        "method": "finetune",
        "settings": history["config"],
        "kept": "best" if kept_best else "final",
        "best": best_point(curve),
        "curve": curve,
        "images_seen": history["images_seen"],
        "wall_s": history["wall_s"],
    }
