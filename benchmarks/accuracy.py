"""AP of any frame detector on labelled images, scored by pycocotools through `compress`.

A detector here is anything with `detect(frame_bgr) -> (boxes [n,4] xyxy frame pixels,
scores [n], classes [n])` and a class list: the edge runtime's `BundleDetector` (so a model
is scored through the very code that is deployed) and the HOG peer alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from compress.evaluate import class_label_map, coco_evaluate

DetectFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def frame_results(
    image_id: int, boxes, scores, classes, label_map: dict[int, int]
) -> list[dict[str, Any]]:
    """One image's detections as COCO results (xywh); classes the data lacks are dropped."""
    out = []
    for box, score, cls in zip(
        np.asarray(boxes).reshape(-1, 4).tolist(),
        np.asarray(scores).tolist(),
        np.asarray(classes).tolist(),
    ):
        cat = label_map.get(int(cls))
        x1, y1, x2, y2 = box
        if cat is None or x2 <= x1 or y2 <= y1:
            continue
        out.append(
            {
                "image_id": int(image_id),
                "category_id": cat,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
        )
    return out


def evaluate_frames(detect: DetectFn, detector_classes: Sequence[str], dataset) -> dict[str, Any]:
    """Run `detect` on every original image of a `DetectionDataset`; COCO AP50 / AP50:95."""
    label_map = class_label_map(detector_classes, dataset.classes)
    results: list[dict[str, Any]] = []
    for rec in dataset.records:
        frame = cv2.imread(str(rec.path))
        if frame is None:
            raise ValueError(f"{rec.path}: OpenCV cannot read this image")
        results += frame_results(rec.image_id, *detect(frame), label_map)
    return coco_evaluate(dataset.to_coco(), results)


def labelled_images(recipe: str | dict[str, Any], profile: str | None = None, which: str = "val"):
    """The labelled images a recipe's models are scored on: its validation split ("val", the
    same split `compress` evaluates on, never seen in training) or all its images ("all")."""
    from compress.data.build import build_datasets

    if isinstance(recipe, dict):
        cfg = recipe
    else:
        from compress.recipe import load_recipe

        cfg = load_recipe(recipe, profile)
    if "data" not in cfg:
        raise ValueError(f"{recipe if isinstance(recipe, str) else 'recipe'}: has no data: section")
    model = cfg.get("model") or {}
    train_ds, val_ds = build_datasets(
        cfg["data"], model.get("input_size", 416), model.get("resize", "letterbox")
    )
    if which == "all":
        from compress.data.dataset import DetectionDataset

        records = sorted(train_ds.records + val_ds.records, key=lambda r: r.image_id)
        return DetectionDataset(records, val_ds.classes)
    if not len(val_ds.records):
        raise ValueError(
            "the recipe's data: section gives no validation images (val_fraction is 0?)"
        )
    return val_ds
