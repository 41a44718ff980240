"""Accuracy and cost of a detector: COCO-style AP by pycocotools, parameters and FLOPs.

FLOPs are counted by `torch.utils.flop_counter` on one forward pass at the model's input size;
it counts convolutions and matrix products as 2 * multiply-accumulates (BN, activations,
pooling and the decode are not counted), so "FLOPs" here = 2 * MACs.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

STAT_NAMES = (
    "AP50_95",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def _cocoeval(
    coco_gt: dict[str, Any], results: list[dict[str, Any]], cat_ids: Sequence[int] | None = None
) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # pycocotools prints progress to stdout; keep our output (and JSON on stdout) clean.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"info": {}, **coco_gt}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=float)


def coco_evaluate(coco_gt: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Score COCO-style results (`image_id`, `category_id`, `bbox` xywh, `score`) against a
    COCO ground-truth dict. Returns AP50, AP50_95, all twelve COCO stats, and per-class AP
    when there is more than one category. pycocotools reports -1 where there is no ground
    truth; that is passed through."""
    gt_ids = {im["id"] for im in coco_gt["images"]}
    stray = {r["image_id"] for r in results} - gt_ids
    if stray:
        raise ValueError(
            f"{len(stray)} result image_id(s) not in the ground truth, e.g. {sorted(stray)[:5]}"
        )
    out: dict[str, Any] = {
        "images": len(coco_gt["images"]),
        "gt_boxes": sum(not a.get("iscrowd") for a in coco_gt["annotations"]),
        "detections": len(results),
    }
    if not results:
        # loadRes cannot take an empty list; no detections means zero recall and precision.
        stats = np.zeros(len(STAT_NAMES))
    else:
        stats = _cocoeval(coco_gt, results)
    out.update(
        {
            "AP50": float(stats[1]),
            "AP50_95": float(stats[0]),
            "stats": dict(zip(STAT_NAMES, map(float, stats))),
        }
    )
    cats = coco_gt["categories"]
    if len(cats) > 1 and results:
        out["per_class"] = {}
        for c in cats:
            s = _cocoeval(coco_gt, results, [c["id"]])
            out["per_class"][c["name"]] = {"AP50": float(s[1]), "AP50_95": float(s[0])}
    return out


def to_original(
    boxes: torch.Tensor, ratio: Sequence[float], pad: Sequence[float], orig_size: Sequence[int]
) -> torch.Tensor:
    """Input-pixel xyxy -> original-pixel xyxy (inverse letterbox/stretch), clipped to the image."""
    (rw, rh), (px, py), (h, w) = ratio, pad, orig_size
    out = boxes.clone().float()
    out[:, 0::2] = ((out[:, 0::2] - px) / rw).clamp(0, w)
    out[:, 1::2] = ((out[:, 1::2] - py) / rh).clamp(0, h)
    return out


def detections_to_results(
    dets: dict[str, torch.Tensor], target: dict[str, Any], label_map: dict[int, int]
) -> list[dict[str, Any]]:
    """One image's detections as COCO results; `label_map` takes detector class index to the
    dataset's category id and drops the classes the dataset does not have."""
    boxes = to_original(dets["boxes"].cpu(), target["ratio"], target["pad"], target["orig_size"])
    out = []
    for box, score, label in zip(
        boxes.tolist(), dets["scores"].cpu().tolist(), dets["labels"].cpu().tolist()
    ):
        cat = label_map.get(int(label))
        if cat is None:
            continue
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            continue
        out.append(
            {
                "image_id": int(target["image_id"]),
                "category_id": cat,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
        )
    return out


def class_label_map(
    detector_classes: Sequence[str], dataset_classes: Sequence[str]
) -> dict[int, int]:
    """Detector class index -> dataset category id (1-based), matched by name, case-blind."""
    wanted = {name.lower(): i + 1 for i, name in enumerate(dataset_classes)}
    mapping = {i: wanted[n.lower()] for i, n in enumerate(detector_classes) if n.lower() in wanted}
    if not mapping:
        raise ValueError(
            f"detector classes {list(detector_classes)[:5]}... share none with the data's {list(dataset_classes)}"
        )
    return mapping


@torch.no_grad()
def predict(
    detector,
    dataset,
    batch_size: int = 8,
    score_threshold: float = 0.001,
    nms_iou: float | None = None,
    device: str | torch.device | None = None,
    workers: int = 0,
) -> list[dict[str, Any]]:
    """COCO results of `detector.detect` over the dataset, boxes in original pixels.

    A `DetectionDataset` is re-wrapped with the detector's own input size, resize mode and
    pad value, so a model is always scored on the preprocessing it will be deployed with.
    `device=None` runs where the model already is; a model moved for the evaluation is moved
    back, and its train/eval mode restored, so a trainer can call this mid-training."""
    from compress.data.build import collate, eval_view

    dataset = eval_view(dataset, detector)
    label_map = class_label_map(detector.class_names, dataset.classes)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=workers
    )
    was_training = detector.training
    param = next(detector.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else home
    detector.eval().to(device)
    results: list[dict[str, Any]] = []
    try:
        for images, targets in loader:
            dets = detector.detect(
                images.to(device), score_threshold=score_threshold, nms_iou=nms_iou
            )
            for d, t in zip(dets, targets):
                results.extend(detections_to_results(d, t, label_map))
    finally:
        detector.train(was_training).to(home)
    return results


def evaluate_detector(
    detector,
    dataset,
    batch_size: int = 8,
    score_threshold: float = 0.001,
    nms_iou: float | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """AP50 / AP50_95 (+ all COCO stats) of a Detector on a DetectionDataset."""
    results = predict(detector, dataset, batch_size, score_threshold, nms_iou, device)
    report = coco_evaluate(dataset.to_coco(), results)
    report["score_threshold"] = score_threshold
    report["nms_iou"] = detector.default_nms_iou if nms_iou is None else nms_iou
    return report


def model_figures(model: nn.Module, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters and FLOPs at the model's own input size, with AP50 / AP50:95 from `metrics`
    when given: the figures every stage reports a model by."""
    out: dict[str, Any] = {
        "params": count_params(model),
        "flops": count_flops(model, model.input_size),
    }
    if metrics:
        out.update({k: metrics[k] for k in ("AP50", "AP50_95") if k in metrics})
    return out


def count_params(model: nn.Module) -> int:
    """Parameters (shared tensors once), trainable or not."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int | Sequence[int]) -> int:
    """FLOPs (= 2 * MACs) of one forward pass on a [1, 3, H, W] zero image."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (
        (input_size, input_size)
        if isinstance(input_size, int)
        else (int(input_size[-2]), int(input_size[-1]))
    )
    param = next(model.parameters(), None)
    x = torch.zeros(
        1,
        3,
        h,
        w,
        device=param.device if param is not None else "cpu",
        dtype=param.dtype if param is not None else torch.float32,
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def read_results(path, records: Sequence[Any]) -> tuple[list[dict[str, Any]], int]:
    """Detections from a JSON file, as COCO results restricted to `records`' images.

    Two layouts are read: the COCO results list (`image_id` or `file_name`, `category_id`,
    `bbox` xywh, `score`) and a per-image mapping `{"images": {file_name: {"detections":
    [{"box_xyxy_pixels", "score", "class"}]}}}` (the reference detections in the assets).
    Category ids are 1..C in the order of the data's classes. Returns (results, n_dropped):
    detections on images outside `records` (another split, the train part) are dropped."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"results file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    by_name = {r.path.name: r.image_id for r in records}
    ids = set(by_name.values())
    rows: list[dict[str, Any]] = []
    if isinstance(data, dict) and isinstance(data.get("images"), dict):
        for name, entry in data["images"].items():
            for d in entry.get("detections", []):
                x1, y1, x2, y2 = d["box_xyxy_pixels"]
                rows.append(
                    {
                        "file_name": Path(name).name,
                        "category_id": int(d["class"]),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(d["score"]),
                    }
                )
    elif isinstance(data, list):
        rows = data
    else:
        raise ValueError(
            f"{path}: expected a COCO results list or an {{'images': {{file_name: ...}}}} mapping"
        )
    out, dropped = [], 0
    for i, r in enumerate(rows):
        missing = {"category_id", "bbox", "score"} - set(r)
        if missing or not ({"image_id", "file_name"} & set(r)):
            raise ValueError(
                f"{path}: result #{i} lacks {sorted(missing) or ['image_id or file_name']}"
            )
        image_id = by_name.get(Path(r["file_name"]).name) if "file_name" in r else r["image_id"]
        if image_id not in ids:
            dropped += 1
            continue
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(r["category_id"]),
                "bbox": [float(v) for v in r["bbox"]],
                "score": float(r["score"]),
            }
        )
    return out, dropped
