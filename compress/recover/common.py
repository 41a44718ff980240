"""Settings and report pieces every recovery method shares."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from compress.train.engine import DEFAULTS as TRAIN_DEFAULTS

# A recovery-friendly schedule: the weights are already good, so no warm-up, a small lr
# decaying by cosine, and evaluation every epoch to keep the best.
RECOVERY_DEFAULTS: dict[str, Any] = {
    "epochs": 5,
    "lr": 0.002,
    "lrf": 0.05,
    "warmup_epochs": 0.0,
    "scheduler": "cosine",
    "eval_every": 1,
}


def recovery_train_cfg(cfg: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """Trainer settings for a recovery run.

    Order (later wins): RECOVERY_DEFAULTS < cfg["train"] (the recipe's train section, if the
    caller nests it there, minus its epochs / warm-up / resume) < the recovery section's own
    trainer keys < `fixed` (what the method itself decides, e.g. per-network lr).
    """
    base = dict(cfg.get("train") or {})
    for key in ("epochs", "warmup_epochs", "resume", "lr"):
        base.pop(key, None)
    own = {k: v for k, v in cfg.items() if k in TRAIN_DEFAULTS}
    return {**RECOVERY_DEFAULTS, **base, **own, **fixed}


def budget_epochs(cfg: dict[str, Any], images_per_epoch: int, networks: int = 1) -> dict[str, Any]:
    """{"epochs": n} so that `networks` copies reading `images_per_epoch` images per epoch see
    about `cfg["budget_images"]` images in all (what --compare equalizes); {} without a budget."""
    budget = cfg.get("budget_images")
    if not budget:
        return {}
    return {"epochs": max(1, round(int(budget) / max(images_per_epoch * networks, 1)))}


def options(cfg: dict[str, Any], method: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """A method's own options: `cfg[method]` over `defaults`; unknown keys are an error."""
    given = dict(cfg.get(method) or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"recover.{method}: unknown option(s) {', '.join(unknown)}; known: {', '.join(defaults)}"
        )
    return {**defaults, **given}


def curve_from_history(history: dict[str, Any]) -> list[dict[str, Any]]:
    """(wall_s, images_seen, AP50, AP50_95) per evaluated epoch: the plot's points."""
    return [
        {k: e.get(k) for k in ("epoch", "wall_s", "images_seen", "AP50", "AP50_95", "loss")}
        for e in history.get("epochs", [])
        if "AP50" in e
    ]


def best_point(curve: list[dict[str, Any]]) -> dict[str, Any]:
    points = [p for p in curve if p.get("AP50") is not None]
    return max(points, key=lambda p: p["AP50"]) if points else {}


def fresh_copy(detector: Any) -> Any:
    return copy.deepcopy(detector)


def out_path(out_dir: str | Path, *parts: str) -> Path:
    path = Path(out_dir).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
