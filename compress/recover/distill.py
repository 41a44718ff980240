"""Knowledge distillation from the unpruned teacher into the pruned student.

- Response-based: the student's decoded outputs follow the teacher's, anchor by anchor:
  BCE between class scores (teacher scores as soft targets) plus an L1 box term weighted by
  the teacher's confidence (boxes in units of the input size). Needs the same head layout,
  which channel pruning keeps (same grids and anchors).
- Feature-based: on chosen layers, a 1x1 conv adapter maps the student's (pruned) channels to
  the teacher's and an MSE pulls them together (FitNets). The adapters train with the student
  and are dropped afterwards; the MSE is divided by the teacher feature's variance so its
  weight does not depend on the layer's scale. `feature_layers: auto` takes, for a YOLO, the layer feeding each
  head conv; other families name their layers.
- With labels (`data: labels`): the detector's own loss on the labelled set plus the two terms.
  Label-free (`data: frames`): only the two terms, on unlabeled video frames (vtest.avi by
  default), since deployments have far more video than labels.

The student trains inside `DistillationModel`, a Detector whose forward also runs the frozen
teacher during training; in eval mode it is exactly the student, so the trainer evaluates and
keeps the best student as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from compress.models.base import Detector
from compress.recover.common import (
    best_point,
    budget_epochs,
    curve_from_history,
    options,
    recovery_train_cfg,
)
from compress.train.engine import load_best, train

DEFAULTS: dict[str, Any] = {
    "data": "labels",  # or "frames" (label-free)
    "label_weight": 1.0,
    "response_weight": 1.0,
    "box_weight": 1.0,
    "feature_weight": 1.0,
    "feature_layers": "auto",
    "video": "video/vtest.avi",
    "frame_stride": 5,
    "max_frames": 120,
}


def default_feature_layers(detector: nn.Module) -> list[str]:
    """For a Darknet YOLO: the block that feeds each head conv (`module_list.{i-2}`)."""
    blocks = getattr(detector, "blocks", None)
    heads = getattr(detector, "yolo_indices", None)
    if not blocks or heads is None:
        return []
    return [
        f"module_list.{i - 2}" for i in heads if i >= 2 and blocks[i - 2]["type"] == "convolutional"
    ]


def response_loss(
    s_boxes: torch.Tensor,
    s_scores: torch.Tensor,
    t_boxes: torch.Tensor,
    t_scores: torch.Tensor,
    size: float,
    box_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score BCE, confidence-weighted box L1 / size) between decoded outputs."""
    if s_scores.shape != t_scores.shape or s_boxes.shape != t_boxes.shape:
        raise ValueError(
            f"distill: response distillation needs the teacher's head layout; student gives "
            f"{tuple(s_scores.shape)}, teacher {tuple(t_scores.shape)}"
        )
    s_scores, t_scores = s_scores.float().clamp(1e-6, 1 - 1e-6), t_scores.float()
    score = F.binary_cross_entropy(s_scores, t_scores)
    conf = t_scores.max(-1).values  # [B, N]: how sure the teacher is that this box is real
    l1 = (s_boxes.float() - t_boxes.float()).abs().sum(-1) / size
    box = box_weight * (conf * l1).sum() / conf.sum().clamp_min(1e-6)
    return score, box


class DistillationModel(Detector):
    """Student + frozen teacher + feature adapters, trained as one Detector."""

    def __init__(self, student: Detector, teacher: Detector, opts: dict[str, Any]) -> None:
        super().__init__()
        self.student, self.opts = student, opts
        # Not a submodule: checkpoints hold the student and adapters only, not the teacher.
        object.__setattr__(self, "teacher", teacher)
        for attr in (
            "class_names",
            "input_size",
            "resize_mode",
            "pad_value",
            "default_score_threshold",
            "default_nms_iou",
        ):
            setattr(self, attr, getattr(student, attr))
        self.family = student.family
        teacher.requires_grad_(False)
        layers = opts["feature_layers"]
        self.layers = default_feature_layers(student) if layers == "auto" else list(layers or [])
        if float(opts["feature_weight"]) == 0:
            self.layers = []
        self._feats: dict[str, dict[str, torch.Tensor]] = {"s": {}, "t": {}}
        self._hooks = []
        for tag, model in (("s", student), ("t", teacher)):
            modules = dict(model.named_modules())
            for name in self.layers:
                if name not in modules:
                    raise KeyError(
                        f"distill: feature layer {name!r} is not in the {'student' if tag == 's' else 'teacher'}"
                    )
                self._hooks.append(modules[name].register_forward_hook(self._keeper(tag, name)))
        self.adapters = nn.ModuleDict(self._build_adapters())

    def _keeper(self, tag: str, name: str):
        def keep(module, inputs, output):
            self._feats[tag][name] = output

        return keep

    def _build_adapters(self) -> dict[str, nn.Conv2d]:
        if not self.layers:
            return {}
        h, w = self.input_size
        probe = torch.zeros(1, 3, h, w, device=next(self.student.parameters()).device)
        was = self.student.training
        with torch.no_grad():
            self.student.eval()
            self.student(probe)
            self.teacher.eval()
            self.teacher.to(probe.device)(probe)
        self.student.train(was)
        out = {}
        for name in self.layers:
            cs, ct = self._feats["s"][name].shape[1], self._feats["t"][name].shape[1]
            out[name.replace(".", "_")] = nn.Conv2d(cs, ct, 1)
        return out

    def train(self, mode: bool = True) -> DistillationModel:
        super().train(mode)
        self.teacher.eval()  # the teacher's BN statistics never move
        return self

    def forward(self, images: torch.Tensor) -> Any:
        raw = self.student(images)
        if not self.training:
            return raw
        if next(self.teacher.parameters()).device != images.device:
            self.teacher.to(images.device)
        with torch.no_grad():
            t_boxes, t_scores = self.teacher.decode(self.teacher(images))
        return {
            "raw": raw,
            "t_boxes": t_boxes,
            "t_scores": t_scores,
            "s": dict(self._feats["s"]),
            "t": dict(self._feats["t"]),
        }

    def decode(self, raw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.student.decode(raw)

    def feature_loss(self, name: str, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """MSE of adapter(student) vs teacher, over the teacher's variance (scale-free)."""
        t = t.float()
        return F.mse_loss(self.adapters[name.replace(".", "_")](s.float()), t) / t.var().clamp_min(
            1e-6
        )

    def loss(
        self, out: dict[str, Any], targets: list[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.opts
        total = out["t_scores"].new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        if o["data"] == "labels" and float(o["label_weight"]):
            label, label_parts = self.student.loss(out["raw"], targets)
            total = total + float(o["label_weight"]) * label
            parts.update({f"label_{k}": v for k, v in label_parts.items()})
        with torch.autocast(total.device.type, enabled=False):
            if float(o["response_weight"]):
                s_boxes, s_scores = self.student.decode(out["raw"])
                score, box = response_loss(
                    s_boxes,
                    s_scores,
                    out["t_boxes"],
                    out["t_scores"],
                    float(max(self.input_size)),
                    float(o["box_weight"]),
                )
                total = total + float(o["response_weight"]) * (score + box)
                parts.update(kd_score=float(score.detach()), kd_box=float(box.detach()))
            if self.layers:
                feat = sum(self.feature_loss(n, out["s"][n], out["t"][n]) for n in self.layers)
                total = total + float(o["feature_weight"]) * feat
                parts["kd_feature"] = float(feat.detach())
        return total, parts


def distill(
    detector: Detector,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    teacher: Detector | None = None,
) -> tuple[Detector, dict[str, Any]]:
    """Train the pruned `detector` against `teacher`; returns the best student (by val AP)."""
    if teacher is None:
        raise ValueError("distill: needs the unpruned teacher (teacher=..., or --teacher DIR)")
    opts = options(cfg, "distill", DEFAULTS)
    if opts["data"] not in ("labels", "frames"):
        raise ValueError(f"distill: data must be 'labels' or 'frames', got {opts['data']!r}")
    data = train_ds
    if opts["data"] == "frames":
        from compress.recover.frames import VideoFrames

        data = VideoFrames(
            opts["video"],
            tuple(detector.input_size),
            detector.resize_mode,
            detector.pad_value,
            int(opts["frame_stride"]),
            int(opts["max_frames"]),
            list(detector.class_names),
        )
    train_cfg = recovery_train_cfg(cfg, **budget_epochs(cfg, len(data)))
    # The teacher is frozen for the run only: the caller's model (the pipeline's unpruned
    # base, which later stages trace and prune) gets its requires_grad flags back.
    flags = [p.requires_grad for p in teacher.parameters()]
    model = DistillationModel(detector, teacher.eval(), opts)
    try:
        history = train(model, data, val_ds, train_cfg, out_dir)
        kept_best = load_best(model, out_dir)
    finally:
        for h in model._hooks:
            h.remove()
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)
    student = model.student.cpu().eval()
    curve = curve_from_history(history)
    return student, {
        "method": "distill_frames" if opts["data"] == "frames" else "distill",
        "settings": {**history["config"], "distill": opts},
        "feature_layers": model.layers,
        "train_images": len(data),
        "kept": "best" if kept_best else "final",
        "best": best_point(curve),
        "curve": curve,
        "images_seen": history["images_seen"],
        "wall_s": history["wall_s"],
    }
