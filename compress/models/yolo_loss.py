"""YOLOv3 loss: Darknet's matching, GIoU boxes, BCE objectness and classes.

Matching (Darknet v3): each ground-truth box goes to the one anchor, over all heads, whose
shape fits it best (IoU of widths/heights, centres aligned), in the grid cell holding its
centre. Predictions that overlap any ground truth by more than `ignore_iou` (0.7, Darknet's
`ignore_thresh`) but were not matched are left out of the "no object" term, so good
near-duplicates are not pushed down.

Terms, all on the raw head outputs:
- box: 1 - GIoU between the decoded matched prediction and its ground truth. GIoU rather than
  Darknet's MSE on (tx, ty, tw, th): it is scale free (no `2 - w*h` weighting to tune) and is
  what later YOLOs settled on; it also measures what the evaluation measures (overlap).
- objectness: BCE over every cell and anchor (target 1 at matches), averaged per head and
  weighted by head stride (4.0 / 1.0 / 0.4 for strides 8 / 16 / 32, as YOLOv5 found best).
- classes: BCE against one-hot labels at the matches (sigmoid per class, like Darknet v3).
Total = (box_gain * box + obj_gain * obj + cls_gain * cls) * batch size.

Under DDP the box and class means are over the global batch's matches per head (summed over
ranks, `compress.train.distributed.global_count`), so that N processes train the one-process
objective; the trainer scales the per-image sum by N.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss

from compress.train.distributed import global_count

# head stride -> objectness weight (YOLOv5's balance); other strides weigh 1.0
STRIDE_BALANCE = {8: 4.0, 16: 1.0, 32: 0.4}
MAX_LOG_WH = 8.0  # exp(8) ~ 3000x the anchor: keeps early training finite


class YOLOLoss(nn.Module):
    """Loss for `YOLO.forward` outputs and targets in the `Detector` convention.

    Args:
        layers: the model's `YOLOLayer`s (anchors, grid, stride), in head order.
        box_gain, obj_gain, cls_gain: weights of the three terms.
        ignore_iou: predictions overlapping a ground truth above this are not "no object".
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        box_gain: float = 0.05,
        obj_gain: float = 1.0,
        cls_gain: float = 0.5,
        ignore_iou: float = 0.7,
    ) -> None:
        super().__init__()
        self.layers = list(layers)
        self.box_gain, self.obj_gain, self.cls_gain, self.ignore_iou = (
            box_gain,
            obj_gain,
            cls_gain,
            ignore_iou,
        )

    def forward(
        self, raw: Sequence[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if len(raw) != len(self.layers):
            raise ValueError(
                f"loss got {len(raw)} head outputs for {len(self.layers)} [yolo] layers"
            )
        device, batch = raw[0].device, raw[0].shape[0]
        if len(targets) != batch:
            raise ValueError(f"loss got {len(targets)} targets for a batch of {batch} images")
        gt_img, gt_box, gt_cls = _flatten(targets, device)
        head_of, anchor_of = self._match(gt_box)
        padded = _pad_boxes(targets, batch, device)  # [B, Gmax, 4] for the ignore test
        zero = raw[0].sum() * 0.0
        share = self._rank_share(head_of, device)
        lbox, lobj, lcls = zero, zero, zero
        for h, (layer, out) in enumerate(zip(self.layers, raw)):
            p = layer.split(
                out
            ).float()  # [B, A, ny, nx, 5 + C]; fp32: exp(tw) * anchor overflows fp16 under AMP
            ny, nx = layer.grid_hw
            sx, sy = layer.stride_xy
            obj_target = torch.zeros(p.shape[:4], device=device)
            obj_weight = torch.ones_like(obj_target)
            if padded.shape[1]:
                with torch.no_grad():
                    best = _batched_iou(_boxes(p.detach(), layer).flatten(1, 3), padded).amax(2)
                obj_weight = (best <= self.ignore_iou).float().view_as(obj_weight)
            sel = head_of == h
            if sel.any():
                b, a, box, cls = gt_img[sel], anchor_of[sel], gt_box[sel], gt_cls[sel]
                cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
                gi = (cx / sx).long().clamp(0, nx - 1)
                gj = (cy / sy).long().clamp(0, ny - 1)
                pm = p[b, a, gj, gi]  # [M, 5 + C] matched predictions
                pred = _boxes(pm, layer, (gi, gj), a)
                box_h = generalized_box_iou_loss(pred, box, reduction="mean")
                onehot = F.one_hot(cls, layer.num_classes).to(pm.dtype)
                cls_h = F.binary_cross_entropy_with_logits(pm[:, 5:], onehot)
                if share is not None:  # this rank's mean -> its part of the global mean
                    box_h, cls_h = box_h * share[h], cls_h * share[h]
                lbox, lcls = lbox + box_h, lcls + cls_h
                obj_target[b, a, gj, gi] = 1.0
                obj_weight[b, a, gj, gi] = 1.0
            balance = STRIDE_BALANCE.get(round(sx), 1.0)
            lobj = lobj + balance * F.binary_cross_entropy_with_logits(
                p[..., 4], obj_target, weight=obj_weight
            )
        total = (self.box_gain * lbox + self.obj_gain * lobj + self.cls_gain * lcls) * batch
        return total, {
            "box": float(lbox.detach()),
            "obj": float(lobj.detach()),
            "cls": float(lcls.detach()),
            "matches": int(gt_box.shape[0]),
        }

    def _rank_share(self, head_of: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """Per head: world size x this rank's matches / all ranks' matches, under DDP; else None.

        A rank's mean over its M_r matches times N * M_r / M is its share of the global mean
        scaled like a per-image sum, which the trainer's x N makes whole. Outside DDP nothing
        is multiplied, so the one-process loss stays bit-identical.
        """
        counts = torch.bincount(head_of, minlength=len(self.layers)).to(device, torch.float32)
        reduced = global_count(counts)
        if reduced is None:
            return None
        total, world = reduced
        return counts * world / total.clamp(min=1.0)

    def _match(self, gt_box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(head index, anchor index) of the best-fitting anchor for each ground truth."""
        anchors = torch.cat([layer.anchor_wh for layer in self.layers]).to(gt_box.device)
        heads = torch.cat(
            [torch.full((layer.num_anchors,), h) for h, layer in enumerate(self.layers)]
        )
        local = torch.cat([torch.arange(layer.num_anchors) for layer in self.layers])
        wh = (gt_box[:, 2:] - gt_box[:, :2]).clamp(min=1e-6)
        inter = torch.min(wh[:, None], anchors[None]).prod(2)
        iou = inter / (wh.prod(1)[:, None] + anchors.prod(1)[None] - inter)
        best = iou.argmax(1).cpu() if len(wh) else torch.zeros(0, dtype=torch.long)
        return heads[best].to(gt_box.device), local[best].to(gt_box.device)


def _boxes(
    p: torch.Tensor,
    layer: nn.Module,
    cells: tuple[torch.Tensor, torch.Tensor] | None = None,
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """xyxy input-pixel boxes of raw predictions: the whole head, or the given cells/anchors."""
    if cells is None:
        grid, anchor_wh = layer.grid, layer.anchor_wh.view(-1, 1, 1, 2)
    else:
        grid = torch.stack(cells, 1).to(p.dtype)
        anchor_wh = layer.anchor_wh[anchors]
    xy = (p[..., :2].sigmoid() + grid) * layer.stride
    half = p[..., 2:4].clamp(max=MAX_LOG_WH).exp() * anchor_wh * 0.5
    return torch.cat((xy - half, xy + half), -1)


def _flatten(
    targets: list[dict[str, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, ...]:
    img = [torch.full((len(t["boxes"]),), i, dtype=torch.long) for i, t in enumerate(targets)]
    boxes = [torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4) for t in targets]
    labels = [torch.as_tensor(t["labels"], dtype=torch.long).reshape(-1) for t in targets]
    return torch.cat(img).to(device), torch.cat(boxes).to(device), torch.cat(labels).to(device)


def _pad_boxes(
    targets: list[dict[str, torch.Tensor]], batch: int, device: torch.device
) -> torch.Tensor:
    most = max((len(t["boxes"]) for t in targets), default=0)
    out = torch.zeros(batch, most, 4, device=device)  # zero boxes overlap nothing
    for i, t in enumerate(targets):
        n = len(t["boxes"])
        if n:
            out[i, :n] = torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4).to(device)
    return out


def _batched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of [B, N, 4] against [B, G, 4] -> [B, N, G]."""
    lt = torch.max(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.min(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(3)
    area_a = (a[..., 2:] - a[..., :2]).prod(2)
    area_b = (b[..., 2:] - b[..., :2]).prod(2)
    return inter / (area_a[:, :, None] + area_b[:, None] - inter).clamp(min=1e-9)
