"""One image's annotations, independent of the file format it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.user_errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class DataError(UserError, ValueError):
    """Bad dataset input; the message names the file (and line) at fault."""


@dataclass
class ImageRecord:
    """An image and its boxes in original pixels (xyxy), labels index the configured classes.

    `ignore` marks boxes that must neither be learned nor count as misses (VOC `difficult`,
    COCO `iscrowd`): they are left out of training targets and become `iscrowd` in the COCO
    ground truth, which pycocotools treats as "don't care".
    """

    path: Path
    width: int
    height: int
    image_id: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if self.ignore is None or len(self.ignore) != len(self.labels):
            self.ignore = np.zeros(len(self.labels), bool)
        self.ignore = np.asarray(self.ignore, bool).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise DataError(f"{self.path}: {len(self.boxes)} boxes but {len(self.labels)} labels")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only: no full decode for 10k-image folders."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def assign_image_ids(paths: list[Path]) -> list[int]:
    """COCO-style file names (000000000009.jpg) keep their COCO id, so results computed
    elsewhere on real COCO ids score against our ground truth; anything else is numbered
    1..N in the given (sorted) order."""
    stems = [p.stem for p in paths]
    if stems and all(s.isdigit() for s in stems) and len(set(map(int, stems))) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))
