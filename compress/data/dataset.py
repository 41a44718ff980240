"""`DetectionDataset`: records + a transform, the map-style dataset every stage reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from compress.data.records import DataError, ImageRecord


def read_image(path) -> torch.Tensor:
    """uint8 [3, H, W] RGB, decoded by OpenCV as the device runtime decodes it. EXIF
    orientation is ignored, because box labels refer to the stored pixel grid."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise DataError(f"{path}: cannot read image (missing or not an image OpenCV decodes)")
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)))


class DetectionDataset(Dataset):
    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        transform: Callable | None = None,
    ) -> None:
        self.records = list(records)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        rec = self.records[index]
        image = read_image(rec.path)
        h, w = image.shape[-2:]
        if (w, h) != (rec.width, rec.height):
            raise DataError(
                f"{rec.path}: image is {w}x{h} but its annotation says {rec.width}x{rec.height}"
            )
        keep = ~rec.ignore
        target: dict[str, Any] = {
            "boxes": torch.as_tensor(rec.boxes[keep], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(rec.labels[keep], dtype=torch.int64),
            "image_id": rec.image_id,
            "orig_size": (h, w),
            "ratio": (1.0, 1.0),
            "pad": (0.0, 0.0),
        }
        if self.transform is None:
            return image.float() / 255, target
        return self.transform(image, target)

    def subset(self, indices: Sequence[int], transform: Callable | None = None) -> DetectionDataset:
        return DetectionDataset(
            [self.records[i] for i in indices], self.classes, transform or self.transform
        )

    def with_transform(self, transform: Callable | None) -> DetectionDataset:
        return DetectionDataset(self.records, self.classes, transform)

    @property
    def num_boxes(self) -> int:
        return int(sum((~r.ignore).sum() for r in self.records))

    def to_coco(self) -> dict[str, Any]:
        """Ground truth for pycocotools: category ids 1..C, boxes xywh in original pixels,
        ignored boxes (difficult / crowd) as iscrowd=1 so they neither match nor miss."""
        images, annotations = [], []
        for rec in self.records:
            images.append(
                {
                    "id": rec.image_id,
                    "file_name": rec.path.name,
                    "width": rec.width,
                    "height": rec.height,
                }
            )
            for box, label, ignore in zip(rec.boxes, rec.labels, rec.ignore):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": rec.image_id,
                        "category_id": int(label) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": int(ignore),
                    }
                )
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(self.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}
