"""Every verb answers a bad input with one line (file, and line where there is one), exit 2,
and no traceback; a programming error keeps its traceback."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from compress.__main__ import main as compress_main
from edge_runtime.user_errors import run_verb
from export.__main__ import main as export_main
from tests.train_support import TINY_YOLO_CFG


def write_data(root: Path, n: int = 4) -> Path:
    for sub in ("images/train", "labels/train"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(
            str(root / f"images/train/{i}.jpg"), rng.integers(0, 255, (64, 64, 3), np.uint8)
        )
        (root / f"labels/train/{i}.txt").write_text("0 0.5 0.5 0.25 0.4\n")
    (root / "names.txt").write_text("person\n")
    return root


def write_recipe(tmp_path: Path, cfg_text: str = TINY_YOLO_CFG, weights: Path | None = None):
    data = write_data(tmp_path / "data")
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(cfg_text)
    model = {"family": "yolo", "cfg": str(cfg), "class_names": ["person"], "input_size": 64}
    if weights:
        model["weights"] = str(weights)
    recipe = {
        "name": "tiny",
        "model": model,
        "data": {
            "format": "yolo",
            "root": str(data),
            "split": "train",
            "classes": ["person"],
            "names": str(data / "names.txt"),
            "val_fraction": 0.5,
            "split_seed": 0,
        },
        "train": {"epochs": 1, "batch_size": 2, "warmup_epochs": 0, "progress": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, cfg, data


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def train(tmp_path: Path, recipe: Path) -> int:
    return compress_main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "out")])


def test_unknown_cfg_layer(tmp_path, capsys):
    recipe, cfg, _ = write_recipe(tmp_path, TINY_YOLO_CFG.replace("[maxpool]", "[maxpoolx]", 1))
    assert train(tmp_path, recipe) == 2
    line = one_line(capsys)
    assert f"{cfg}:" in line and "[maxpoolx]" in line and "known: convolutional" in line


def test_cfg_value_that_is_not_a_number_names_file_line_section_and_key(tmp_path, capsys):
    text = TINY_YOLO_CFG.replace("filters=16", "filters=sixteen", 1)
    lineno = text.splitlines().index("filters=sixteen") + 1
    recipe, cfg, _ = write_recipe(tmp_path, text)
    assert train(tmp_path, recipe) == 2
    line = one_line(capsys)
    assert f"{cfg}:{lineno} [convolutional]" in line and "filters='sixteen'" in line
    anchors = TINY_YOLO_CFG.replace("anchors=", "anchors=ten,", 1)
    recipe, cfg, _ = write_recipe(tmp_path / "a", anchors)
    assert train(tmp_path, recipe) == 2
    assert "[yolo]" in (line := one_line(capsys)) and "anchors=" in line and str(cfg) in line


def test_truncated_weights(tmp_path, capsys):
    weights = tmp_path / "cut.weights"
    header = np.array([0, 2, 0], np.int32).tobytes() + np.array([0], np.int64).tobytes()
    weights.write_bytes(header + np.zeros(50, np.float32).tobytes())
    recipe, _, _ = write_recipe(tmp_path, weights=weights)
    assert train(tmp_path, recipe) == 2
    line = one_line(capsys)
    assert "cut.weights" in line and "truncated" in line


def test_malformed_label(tmp_path, capsys):
    recipe, _, data = write_recipe(tmp_path)
    (data / "labels/train/1.txt").write_text("0 0.5 0.5 0.2\n")
    assert train(tmp_path, recipe) == 2
    line = one_line(capsys)
    assert "1.txt:1" in line and "expected 5 values" in line


def test_export_check_on_unreadable_onnx_and_on_an_engine(tmp_path, capsys):
    junk, plan = tmp_path / "junk.onnx", tmp_path / "m.plan"
    junk.write_bytes(b"not an onnx file at all")
    plan.write_bytes(b"ftrt" + bytes(64))
    assert export_main(["check", str(junk)]) == 2
    assert "junk.onnx: not a readable ONNX file" in one_line(capsys)
    assert export_main(["check", str(plan)]) == 2
    assert "m.plan: is a TensorRT engine" in one_line(capsys)


def fake_tensorrt(monkeypatch, version: str) -> None:
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", module)


def test_engine_on_corrupt_onnx_with_onnx_installed(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")
    from tests.test_trt_builder import make_bundle

    good = make_bundle(tmp_path / "m.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good[: len(good) // 2])
    fake_tensorrt(monkeypatch, "8.2.1.8")
    rc = export_main(["engine", str(cut), "--out", str(tmp_path / "m.plan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "cut.onnx: not a readable ONNX file" in err[0]


@pytest.mark.parametrize("version", ["11.0.0", "7.2.3"])
def test_unsupported_tensorrt_names_the_supported_versions(tmp_path, capsys, monkeypatch, version):
    from tests.test_trt_builder import make_bundle

    onnx_path = make_bundle(tmp_path / "m.onnx")
    fake_tensorrt(monkeypatch, version)
    rc = export_main(["engine", str(onnx_path), "--out", str(tmp_path / "m.plan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1
    assert f"TensorRT {version} is not supported" in err[0] and "8.x" in err[0] and "10.x" in err[0]


def test_a_bug_keeps_its_traceback():
    def broken(args):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_verb(broken, None)


def test_traceback_on_request(monkeypatch):
    from edge_runtime.user_errors import UserError

    def bad(args):
        raise UserError("x.cfg:3: bad")

    assert run_verb(bad, None) == 2
    monkeypatch.setenv("NANOPRUNE_TRACEBACK", "1")
    with pytest.raises(UserError):
        run_verb(bad, None)


def test_every_bad_item_is_named_in_one_run_and_skip_bad_leaves_them_out(tmp_path, capsys):
    from compress.data.build import load_records

    recipe, _, data = write_recipe(tmp_path)
    (data / "labels/train/0.txt").write_text("0 0.5 0.5 0.2\n")
    (data / "labels/train/2.txt").write_bytes(b"\xff\xfe\x00 binary")
    (data / "images/train/3.jpg").write_bytes(b"not a jpeg")
    assert train(tmp_path, recipe) == 2
    line = one_line(capsys)
    assert "3 bad item(s)" in line and "--skip-bad" in line
    assert "0.txt:1: expected 5 values" in line and "2.txt: not a text label file" in line
    assert "3.jpg: not a readable image" in line
    cfg = yaml.safe_load(recipe.read_text())["data"]
    records, problems = load_records({**cfg, "skip_bad": True})
    assert [r.path.name for r in records] == ["1.jpg"]
    assert (
        len(problems) == 1 and "skipped 3 bad item(s)" in problems[0] and "0.txt:1" in problems[0]
    )


def test_the_list_of_bad_items_is_capped(tmp_path):
    from compress.data.build import load_records
    from compress.data.readers import MAX_LISTED
    from compress.data.records import DataError

    recipe, _, data = write_recipe(tmp_path)
    for i in range(MAX_LISTED + 5):
        cv2.imwrite(str(data / f"images/train/x{i:02d}.jpg"), np.zeros((8, 8, 3), np.uint8))
        (data / f"labels/train/x{i:02d}.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"25 bad item\(s\).*\.\.\. and 5 more"):
        load_records(yaml.safe_load(recipe.read_text())["data"])


def test_coco_entries_that_are_not_boxes_are_named(tmp_path):
    import json

    from compress.data.build import load_records
    from compress.data.records import DataError

    (tmp_path / "val").mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(tmp_path / "val" / name), np.zeros((8, 8, 3), np.uint8))
    ann = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 8, "height": 8},
            {"id": 2, "file_name": "b.jpg", "width": "eight", "height": 8},
        ],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, "x", 3]}],
        "categories": [{"id": 1, "name": "person"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    cfg = {"format": "coco", "root": str(tmp_path), "split": "val", "annotations": "ann.json"}
    with pytest.raises(DataError) as err:
        load_records(cfg)
    assert "2 bad item(s)" in str(err.value) and "image 1 (a.jpg)" in str(err.value)
    assert "image 2 (b.jpg)" in str(err.value)


def test_eval_with_no_person_boxes_says_there_is_nothing_to_score(tmp_path, capsys):
    recipe, _, data = write_recipe(tmp_path)
    for label in (data / "labels/train").iterdir():
        label.write_text("")
    rc = compress_main(["eval", "--model", str(recipe), "--subset", "all"])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing to score" in err and "AP50" not in err
    assert "-1.000" not in err


def test_eval_resize_flag_overrides_the_model(tmp_path):
    import json

    recipe, _, _ = write_recipe(tmp_path)
    for mode in ("stretch", "letterbox"):
        out = tmp_path / f"{mode}.json"
        argv = ["eval", "--model", str(recipe), "--subset", "all", "--resize", mode]
        assert compress_main([*argv, "--out", str(out)]) == 0
        assert json.loads(out.read_text())["model"]["resize"] == mode


def test_a_zip_member_that_fails_to_extract_leaves_no_part_file(tmp_path):
    import zipfile

    from compress.assets import Asset, AssetError, _extract

    archive = tmp_path / "a.zip"
    payload = bytes(range(256)) * 64
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("inner/model.weights", payload)
    data = bytearray(archive.read_bytes())
    at = bytes(data).index(payload[:64]) + 1000
    data[at] ^= 0xFF  # one flipped byte: the member's CRC no longer matches
    archive.write_bytes(bytes(data))
    base = tmp_path / "assets"
    for member, words in (("inner/model.weights", "cannot be read"), ("absent", "is not in it")):
        asset = Asset("w", "darknet/m.weights", "https://x/a.zip", kind="zip-member", member=member)
        with pytest.raises(AssetError, match=words):
            _extract(asset, archive, base)
        assert list((base / "darknet").iterdir()) == []  # no .part, no half file


def test_bundles_are_named_after_the_recipe_and_stage(tmp_path):
    import json

    from export.onnx_export import bundle_name

    run = tmp_path / "runs" / "yolov3-tiny-person"
    (run / "base" / "model").mkdir(parents=True)
    (run / "prune" / "cycle1" / "model").mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps({"name": "yolov3-tiny-person"}))
    assert bundle_name(run / "base" / "model") == "yolov3-tiny-person-base"
    assert bundle_name(run / "prune" / "cycle1" / "model") == "yolov3-tiny-person-prune"
    (tmp_path / "mine" / "model").mkdir(parents=True)
    assert bundle_name(tmp_path / "mine" / "model") == "mine"
    assert bundle_name(tmp_path / "mine") == "mine"


def test_engine_build_on_the_device_path_refuses_tensorrt_11_and_corrupt_onnx(tmp_path):
    """What edge_runtime's TensorRT backend calls with its own tensorrt module."""
    from export.bundle import BundleError
    from export.trt.api import TensorRTUnavailable
    from export.trt.builder import build_engine
    from tests.test_trt_builder import make_bundle

    good = make_bundle(tmp_path / "m.onnx")
    trt11 = types.SimpleNamespace(__version__="11.0.0.1")
    with pytest.raises(TensorRTUnavailable, match="TensorRT 11.0.0.1 is not supported"):
        build_engine(good, tmp_path / "m.plan", trt=trt11, gpu="x")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(BundleError, match="cut.onnx: not a readable ONNX file"):
        build_engine(
            cut, tmp_path / "m.plan", trt=types.SimpleNamespace(__version__="8.2.1"), gpu="x"
        )
