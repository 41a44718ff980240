"""Evaluation: our COCO scoring equals pycocotools run by hand, boxes go back to original
pixels, the reference detections score what the assets README says, FLOPs/params counts."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from compress import eval_cli
from compress.data import DetectionDataset, load_records
from compress.data.records import ImageRecord
from compress.evaluate import (
    coco_evaluate,
    count_flops,
    count_params,
    evaluate_detector,
    predict,
    read_results,
)
from compress.models.base import Detector
from tests.conftest import need

REFERENCE = "tf/reference_detections_coco128_train2017.json"
COCO128 = {"format": "yolo", "root": "coco128", "split": "train2017", "classes": ["person"]}


def pycocotools_stats(gt_path: Path, results: list[dict]) -> np.ndarray:
    """pycocotools exactly as its README runs it, from files."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def gt_from_label_files(assets: Path) -> dict:
    """coco128 person ground truth built straight from the label files, not by our reader."""
    images, anns = [], []
    for img in sorted((assets / "coco128/images/train2017").glob("*.jpg")):
        w, h = Image.open(img).size
        images.append({"id": int(img.stem), "file_name": img.name, "width": w, "height": h})
        label = assets / "coco128/labels/train2017" / f"{img.stem}.txt"
        for line in label.read_text().splitlines() if label.exists() else []:
            c, cx, cy, bw, bh = map(float, line.split())
            if c == 0:
                x, y = (cx - bw / 2) * w, (cy - bh / 2) * h
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": int(img.stem),
                        "category_id": 1,
                        "bbox": [x, y, bw * w, bh * h],
                        "area": bw * w * bh * h,
                        "iscrowd": 0,
                    }
                )
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def test_reference_detections_match_pycocotools_and_readme(assets, tmp_path):
    need(assets, "coco128/images/train2017", REFERENCE)
    records, _ = load_records(COCO128)
    results, dropped = read_results(assets / REFERENCE, records)
    assert dropped == 0 and len(results) == 12791
    ours = coco_evaluate(DetectionDataset(records, ["person"]).to_coco(), results)
    assert ours["AP50"] == pytest.approx(0.376, abs=5e-4)
    assert ours["AP50_95"] == pytest.approx(0.183, abs=5e-4)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt_from_label_files(assets)))
    expected = pycocotools_stats(gt_path, results)
    np.testing.assert_allclose(list(ours["stats"].values()), expected, atol=1e-6)


def test_synthetic_results_match_pycocotools(tmp_path):
    rng = np.random.default_rng(0)
    images, anns, results = [], [], []
    for i in range(1, 21):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 100})
        for _ in range(rng.integers(0, 4)):
            x, y, w, h = (float(v) for v in rng.uniform([0, 0, 5, 5], [150, 60, 50, 40]))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            jitter = rng.normal(0, 3, 4)
            results.append(
                {
                    "image_id": i,
                    "category_id": 1,
                    "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                    "score": float(rng.uniform()),
                }
            )
        results.append(
            {
                "image_id": i,
                "category_id": 1,
                "bbox": [1.0, 1.0, 30.0, 30.0],
                "score": float(rng.uniform(0, 0.5)),
            }
        )
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    ours = coco_evaluate(gt, results)
    np.testing.assert_allclose(
        list(ours["stats"].values()), pycocotools_stats(gt_path, results), atol=1e-9
    )
    assert 0 < ours["AP50_95"] < ours["AP50"] < 1
    assert coco_evaluate(gt, [])["AP50"] == 0.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_evaluate(gt, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_read_results_layouts_and_errors(tmp_path):
    recs = [ImageRecord(Path(f"/x/{n}.jpg"), 10, 10, i) for i, n in ((5, "a"), (6, "b"))]
    f = tmp_path / "r.json"
    f.write_text(
        json.dumps(
            [
                {"file_name": "b.jpg", "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5},
                {"image_id": 7, "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5},
            ]
        )
    )
    results, dropped = read_results(f, recs)
    assert [r["image_id"] for r in results] == [6] and dropped == 1
    f.write_text(json.dumps([{"image_id": 5, "bbox": [0, 0, 2, 2], "score": 0.5}]))
    with pytest.raises(ValueError, match="result #0 lacks \\['category_id'\\]"):
        read_results(f, recs)


class BrightBoxDetector(Detector):
    """'Detects' the white rectangle in each image (in input pixels): an oracle whose AP is 1
    exactly when the evaluator maps boxes back to the original image correctly."""

    family = "oracle"

    def __init__(self, input_size, resize_mode):
        super().__init__()
        self.class_names = ["car", "person"]
        self.input_size = input_size
        self.resize_mode = resize_mode
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, images):
        return images

    def decode(self, raw):
        boxes, scores = [], []
        for img in raw:
            ys, xs = torch.nonzero(img.mean(0) > 0.75, as_tuple=True)
            boxes.append(
                torch.tensor(
                    [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32
                )
            )
            scores.append(torch.tensor([[0.0, 0.9]]))
        return torch.stack(boxes), torch.stack(scores)


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_evaluate_detector_maps_boxes_back(tmp_path, resize):
    records = []
    for i, (w, h, box) in enumerate(
        [(160, 80, (20, 10, 100, 70)), (90, 120, (5, 40, 60, 110)), (64, 64, (10, 10, 30, 50))], 1
    ):
        arr = np.zeros((h, w, 3), np.uint8)
        arr[box[1] : box[3], box[0] : box[2]] = 255
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
        records.append(ImageRecord(tmp_path / f"{i}.png", w, h, i, [box], [0]))
    ds = DetectionDataset(records, ["person"])  # no transform: the evaluator uses the model's
    detector = BrightBoxDetector((128, 128), resize)
    results = predict(detector, ds, batch_size=2)
    for rec, res in zip(records, results):
        assert (
            res["image_id"] == rec.image_id and res["category_id"] == 1
        )  # "person" is index 1 in the model
        x, y, w, h = res["bbox"]
        # one input pixel is up to 1/ratio original pixels
        np.testing.assert_allclose([x, y, x + w, y + h], rec.boxes[0], atol=2.0)
    detector.train()  # as a trainer would call it mid-training
    report = evaluate_detector(detector, ds, batch_size=2)
    assert detector.training  # mode restored
    assert report["AP50"] == pytest.approx(1.0)
    assert report["AP50_95"] > 0.9
    assert report["detections"] == 3


def test_count_params_and_flops():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)
    )
    assert count_params(model) == (8 * 3 * 9 + 8) + 16 + (4 * 8 + 4)
    # 2 * MACs: 2 * (8*3*9 + 4*8) * 16*16
    assert count_flops(model, 16) == 2 * (8 * 3 * 9 + 4 * 8) * 16 * 16
    assert count_flops(model, (16, 32)) == 2 * count_flops(model, 16)
    model.train()
    count_flops(model, 8)
    assert model.training  # mode restored


def test_eval_cli_scores_a_results_file(assets, tmp_path, capsys):
    need(assets, "coco128/images/train2017", REFERENCE)
    out = tmp_path / "eval.json"
    args = eval_cli.get_args_parser().parse_args(
        [
            "--results",
            str(assets / REFERENCE),
            "--root",
            "coco128",
            "--split",
            "train2017",
            "--out",
            str(out),
        ]
    )
    assert eval_cli.main(args) == 0
    assert "AP50 0.376  AP50:95 0.183  on 128 images / 254 boxes" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["gt_boxes"] == 254 and report["results"]["used"] == 12791


def test_eval_cli_val_subset_of_a_recipe(assets, tmp_path):
    need(assets, "coco128/images/train2017", REFERENCE)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data: {format: yolo, root: coco128, split: train2017, classes: [person], val_fraction: 0.25, split_seed: 0}\n"
    )
    out = tmp_path / "eval.json"
    args = eval_cli.get_args_parser().parse_args(
        ["--results", str(assets / REFERENCE), "--data", str(recipe), "--out", str(out)]
    )
    assert eval_cli.main(args) == 0
    report = json.loads(out.read_text())
    assert report["data"]["subset"] == "val" and report["images"] == 32
    assert report["results"]["dropped_other_images"] > 0  # train images' detections are not scored


def test_eval_cli_bad_input_is_one_clear_line(tmp_path, capsys):
    args = eval_cli.get_args_parser().parse_args(
        ["--results", str(tmp_path / "none.json"), "--root", str(tmp_path / "nowhere")]
    )
    assert eval_cli.main(args) == 2
    assert "dataset root not found" in capsys.readouterr().err


def test_eval_cli_model_from_recipe(assets, tmp_path):
    need(
        assets, "coco128/images/train2017", "darknet/yolov3-tiny.cfg", "darknet/yolov3-tiny.weights"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {family: yolo, cfg: darknet/yolov3-tiny.cfg, weights: darknet/yolov3-tiny.weights, names: darknet/coco.names, input_size: 416, resize: letterbox}\n"
        "data: {format: yolo, root: coco128, split: train2017, classes: [person], max_images: 8}\n"
    )
    out = tmp_path / "eval.json"
    args = eval_cli.get_args_parser().parse_args(["--model", str(recipe), "--out", str(out)])
    assert eval_cli.main(args) == 0
    report = json.loads(out.read_text())
    # 8 images, 10 small people: tiny finds few (0.009 measured); on all 128 images this path
    # gives AP50 0.228 with resize: stretch, the README's OpenCV figure being 0.229.
    assert report["images"] == 8 and report["gt_boxes"] == 10 and 0 < report["AP50"] < 1
    # YOLOv3-tiny at 416: 8.86M parameters, about 5.6 GFLOPs (2 x MACs)
    assert report["model"]["params"] == pytest.approx(8.86e6, rel=0.01)
    assert 5.0e9 < report["model"]["flops"] < 6.0e9
    # The same model handed on as a model folder (model.json) scores the same.
    from compress.models.load import load_detector, save_detector
    from compress.recipe import load_recipe

    folder = save_detector(load_detector(load_recipe(recipe)["model"]), tmp_path / "model")
    out2 = tmp_path / "eval2.json"
    args = eval_cli.get_args_parser().parse_args(
        ["--model", str(folder), "--data", str(recipe), "--out", str(out2)]
    )
    assert eval_cli.main(args) == 0
    again = json.loads(out2.read_text())
    assert again["AP50"] == pytest.approx(report["AP50"], abs=1e-6)
    assert again["model"]["flops"] == report["model"]["flops"]
