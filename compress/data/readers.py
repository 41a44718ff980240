"""Readers for the three annotation formats, each filtered to the configured classes.

A reader takes a recipe's `data:` section and returns `(records, problems)`: records sorted by
image path, problems the human-readable notes about input it skipped (a label file without its
image, an image listed but missing). Input that cannot be read at all raises `DataError`
naming the file and line; bad items (a malformed label, an unreadable image) are all collected
first, so one run names every one of them (up to `MAX_LISTED`), and `skip_bad: true` in the
data section leaves them out instead, with their count and list among the problems. Add a
format by adding a function to `READERS`.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compress.data.records import (
    IMAGE_SUFFIXES,
    DataError,
    ImageRecord,
    assign_image_ids,
    image_size,
)
from compress.paths import resolve_asset

# Darknet's data/coco.names order: what YOLO-txt class indices mean when no names file is given.
COCO80 = (
    "person bicycle car motorbike aeroplane bus train truck boat traffic_light fire_hydrant "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe "
    "backpack umbrella handbag tie suitcase frisbee skis snowboard sports_ball kite "
    "baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork "
    "knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair sofa pottedplant bed diningtable toilet tvmonitor laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
)
COCO80_NAMES = [n.replace("_", " ") for n in COCO80.split()]

Reader = Callable[[dict[str, Any]], tuple[list[ImageRecord], list[str]]]
MAX_LISTED = 20


class BadItems:
    """The DataErrors of single items of one reading: all of them are reported, not the first."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.skip = bool(cfg.get("skip_bad"))
        self.errors: list[str] = []

    def attempt(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args), or None after noting its DataError."""
        try:
            return fn(*args)
        except DataError as exc:
            self.errors.append(str(exc))
            return None

    def finish(self, where: Path, problems: list[str]) -> None:
        """Raise one DataError listing the bad items, or (skip_bad) note them as skipped."""
        if not self.errors:
            return
        n = len(self.errors)
        listed = "; ".join(self.errors[:MAX_LISTED])
        more = f"; ... and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
        if self.skip:
            problems.append(f"skipped {n} bad item(s) under {where} (skip_bad): {listed}{more}")
            return
        raise DataError(
            f"{n} bad item(s) under {where}: {listed}{more} -- fix them, or set `skip_bad: true` "
            "in the data section (eval/train: --skip-bad) to leave them out"
        )


def classes_of(cfg: dict[str, Any]) -> list[str]:
    classes = cfg.get("classes") or ["person"]
    if isinstance(classes, str):
        classes = [classes]
    return [str(c) for c in classes]


def read_names(path: str | Path) -> list[str]:
    """A Darknet names file: one class per line, blank lines ignored."""
    path = resolve_asset(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"names file not found: {path}") from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise DataError(f"{path}: names file holds no class names")
    return names


def _root(cfg: dict[str, Any]) -> Path:
    if not cfg.get("root"):
        raise DataError("data section needs `root` (a folder under NANOPRUNE_ASSETS or a path)")
    root = resolve_asset(cfg["root"])
    if not root.is_dir():
        from compress.assets import assets_under

        names = assets_under({str(cfg["root"])})
        how = (
            f"; fetch it with `python -m compress assets fetch {' '.join(names)}`" if names else ""
        )
        raise DataError(f"dataset root not found: {root}{how}")
    return root


def _class_map(source_names: list[str], classes: list[str], where: str) -> dict[int, int]:
    """source class index -> index in `classes`; a wanted class the source lacks is an error."""
    lower = [n.lower() for n in source_names]
    missing = [c for c in classes if c.lower() not in lower]
    if missing:
        raise DataError(f"{where}: classes {missing} not among its {len(source_names)} names")
    return {lower.index(c.lower()): i for i, c in enumerate(classes)}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


# --- YOLO-txt (coco128 layout) -------------------------------------------------------------


def parse_yolo_label(path: Path, n_names: int) -> tuple[np.ndarray, np.ndarray]:
    """`cls cx cy w h` per line, normalized; returns (class ids, cxcywh). Names file and line
    of the first bad line on error."""
    cls, boxes = [], []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not a text label file ({exc.reason} at byte {exc.start})"
        ) from None
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) != 5:
            raise DataError(
                f"{where}: expected 5 values `cls cx cy w h`, got {len(parts)}: {line.strip()!r}"
            )
        try:
            c = int(parts[0])
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise DataError(f"{where}: not numbers: {line.strip()!r}") from None
        if not 0 <= c < n_names:
            raise DataError(f"{where}: class {c} outside 0..{n_names - 1} of the names list")
        if not all(math.isfinite(v) for v in vals) or vals[2] <= 0 or vals[3] <= 0:
            raise DataError(f"{where}: box needs finite values and positive size: {line.strip()!r}")
        # Small overshoots past the border are common in converted labels; gross ones are bugs.
        if any(v < -0.01 or v > 1.01 for v in vals):
            raise DataError(f"{where}: coordinates must be normalized to [0, 1]: {line.strip()!r}")
        cls.append(c)
        boxes.append(vals)
    return np.asarray(cls, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4)


def read_yolo(cfg: dict[str, Any]) -> tuple[list[ImageRecord], list[str]]:
    root = _root(cfg)
    split = cfg.get("split")
    img_dir = root / "images" / split if split else root / "images"
    lbl_dir = root / "labels" / split if split else root / "labels"
    if not img_dir.is_dir():
        raise DataError(f"YOLO-txt images folder not found: {img_dir}")
    names = read_names(cfg["names"]) if cfg.get("names") else COCO80_NAMES
    classes = classes_of(cfg)
    cmap = _class_map(
        names, classes, str(resolve_asset(cfg["names"])) if cfg.get("names") else "COCO-80 names"
    )

    images = _images_in(img_dir)
    stems = {p.stem for p in images}
    problems = []
    if lbl_dir.is_dir():
        for orphan in sorted(p for p in lbl_dir.glob("*.txt") if p.stem not in stems):
            try:
                ids, _ = parse_yolo_label(orphan, len(names))
            except DataError as exc:  # skipped anyway: report it, do not stop the reading
                problems.append(f"label file without image, skipped (and malformed: {exc})")
                continue
            kept = sum(int(c) in cmap for c in ids)
            problems.append(
                f"label file without image, skipped: {orphan} ({kept} {'/'.join(classes)} boxes not counted)"
            )
    records = []
    bad = BadItems(cfg)
    for path, image_id in zip(images, assign_image_ids(images)):
        label = lbl_dir / f"{path.stem}.txt"
        size = bad.attempt(image_size, path)
        parsed = bad.attempt(parse_yolo_label, label, len(names)) if label.is_file() else None
        if size is None or (label.is_file() and parsed is None):
            continue
        w, h = size
        ids, cxcywh = parsed or (np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
        keep = np.array([int(c) in cmap for c in ids], bool)
        cx, cy, bw, bh = (cxcywh[keep] * np.array([w, h, w, h], np.float32)).T
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).clip(
            0, [w, h, w, h]
        )
        labels = np.array([cmap[int(c)] for c in ids[keep]], np.int64)
        records.append(ImageRecord(path, w, h, image_id, boxes, labels))
    bad.finish(root, problems)
    return records, problems


# --- PASCAL VOC ------------------------------------------------------------------------------


def _xml_text(node: ET.Element, tag: str, path: Path) -> str:
    found = node.find(tag)
    if found is None or found.text is None:
        raise DataError(f"{path}: <{node.tag}> has no <{tag}>")
    return found.text.strip()


def parse_voc_annotation(
    path: Path, classes: list[str]
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """(width, height, boxes xyxy, labels, difficult) of one VOC XML file."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise DataError(f"{path}:{exc.position[0]}: not valid XML ({exc})") from None
    root = tree.getroot()
    size = root.find("size")
    try:
        w = int(float(_xml_text(size, "width", path))) if size is not None else 0
        h = int(float(_xml_text(size, "height", path))) if size is not None else 0
    except (ValueError, OverflowError):
        raise DataError(f"{path}: <size> holds a non-number") from None
    lower = [c.lower() for c in classes]
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = _xml_text(obj, "name", path).lower()
        if name not in lower:
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{path}: <object> {name!r} has no <bndbox>")
        try:
            x1, y1, x2, y2 = (
                float(_xml_text(bnd, k, path)) for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except (ValueError, OverflowError):
            raise DataError(f"{path}: <bndbox> of {name!r} holds a non-number") from None
        # VOC pixels are 1-based and inclusive: xmin=1 is the left edge of the image.
        boxes.append([x1 - 1, y1 - 1, x2, y2])
        labels.append(lower.index(name))
        diff = obj.find("difficult")
        difficult.append(diff is not None and (diff.text or "0").strip() == "1")
    return (
        w,
        h,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels, np.int64),
        np.asarray(difficult, bool),
    )


def read_voc(cfg: dict[str, Any]) -> tuple[list[ImageRecord], list[str]]:
    root = _root(cfg)
    split = cfg.get("split") or "trainval"
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"VOC split list not found: {listing}")
    ids = [
        line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    classes = classes_of(cfg)
    found, problems = [], []
    for name in sorted(set(ids)):
        xml = root / "Annotations" / f"{name}.xml"
        matches = [
            p for p in (root / "JPEGImages").glob(f"{name}.*") if p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not matches:
            problems.append(
                f"image listed in {listing.name} but missing, skipped: {root / 'JPEGImages' / name}.jpg"
            )
            continue
        if not xml.is_file():
            problems.append(f"annotation missing, skipped: {xml}")
            continue
        found.append((matches[0], xml))
    records = []
    bad = BadItems(cfg)
    for (img, xml), image_id in zip(found, assign_image_ids([f[0] for f in found])):
        parsed = bad.attempt(parse_voc_annotation, xml, classes)
        if parsed is None:
            continue
        w, h, boxes, labels, difficult = parsed
        if not (w and h):
            size = bad.attempt(image_size, img)
            if size is None:
                continue
            w, h = size
        records.append(
            ImageRecord(img, w, h, image_id, boxes.clip(0, [w, h, w, h]), labels, difficult)
        )
    bad.finish(root, problems)
    return records, problems


# --- COCO JSON -------------------------------------------------------------------------------


def read_coco(cfg: dict[str, Any]) -> tuple[list[ImageRecord], list[str]]:
    root = _root(cfg)
    split = cfg.get("split") or "val2017"
    ann = cfg.get("annotations") or f"annotations/instances_{split}.json"
    ann_path = Path(ann) if Path(ann).is_absolute() else root / ann
    img_dir = root / (cfg.get("images") or split)
    try:
        data = json.loads(ann_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"COCO annotation file not found: {ann_path}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{ann_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(f"{ann_path}: COCO JSON needs a {key!r} list")
    classes = classes_of(cfg)
    cats = {}
    for i, c in enumerate(data["categories"]):
        if not (isinstance(c, dict) and _is_id(c.get("id")) and isinstance(c.get("name"), str)):
            raise DataError(f"{ann_path}: categories[{i}] needs an 'id' and a 'name': {c!r}")
        cats[c["id"]] = c["name"]
    cat_ids = list(cats)
    cmap = {
        cat_ids[k]: v
        for k, v in _class_map([cats[i] for i in cat_ids], classes, str(ann_path)).items()
    }
    records, problems = [], []
    bad = BadItems(cfg)
    by_image: dict[int, list[dict]] = {}
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not _is_id(a.get("image_id")):
            bad.errors.append(f"{ann_path}: annotations[{i}] is not an object with an image_id")
        elif _is_id(a.get("category_id")) and a["category_id"] in cmap:
            by_image.setdefault(a["image_id"], []).append(a)
    images = []
    for i, im in enumerate(data["images"]):
        if isinstance(im, dict) and _is_id(im.get("id")):
            images.append(im)
        else:
            bad.errors.append(f"{ann_path}: images[{i}] is not an object with an id")
    for im in sorted(images, key=lambda im: str(im.get("file_name"))):
        path = img_dir / str(im.get("file_name"))
        if not path.is_file():
            problems.append(f"image in {ann_path.name} but missing, skipped: {path}")
            continue
        item = bad.attempt(_coco_record, ann_path, path, im, by_image, cmap)
        if item is not None:
            records.append(item)
    bad.finish(ann_path, problems)
    return records, problems


def _is_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _coco_record(
    ann_path: Path, path: Path, im: dict[str, Any], by_image: dict[Any, list], cmap: dict
) -> ImageRecord:
    try:
        w, h, image_id = int(im["width"]), int(im["height"]), int(im["id"])
        anns = by_image.get(im["id"], [])
        xywh = np.asarray([[float(v) for v in a["bbox"]] for a in anns], np.float32)
        if xywh.size and (xywh.ndim != 2 or xywh.shape[1] != 4 or not np.isfinite(xywh).all()):
            raise ValueError("a bbox is not 4 finite numbers")
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{ann_path}: image {im.get('id')!r} ({path.name}): bad entry ({exc})"
        ) from None
    xywh = xywh.reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).clip(0, [w, h, w, h])
    labels = np.asarray([cmap[a["category_id"]] for a in anns], np.int64)
    crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool)
    return ImageRecord(path, w, h, image_id, boxes, labels, crowd)


READERS: dict[str, Reader] = {"yolo": read_yolo, "voc": read_voc, "coco": read_coco}
