"""Person datasets (YOLO-txt, PASCAL VOC, COCO JSON) and box-aware transforms.

Contract (what every reader gives the trainer and the evaluator):
- `dataset.records`: list of `ImageRecord` (image path, width, height, image_id, boxes xyxy in
  original pixels, labels as indices into the configured class list).
- `dataset[i]` -> (image float [3, H, W] RGB in [0, 1], target dict) after the transform:
  "boxes" [n, 4] xyxy in input pixels, "labels" int64 [n], "image_id" int,
  "orig_size" (h, w), "ratio" (rw, rh) and "pad" (px, py) such that
  x_orig = (x_input - px) / rw (the inverse of letterbox or stretch resize).
- `dataset.to_coco()` -> COCO ground-truth dict for pycocotools (category ids 1..C).
"""

from compress.data.build import build_datasets, collate, load_records, split_indices
from compress.data.dataset import DetectionDataset
from compress.data.records import DataError, ImageRecord
from compress.data.transforms import build_transform

__all__ = [
    "DataError",
    "DetectionDataset",
    "ImageRecord",
    "build_datasets",
    "build_transform",
    "collate",
    "load_records",
    "split_indices",
]
