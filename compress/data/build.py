"""From a recipe's `data:` section to (train, val) datasets with a split that never leaks.

    data: {format: yolo, root: coco128, split: train2017, classes: [person],
           names: darknet/coco.names, val_fraction: 0.25, split_seed: 0, max_images: null}

`val_split: val2017` takes validation images from another split of the same root instead of
a random share of `split`.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import torch

from compress.data.dataset import DetectionDataset
from compress.data.readers import READERS, classes_of
from compress.data.records import DataError, ImageRecord
from compress.data.transforms import build_transform

log = logging.getLogger(__name__)


def load_records(data_cfg: dict[str, Any]) -> tuple[list[ImageRecord], list[str]]:
    """All records of the configured split (capped by `max_images`) and the problems seen."""
    fmt = data_cfg.get("format", "yolo")
    if fmt not in READERS:
        raise DataError(f"unknown data format {fmt!r}; known: {', '.join(READERS)}")
    records, problems = READERS[fmt](data_cfg)
    if data_cfg.get("max_images"):
        records = records[: int(data_cfg["max_images"])]
    return records, problems


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic shuffle with its own RNG (global seeds never change it); val is the
    first round(n * val_fraction) of the shuffled order, train the rest, both sorted."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def build_datasets(
    data_cfg: dict[str, Any],
    input_size: int | tuple[int, int],
    resize: str = "letterbox",
    augment: dict[str, Any] | None = None,
    pad_value: int = 114,
) -> tuple[DetectionDataset, DetectionDataset]:
    """(train_ds, val_ds); train carries the augmentation, val only the resize."""
    classes = classes_of(data_cfg)
    records, problems = load_records(data_cfg)
    for p in problems:
        log.warning("%s", p)
    train_tf = build_transform(input_size, resize, train=True, augment=augment, pad_value=pad_value)
    val_tf = build_transform(input_size, resize, train=False, pad_value=pad_value)
    if data_cfg.get("val_split"):
        val_records, val_problems = load_records({**data_cfg, "split": data_cfg["val_split"]})
        for p in val_problems:
            log.warning("%s", p)
        train_paths = {r.path.resolve() for r in records}
        val_records = [r for r in val_records if r.path.resolve() not in train_paths]
        return DetectionDataset(records, classes, train_tf), DetectionDataset(
            val_records, classes, val_tf
        )
    train_idx, val_idx = split_indices(
        len(records), float(data_cfg.get("val_fraction") or 0), int(data_cfg.get("split_seed") or 0)
    )
    full = DetectionDataset(records, classes)
    return full.subset(train_idx, train_tf), full.subset(val_idx, val_tf)


def datasets_for(
    detector: Any, data_cfg: dict[str, Any], augment: dict[str, Any] | None = None
) -> tuple[DetectionDataset, DetectionDataset]:
    """(train_ds, val_ds) shaped the way `detector` sees images: its input size, resize mode and
    pad value, so training and evaluation use the preprocessing the model is deployed with."""
    return build_datasets(
        data_cfg, tuple(detector.input_size), detector.resize_mode, augment, detector.pad_value
    )


def eval_view(dataset: Any, detector: Any) -> Any:
    """`dataset` with `detector`'s deterministic eval transform (its input size, resize mode
    and pad value, no augmentation); anything but a DetectionDataset is returned as it is."""
    if not isinstance(dataset, DetectionDataset):
        return dataset
    return dataset.with_transform(
        build_transform(
            tuple(detector.input_size),
            detector.resize_mode,
            train=False,
            pad_value=detector.pad_value,
        )
    )


def collate(
    batch: list[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Images stacked to [B, 3, H, W] (all the same input size), targets kept as a list."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


def first_images(dataset: Any, n: int) -> Any:
    """The first `n` items of `dataset` (a DetectionDataset stays one, keeping its transform)."""
    n = min(int(n), len(dataset))
    if hasattr(dataset, "subset"):
        return dataset.subset(list(range(n)))
    return torch.utils.data.Subset(dataset, list(range(n)))


def batches(dataset: Any, batch_size: int) -> list[tuple[torch.Tensor, list[dict]]]:
    """All of `dataset` as (images, targets) batches in order, held in memory: for the few
    dozen images a search or a refit reuses many times."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=max(1, int(batch_size)), shuffle=False, collate_fn=collate
    )
    return list(loader)
