"""Person datasets: the three readers, bad input, box-true transforms and a split that never leaks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.data import (
    DataError,
    DetectionDataset,
    build_datasets,
    build_transform,
    collate,
    load_records,
    split_indices,
)
from compress.data.readers import COCO80_NAMES
from compress.evaluate import to_original
from tests.conftest import need


def _image(
    path: Path, w: int = 64, h: int = 48, box: tuple[int, int, int, int] | None = None
) -> Path:
    """A black image, with a white rectangle where `box` (xyxy) says."""
    arr = np.zeros((h, w, 3), np.uint8)
    if box:
        x1, y1, x2, y2 = box
        arr[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _yolo_set(root: Path, labels: dict[str, str | None], split: str = "train") -> Path:
    """images/<split>/<stem>.png for each stem; labels/<split>/<stem>.txt unless its text is None."""
    for stem, text in labels.items():
        if not stem.startswith("orphan"):
            _image(root / "images" / split / f"{stem}.png")
        if text is not None:
            lbl = root / "labels" / split / f"{stem}.txt"
            lbl.parent.mkdir(parents=True, exist_ok=True)
            lbl.write_text(text)
    return root


# --- real coco128 ----------------------------------------------------------------------------


def test_coco128_counts_and_orphans(assets):
    need(assets, "coco128/images/train2017", "coco128/labels/train2017")
    records, problems = load_records(
        {"format": "yolo", "root": "coco128", "split": "train2017", "classes": ["person"]}
    )
    assert len(records) == 128
    no_label = [
        r
        for r in records
        if not (assets / "coco128/labels/train2017" / f"{r.path.stem}.txt").exists()
    ]
    assert sorted(r.path.stem for r in no_label) == ["000000000250", "000000000508"]
    assert all(len(r.labels) == 0 for r in no_label)
    assert sum(len(r.labels) > 0 for r in records) == 61
    assert sum(len(r.labels) for r in records) == 254
    # The two label files without an image are reported, with the 7 persons that are not counted.
    assert len(problems) == 2
    assert "000000000656" in problems[0] and "0 person" in problems[0]
    assert "000000000659" in problems[1] and "7 person" in problems[1]
    # COCO file names keep their COCO image ids.
    assert records[0].image_id == 9
    gt = DetectionDataset(records, ["person"]).to_coco()
    assert len(gt["images"]) == 128 and len(gt["annotations"]) == 254


def test_coco128_sample_through_transform(assets):
    need(assets, "coco128/images/train2017")
    train, val = build_datasets(
        {"root": "coco128", "split": "train2017", "val_fraction": 0.25, "split_seed": 0}, 416
    )
    assert (len(train), len(val)) == (96, 32)
    image, target = val[0]
    assert image.shape == (3, 416, 416) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target["orig_size"] == (val.records[0].height, val.records[0].width)


# --- YOLO-txt bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        ("0 0.5 0.5 0.2", "expected 5 values"),
        ("0 0.5 zero 0.2 0.2", "not numbers"),
        ("80 0.5 0.5 0.2 0.2", "class 80 outside"),
        ("0 0.5 0.5 -0.2 0.2", "positive size"),
        ("0 12 0.5 0.2 0.2", "normalized"),
    ],
)
def test_malformed_label_names_file_and_line(tmp_path, bad, message):
    root = _yolo_set(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n\n" + bad + "\n"})
    with pytest.raises(DataError, match=message) as err:
        load_records({"root": str(root), "split": "train"})
    assert f"{root / 'labels/train/a.txt'}:3" in str(err.value)


def test_empty_missing_and_orphan_labels(tmp_path):
    root = _yolo_set(
        tmp_path,
        {
            "empty": "",
            "nolabel": None,
            "full": "0 0.5 0.5 0.5 0.5\n2 0.1 0.1 0.1 0.1\n",
            "orphan9": "0 0.5 0.5 0.1 0.1\n",
        },
    )
    records, problems = load_records({"root": str(root), "split": "train"})
    by = {r.path.stem: r for r in records}
    assert set(by) == {"empty", "nolabel", "full"}
    assert len(by["empty"].labels) == 0 and len(by["nolabel"].labels) == 0
    # Only the person is kept (class 2 = car); box in original pixels of the 64x48 image.
    np.testing.assert_allclose(by["full"].boxes, [[16, 12, 48, 36]])
    assert len(problems) == 1 and "orphan9.txt" in problems[0] and "1 person" in problems[0]
    (root / "labels/train/orphan_bad.txt").write_text("0 0.5\n")
    _, problems = load_records({"root": str(root), "split": "train"})
    # reported, not fatal: the file is skipped anyway
    assert any("orphan_bad.txt:1: expected 5 values" in p for p in problems)


def test_names_file_maps_indices(tmp_path):
    names = tmp_path / "my.names"
    names.write_text("car\nbus\nperson\n")
    root = _yolo_set(
        tmp_path / "ds", {"a": "0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.4 0.4\n1 0.5 0.5 0.1 0.1\n"}
    )
    records, _ = load_records(
        {"root": str(root), "split": "train", "names": str(names), "classes": ["person", "bus"]}
    )
    assert records[0].labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="classes \\['truck'\\]"):
        load_records(
            {"root": str(root), "split": "train", "names": str(names), "classes": ["truck"]}
        )
    assert COCO80_NAMES[0] == "person" and len(COCO80_NAMES) == 80


# --- VOC and COCO JSON -----------------------------------------------------------------------


def _voc_xml(objects: list[tuple[str, tuple[int, int, int, int], int]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return f"<annotation><size><width>64</width><height>48</height><depth>3</depth></size>{objs}</annotation>"


def test_voc_reader(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets/Main").mkdir(parents=True)
    _image(tmp_path / "JPEGImages/001.jpg")
    _image(tmp_path / "JPEGImages/002.jpg")
    (tmp_path / "Annotations/001.xml").write_text(
        _voc_xml(
            [
                ("person", (11, 21, 30, 40), 0),
                ("dog", (1, 1, 5, 5), 0),
                ("person", (1, 1, 10, 10), 1),
            ]
        )
    )
    (tmp_path / "Annotations/002.xml").write_text("<annotation><size>")
    (tmp_path / "ImageSets/Main/train.txt").write_text("001\n003\n")
    (tmp_path / "ImageSets/Main/bad.txt").write_text("002\n")
    records, problems = load_records({"format": "voc", "root": str(tmp_path), "split": "train"})
    assert len(records) == 1 and "003" in problems[0]
    rec = records[0]
    np.testing.assert_allclose(rec.boxes, [[10, 20, 30, 40], [0, 0, 10, 10]])  # 1-based -> 0-based
    assert rec.ignore.tolist() == [False, True]
    ds = DetectionDataset(records, ["person"], build_transform(64, "stretch"))
    _, target = ds[0]
    assert len(target["boxes"]) == 1  # the difficult person is not a training target
    assert [a["iscrowd"] for a in ds.to_coco()["annotations"]] == [0, 1]  # ... nor a miss
    with pytest.raises(DataError, match="002.xml:1"):
        load_records({"format": "voc", "root": str(tmp_path), "split": "bad"})


def test_coco_json_reader(tmp_path):
    _image(tmp_path / "val/a.jpg")
    ann = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 8, "file_name": "gone.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 5, 20, 30], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    records, problems = load_records(
        {"format": "coco", "root": str(tmp_path), "annotations": "ann.json", "images": "val"}
    )
    assert [r.image_id for r in records] == [7] and "gone.jpg" in problems[0]
    np.testing.assert_allclose(records[0].boxes, [[10, 5, 30, 35]])
    (tmp_path / "broken.json").write_text('{"images": [\n,]}')
    with pytest.raises(DataError, match="broken.json:2"):
        load_records(
            {"format": "coco", "root": str(tmp_path), "annotations": "broken.json", "images": "val"}
        )


# --- transforms ------------------------------------------------------------------------------


def _bright_box(image: torch.Tensor) -> list[int]:
    """xyxy of the pixels brighter than the pad/background, from the image itself."""
    ys, xs = torch.nonzero(image.mean(0) > 0.75, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _sample(tmp_path: Path, w: int, h: int, box: tuple[int, int, int, int]) -> DetectionDataset:
    path = _image(tmp_path / "img.png", w, h, box)
    from compress.data.records import ImageRecord

    return DetectionDataset([ImageRecord(path, w, h, 1, [box], [0])], ["person"])


def test_letterbox_round_trip_and_padding(tmp_path):
    box = (20, 10, 60, 30)
    ds = _sample(tmp_path, 100, 50, box).with_transform(build_transform((64, 64), "letterbox"))
    image, target = ds[0]
    assert image.shape == (3, 64, 64)
    assert target["ratio"] == (0.64, 0.64) and target["pad"] == (0.0, 16.0)  # centered vertically
    assert torch.allclose(image[:, :16], torch.tensor(114 / 255))  # pad value 114 above ...
    assert torch.allclose(image[:, -16:], torch.tensor(114 / 255))  # ... and below
    np.testing.assert_allclose(target["boxes"][0].tolist(), _bright_box(image), atol=1)
    back = to_original(target["boxes"], target["ratio"], target["pad"], target["orig_size"])
    np.testing.assert_allclose(back[0].tolist(), box, atol=1e-4)


def test_stretch_round_trip(tmp_path):
    box = (20, 10, 60, 30)
    ds = _sample(tmp_path, 100, 50, box).with_transform(build_transform((32, 64), "stretch"))
    image, target = ds[0]
    assert image.shape == (3, 32, 64) and target["pad"] == (0.0, 0.0)
    np.testing.assert_allclose(target["boxes"][0].tolist(), [12.8, 6.4, 38.4, 19.2], atol=1e-4)
    back = to_original(target["boxes"], target["ratio"], target["pad"], target["orig_size"])
    np.testing.assert_allclose(back[0].tolist(), box, atol=1e-4)


def test_flip_and_affine_keep_boxes_on_the_object(tmp_path):
    box = (10, 8, 30, 40)
    base = _sample(tmp_path, 96, 64, box)
    flip = base.with_transform(build_transform(96, "letterbox", train=True, augment={"hflip": 1.0}))
    image, target = flip[0]
    np.testing.assert_allclose(
        target["boxes"][0].tolist(), [66, 24, 86, 56], atol=1e-4
    )  # x -> 96 - x, then pad 16 in y
    assert _bright_box(image) == [66, 24, 86, 56]
    torch.manual_seed(0)
    aug = base.with_transform(
        build_transform(
            96,
            "letterbox",
            train=True,
            augment={"hflip": 0.5, "color_jitter": 0.1, "scale": [0.6, 1.3], "translate": 0.1},
        )
    )
    for _ in range(5):
        image, target = aug[0]
        np.testing.assert_allclose(target["boxes"][0].tolist(), _bright_box(image), atol=2)


def test_affine_drops_boxes_pushed_out(tmp_path):
    base = _sample(tmp_path, 64, 64, (0, 0, 6, 6))
    torch.manual_seed(0)
    tf = build_transform(64, "letterbox", train=True, augment={"scale": [0.1, 0.1]})
    _, target = base.with_transform(tf)[0]
    assert (
        len(target["boxes"]) == len(target["labels"]) == 0
    )  # shrunk below 2 px: gone with its label


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown augment keys \\['mosaic'\\]"):
        build_transform(64, train=True, augment={"mosaic": 1.0})
    with pytest.raises(ValueError, match="unknown resize"):
        build_transform(64, "crop")


# --- split and collate -----------------------------------------------------------------------


def test_split_is_deterministic_and_disjoint():
    a = split_indices(100, 0.25, seed=3)
    b = split_indices(100, 0.25, seed=3)
    c = split_indices(100, 0.25, seed=4)
    assert a == b and a != c
    train, val = a
    assert len(val) == 25 and not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert split_indices(5, 0.01, 0)[1] != []  # a requested val part is never empty
    with pytest.raises(DataError):
        split_indices(10, 1.0, 0)


def test_build_datasets_never_trains_on_val(tmp_path):
    root = _yolo_set(tmp_path, {f"{i:03d}": "0 0.5 0.5 0.2 0.2\n" for i in range(12)})
    cfg = {"root": str(root), "split": "train", "val_fraction": 0.25, "split_seed": 1}
    train, val = build_datasets(cfg, 32)
    train2, val2 = build_datasets(cfg, 32)
    names = lambda ds: [r.path.name for r in ds.records]  # noqa: E731
    assert names(val) == names(val2) and names(train) == names(train2)
    assert len(val) == 3 and not set(names(train)) & set(names(val))
    images, targets = collate([train[0], train[1]])
    assert images.shape == (2, 3, 32, 32) and isinstance(targets, list) and len(targets) == 2
    assert not train.transform.augment and val.transform.train is False
