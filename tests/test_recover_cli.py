"""`python -m compress recover` on a tiny Darknet YOLO with the real coco128 images and video."""

from __future__ import annotations

import json

import pytest
import yaml

from compress.recover import cli
from tests.conftest import need
from tests.train_support import tiny_yolo


@pytest.fixture()
def setup(tmp_path, assets):
    need(assets, "coco128/images/train2017", "coco128/labels/train2017")
    from compress.models.load import save_detector

    save_detector(tiny_yolo(64, seed=0), tmp_path / "pruned")
    save_detector(tiny_yolo(64, seed=1), tmp_path / "teacher")
    recipe = {
        "name": "tiny",
        "data": {
            "format": "yolo",
            "root": "coco128",
            "split": "train2017",
            "classes": ["person"],
            "names": "darknet/coco.names",
            "val_fraction": 0.5,
            "split_seed": 0,
            "max_images": 12,
        },
        "train": {"batch_size": 4, "progress": False, "augment": {"hflip": 0.5}},
        "recover": {
            "method": "finetune",
            "epochs": 2,
            "lr": 0.01,
            "distill": {"max_frames": 6, "frame_stride": 20},
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path


def run(*argv: str) -> int:
    return cli.main(cli.get_args_parser().parse_args(list(argv)))


def test_recover_one_method_writes_model_and_report(setup):
    out = setup / "out"
    assert (
        run(
            "--recipe",
            str(setup / "r.yaml"),
            "--model",
            str(setup / "pruned"),
            "--out",
            str(out),
            "--method",
            "grafting",
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["figures"]["method"] == "grafting"
    assert report["figures"]["AP50_before"] is not None and report["figures"]["flops"] > 0
    assert len(report["recovery"]["mixes"]) == 1  # 2 epochs: grafted once, between them
    assert len(report["inputs"]["model"]["model.weights"]["sha256"]) == 64
    from compress.models.load import load_detector_dir

    assert load_detector_dir(out / "model").class_names == ["person"]


def test_recover_compare_writes_table_and_plot(setup, assets):
    need(assets, "video/vtest.avi")
    out = setup / "cmp"
    assert (
        run(
            "--recipe",
            str(setup / "r.yaml"),
            "--model",
            str(setup / "pruned"),
            "--out",
            str(out),
            "--compare",
            "--methods",
            "finetune,distill_frames",
            "--teacher",
            str(setup / "teacher"),
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())["recovery"]
    assert [r["method"] for r in report["table"]] == ["finetune", "distill_frames"]
    finetune, frames = report["table"]
    assert finetune["images_seen"] == report["budget_images"]  # 2 epochs x 6 train images
    assert frames["images_seen"] == 6 * frames["epochs"]  # label-free: video frames
    assert (out / "compare" / "compare.png").stat().st_size > 1000
    assert "| finetune |" in (out / "compare" / "compare.md").read_text()


def test_recover_rejects_method_with_compare(setup):
    with pytest.raises(SystemExit, match="not both"):
        run(
            "--recipe",
            str(setup / "r.yaml"),
            "--model",
            str(setup / "pruned"),
            "--out",
            str(setup / "x"),
            "--method",
            "finetune",
            "--compare",
        )
