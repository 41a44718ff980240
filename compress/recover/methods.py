"""The recovery methods by name. Each is

    method(detector, train_ds, val_ds, cfg, out_dir, teacher=None) -> (detector, report)

with `cfg` the recipe's `recover:` section (trainer keys such as epochs, lr, batch_size apply
to the recovery run; each method reads its own options from `cfg[<method>]`). The returned
detector is the recovered one (for multi-network methods, the best network); `report` holds
the settings, the best val AP point, the AP curve over wall time and images seen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.models.base import Detector
from compress.recover.distill import distill
from compress.recover.finetune import finetune
from compress.recover.grafting import grafting
from compress.recover.multinet import multinet


def distill_frames(
    detector: Detector,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    teacher: Detector | None = None,
) -> tuple[Detector, dict[str, Any]]:
    """Label-free distillation on unlabeled video frames (distill with data: frames)."""
    own = dict(cfg.get("distill") or {})
    return distill(
        detector, train_ds, val_ds, {**cfg, "distill": {**own, "data": "frames"}}, out_dir, teacher
    )


RecoveryMethod = Callable[..., tuple[Detector, dict[str, Any]]]

RECOVERY_METHODS: dict[str, RecoveryMethod] = {
    "finetune": finetune,
    "grafting": grafting,
    "multinet": multinet,
    "distill": distill,
    "distill_frames": distill_frames,
}

NEEDS_TEACHER = {"distill", "distill_frames"}


def get_method(name: str) -> RecoveryMethod:
    if name not in RECOVERY_METHODS:
        raise ValueError(
            f"unknown recovery method {name!r}; choose one of {', '.join(RECOVERY_METHODS)}"
        )
    return RECOVERY_METHODS[name]
