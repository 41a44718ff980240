"""Person specialization: turn a multi-class detector into one for the kept classes only.

For YOLO, each head conv emits per anchor `4 box + 1 objectness + C class logits`; keeping the
box, objectness and kept-class rows of that conv (weights and bias) gives a smaller head whose
outputs for the kept classes are exactly the old ones (sigmoid is per logit, so nothing else
changes). The `[yolo]` blocks' `classes`, the conv's `filters` and `class_names` follow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from compress.models.base import Detector


def _keep_indices(class_names: Sequence[str], keep: Sequence[str]) -> list[int]:
    missing = [k for k in keep if k not in class_names]
    if missing:
        shown = ", ".join(list(class_names)[:10]) + (" ..." if len(class_names) > 10 else "")
        raise ValueError(f"classes {missing} are not in this model's classes ({shown})")
    if len(set(keep)) != len(keep):
        raise ValueError(f"keep lists a class twice: {list(keep)}")
    return [list(class_names).index(k) for k in keep]


def _specialize_yolo(detector: Detector, keep: Sequence[str]) -> Detector:

    idx = _keep_indices(detector.class_names, keep)
    detector.sync_blocks()
    blocks = [dict(b) for b in detector.blocks]
    state = detector.state_dict()
    for i in detector.yolo_indices:
        layer = detector.module_list[i]
        head = detector.module_list[i - 1]
        if blocks[i - 1]["type"] != "convolutional" or hasattr(head, "bn"):
            raise ValueError(
                f"layer {i} [yolo]: the layer before must be a plain conv head (no batch norm) to slice"
            )
        per = layer.outputs_per_anchor
        rows = torch.tensor(
            [
                a * per + r
                for a in range(layer.num_anchors)
                for r in [0, 1, 2, 3, 4] + [5 + k for k in idx]
            ]
        )
        for name in ("weight", "bias"):
            key = f"module_list.{i - 1}.conv.{name}"
            if key in state:
                state[key] = state[key].index_select(0, rows).clone()
        blocks[i - 1]["filters"] = len(rows)
        blocks[i]["classes"] = len(idx)
    new = detector.rebuilt(blocks, class_names=keep)
    new.load_state_dict(state)
    return new.train(detector.training)


def _lazy(module: str, name: str) -> Callable[[Detector, Sequence[str]], Detector]:
    def call(detector: Detector, keep: Sequence[str]) -> Detector:
        fn = getattr(importlib.import_module(module), name, None)
        if fn is None:
            raise ValueError(
                f"{module} has no {name}(); build the {detector.family} model with `classes:` "
                "in its recipe instead"
            )
        return fn(detector, keep)

    return call


# family -> specializer; SSD's lives with its model (`compress.models.ssd.specialize`).
SPECIALIZERS: dict[str, Callable[[Detector, Sequence[str]], Detector]] = {
    "yolo": _specialize_yolo,
    "ssd": _lazy("compress.models.ssd", "specialize"),
}


def specialize(detector: Detector, keep: Sequence[str] = ("person",)) -> Detector:
    """A detector for the `keep` classes only (in that order); returns a new module.

    Example:
        >>> coco = load_detector({"family": "yolo", "cfg": ..., "weights": ..., "names": ...})
        >>> person = specialize(coco, ("person",))   # heads 255 -> 18 channels
    """
    keep = [keep] if isinstance(keep, str) else list(keep)
    if not keep:
        raise ValueError("specialize: keep at least one class")
    if list(keep) == list(detector.class_names):
        return detector
    fn = SPECIALIZERS.get(getattr(detector, "family", ""))
    if fn is None:
        raise ValueError(
            f"no specializer for family {detector.family!r}; known: {', '.join(SPECIALIZERS)}"
        )
    return fn(detector, keep)


def head_channels(detector: nn.Module) -> list[int]:
    """Output channels of each YOLO head conv (what specialization shrinks)."""
    return [detector.module_list[i - 1].conv.out_channels for i in detector.yolo_indices]
