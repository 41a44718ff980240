"""`python -m compress train`: a recipe in, model folders + report.json out, resumable."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from compress.train import cli
from tests.conftest import need
from tests.train_support import TINY_YOLO_CFG, tiny_yolo


def write_recipe(tmp_path, assets, **train):
    need(assets, "coco128/images/train2017", "coco128/labels/train2017")
    cfg_path = tmp_path / "tiny.cfg"
    cfg_path.write_text(TINY_YOLO_CFG)
    recipe = {
        "name": "tiny",
        "model": {
            "family": "yolo",
            "cfg": str(cfg_path),
            "class_names": ["person"],
            "input_size": 64,
        },
        "data": {
            "format": "yolo",
            "root": "coco128",
            "split": "train2017",
            "classes": ["person"],
            "names": "darknet/coco.names",
            "val_fraction": 0.5,
            "split_seed": 0,
            "max_images": 16,
        },
        "train": {
            "epochs": 2,
            "batch_size": 4,
            "lr": 0.01,
            "warmup_epochs": 0,
            "eval_every": 1,
            "progress": False,
            "augment": {"hflip": 0.5},
            **train,
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run(*argv: str) -> int:
    return cli.main(cli.get_args_parser().parse_args(list(argv)))


def test_train_cli_writes_models_and_report(tmp_path, assets):
    recipe = write_recipe(tmp_path, assets)
    out = tmp_path / "run"
    assert run("--recipe", str(recipe), "--out", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["stage"] == "train"
    assert len(report["inputs"]["recipe"]["sha256"]) == 64
    assert report["inputs"]["train_data"]["images"] + report["inputs"]["val_data"]["images"] <= 16
    figures = report["figures"]
    assert figures["params"] > 0 and figures["flops"] > 0 and figures["images_seen"] > 0
    assert len(report["history"]["epochs"]) == 2 and "AP50" in report["history"]["epochs"][-1]

    from compress.models.load import load_detector_dir

    final = load_detector_dir(out / "final")
    best = load_detector_dir(out / "best")
    assert final.class_names == ["person"] and tuple(best.input_size) == (64, 64)
    # the saved final model is the trained one, not the untrained start
    untrained = tiny_yolo()
    changed = [
        not torch.equal(a, b)
        for a, b in zip(final.state_dict().values(), untrained.state_dict().values())
    ]
    assert any(changed)


def test_train_cli_resume_extends_a_finished_run(tmp_path, assets):
    recipe = write_recipe(tmp_path, assets, eval_every=0)
    out = tmp_path / "run"
    run("--recipe", str(recipe), "--out", str(out), "--epochs", "1")
    run("--recipe", str(recipe), "--out", str(out), "--epochs", "2", "--resume")
    report = json.loads((out / "report.json").read_text())
    assert [e["epoch"] for e in report["history"]["epochs"]] == [0, 1]
    assert report["history"]["resumed"][0]["epoch"] == 1
    assert report["figures"]["models"]["use"] == "final"


def test_train_cli_rejects_a_recipe_without_data(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"family": "yolo", "cfg": "x.cfg"}}))
    with pytest.raises(ValueError, match="no `data:` section"):
        run("--recipe", str(path), "--out", str(tmp_path / "o"))
