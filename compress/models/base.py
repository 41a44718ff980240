"""The one interface the trainer, evaluator, pruners, recovery and exporter speak to.

Conventions every detector follows:
- images: float tensor [B, 3, H, W], RGB in [0, 1], already resized to `input_size` the
  way `resize_mode` says. Any mean/std normalization happens inside `forward`, so the ONNX
  graph takes the same [0, 1] input and the runtime only divides pixels by 255.
- targets: list (one per image) of dicts with "boxes" float [n, 4] xyxy in input pixels and
  "labels" int64 [n], indices into `class_names`.
- `forward(images)` returns the raw head outputs (what pruning traces and the loss reads).
- `decode(raw)` turns them into `boxes` [B, N, 4] xyxy input pixels and `scores` [B, N, C],
  per-class probabilities (no background column). Export = forward + decode, no NMS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn
from torchvision.ops import batched_nms


class Detector(nn.Module, ABC):
    family: str = "detector"
    class_names: list[str]
    input_size: tuple[int, int]  # (H, W)
    resize_mode: str = "letterbox"  # or "stretch"
    pad_value: int = 114
    default_score_threshold: float = 0.25
    default_nms_iou: float = 0.45

    @abstractmethod
    def forward(self, images: torch.Tensor) -> Any:
        """images -> raw head outputs."""

    def loss(
        self, raw: Any, targets: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Raw outputs + targets -> (total loss, its parts as floats for logging).

        Trainable detectors override this; an evaluation-only one (a peer wrapped for AP) may not.
        """
        raise TypeError(
            f"{type(self).__name__} has no training loss: it can be evaluated, not trained"
        )

    @abstractmethod
    def decode(self, raw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs -> (boxes [B,N,4] xyxy input pixels, scores [B,N,C])."""

    @torch.no_grad()
    def detect(
        self,
        images: torch.Tensor,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        max_detections: int = 300,
    ) -> list[dict[str, torch.Tensor]]:
        """Boxes, scores and labels per image, NMS per class (torchvision)."""
        boxes, scores = self.decode(self(images))
        thr = self.default_score_threshold if score_threshold is None else score_threshold
        iou = self.default_nms_iou if nms_iou is None else nms_iou
        return [postprocess(b, s, thr, iou, max_detections) for b, s in zip(boxes, scores)]

    def export_module(self) -> nn.Module:
        """A module whose forward(images) returns (boxes, scores): what ONNX export traces.

        Returned in eval mode (BN running statistics, no dropout): that is the graph that ships.
        """
        return _Decoded(self).eval()

    def bundle_meta(self) -> dict[str, Any]:
        """The model-bundle fields this detector knows (export adds the rest)."""
        h, w = self.input_size
        return {
            "family": self.family,
            "classes": list(self.class_names),
            "input_shape": [1, 3, h, w],
            "resize": self.resize_mode,
            "pad_value": self.pad_value,
            "score_threshold": self.default_score_threshold,
            "nms_iou": self.default_nms_iou,
        }


class _Decoded(nn.Module):
    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.decode(self.detector(images))


def postprocess(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float,
    nms_iou: float,
    max_detections: int = 300,
) -> dict[str, torch.Tensor]:
    """One image: boxes [N,4], scores [N,C] -> kept boxes, scores, labels (class-wise NMS)."""
    idx, labels = (scores >= score_threshold).nonzero(as_tuple=True)
    b, s = boxes[idx], scores[idx, labels]
    keep = batched_nms(b, s, labels, nms_iou)[:max_detections]
    return {"boxes": b[keep], "scores": s[keep], "labels": labels[keep]}
