"""ONNX export: bundle metadata, onnxsim, parity with PyTorch, TensorRT 8.2 check, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from compress.models.base import Detector
from edge_runtime import files
from export import bundle
from export.check import check_onnx
from export.onnx_export import export_bundle
from export.parity import ParityError, check_parity, synthetic_images
from export.trt.onnx_meta import read_bundle_meta, read_props_wire
from tests.conftest import need


class TinyYolo(Detector):
    """One conv head on a stride-8 grid, YOLO-style decode (sigmoid xy, exp wh * anchors)."""

    family = "yolo"

    def __init__(
        self, classes=("person", "car"), size=(64, 96), anchors=((10.0, 14.0), (23.0, 27.0))
    ):
        super().__init__()
        torch.manual_seed(0)
        self.class_names, self.input_size = list(classes), size
        self.anchors = torch.tensor(anchors)
        self.na, self.nc = len(anchors), len(classes)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
            nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(16, self.na * (5 + self.nc), 1),
        )  # fmt: skip
        self.body.eval()

    def forward(self, images):
        return self.body(images)

    def decode(self, raw):
        b, _, gh, gw = raw.shape
        p = raw.view(b, self.na, 5 + self.nc, gh, gw).permute(0, 1, 3, 4, 2)
        stride = self.input_size[0] / gh
        gy, gx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        grid = torch.stack((gx, gy), -1).view(1, 1, gh, gw, 2).float()
        xy = (p[..., :2].sigmoid() + grid) * stride
        wh = p[..., 2:4].exp() * self.anchors.view(1, self.na, 1, 1, 2)
        boxes = torch.cat((xy - wh / 2, xy + wh / 2), -1).reshape(b, -1, 4)
        scores = (p[..., 4:5].sigmoid() * p[..., 5:].sigmoid()).reshape(b, -1, self.nc)
        return boxes, scores


class WithNonZero(TinyYolo):
    """Data-dependent output (NonZero): what TensorRT 8.2 cannot import."""

    def decode(self, raw):
        boxes, scores = super().decode(raw)
        keep = torch.nonzero(scores[0, :, 0] > 0.5).flatten()
        return boxes[:, keep], scores[:, keep]


class WithNoise(TinyYolo):
    """Random numbers at run time: PyTorch and onnxruntime draw different ones."""

    def decode(self, raw):
        boxes, scores = super().decode(raw)
        return boxes + torch.rand_like(boxes), scores


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "tiny.onnx"
    det = TinyYolo()
    report = export_bundle(det, out, "tiny-person", parity_images=synthetic_images(2))
    return det, out, report


def test_export_writes_bundle_with_metadata(tiny_bundle):
    det, out, report = tiny_bundle
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 96]
    assert model.opset_import[0].version == 13
    meta = bundle.from_props({p.key: p.value for p in model.metadata_props})
    assert meta["classes"] == ["person", "car"] and meta["input_shape"] == [1, 3, 64, 96]
    assert meta["name"] == "tiny-person" and meta["resize"] == "letterbox"
    assert meta["params"] == sum(p.numel() for p in det.parameters())
    assert len(meta["source"]["state_sha256"]) == 64
    assert report["sha256"] == files.sha256_file(str(out))
    # the device reads the same metadata without the onnx package
    assert read_props_wire(out.read_bytes()) == {p.key: p.value for p in model.metadata_props}
    assert read_bundle_meta(out) == meta


def test_export_parity_and_trt_check(tiny_bundle):
    _, out, report = tiny_bundle
    parity = report["parity"]
    assert parity["passed"] and parity["identical_detections"]
    assert parity["max_abs_diff_boxes"] <= 1e-4 and parity["max_abs_diff_scores"] <= 1e-4
    assert report["simplify"]["simplified"]
    check = check_onnx(out, "nano")
    assert check.ok, check.format()
    assert "NonZero" not in check.ops and "NonMaxSuppression" not in check.ops


def test_parity_breaks_loudly_on_a_changed_graph(tiny_bundle, tmp_path):
    det, out, _ = tiny_bundle
    meta = read_bundle_meta(out)
    other = TinyYolo()
    with torch.no_grad():
        other.body[-1].bias += 0.05  # what a stale or wrongly exported graph looks like
    with pytest.raises(ParityError, match="max \\|diff\\|"):
        check_parity(other.export_module(), out, meta, synthetic_images(1))


def test_export_fails_loudly_and_keeps_the_good_path_clean(tmp_path):
    out = tmp_path / "noisy.onnx"
    with pytest.raises(ParityError, match="boxes") as info:
        export_bundle(WithNoise(), out, "noisy", parity_images=1)
    assert not out.exists() and (tmp_path / "noisy.parity-failed.onnx").exists()
    assert (
        info.value.report["passed"] is False and info.value.report["max_abs_diff_boxes_px"] > 1e-2
    )


def test_dynamic_batch_export_runs_batches(tmp_path):
    import onnxruntime as ort

    out = tmp_path / "dyn.onnx"
    report = export_bundle(TinyYolo(), out, "dyn", dynamic_batch=True, parity_images=1)
    assert report["meta"]["dynamic_batch"] is True
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    boxes, scores = sess.run(None, {"images": np.random.rand(3, 3, 64, 96).astype(np.float32)})
    assert boxes.shape[0] == 3 and scores.shape[0] == 3
    nano = check_onnx(out, "nano")
    assert not nano.ok and any(p.op == "input" and "dynamic" in p.message for p in nano.errors)


def test_unsupported_op_is_rejected_by_name(tmp_path):
    out = tmp_path / "nz.onnx"
    export_bundle(WithNonZero(), out, "nz", simplify=False, parity_images=1, opset=13)
    report = check_onnx(out, "nano")
    assert not report.ok
    assert "NonZero" in report.unsupported_ops()
    assert any(p.op == "NonZero" and p.node for p in report.errors)
    # TensorRT 10 imports NonZero: the desktop check does not flag the op itself
    assert "NonZero" not in check_onnx(out, "desktop").unsupported_ops()


def _real_images(assets):
    return [str(p) for p in need(assets, "images/person.jpg", "images/dog.jpg")]


def test_yolov3_tiny_real_weights_export(assets, tmp_path):
    cfg, weights, names = need(
        assets, "darknet/yolov3-tiny.cfg", "darknet/yolov3-tiny.weights", "darknet/coco.names"
    )
    from compress.models import load

    det = load.load_detector(
        {"family": "yolo", "cfg": str(cfg), "weights": str(weights), "names": str(names),
         "classes": ["person"], "input_size": 416}
    )  # fmt: skip
    out = tmp_path / "yolov3-tiny.onnx"
    report = export_bundle(det, out, "yolov3-tiny-person", parity_images=_real_images(assets))
    p = report["parity"]
    assert p["passed"] and p["max_abs_diff_scores"] <= 1e-4 and p["max_abs_diff_boxes"] <= 1e-4
    assert sum(r["detections"] for r in p["images"]) > 0  # person.jpg has a person
    meta = read_bundle_meta(out)
    assert meta["classes"] == ["person"] and meta["input_shape"] == [1, 3, 416, 416]
    assert check_onnx(out, "nano").ok


def test_ssdlite_random_weights_export(assets, tmp_path):
    from compress.models import ssd

    det = ssd.build_from_config(
        {"variant": "ssdlite320_mobilenet_v3_large", "classes": ["person"], "input_size": 320}
    )
    out = tmp_path / "ssdlite.onnx"
    report = export_bundle(det, out, "ssdlite-person", parity_images=_real_images(assets))
    assert report["parity"]["passed"] and report["meta"]["family"] == "ssd"
    nano = check_onnx(out, "nano")
    assert nano.ok, nano.format()
    assert "HardSwish" not in nano.ops  # opset 13 spells it HardSigmoid * x, which TensorRT 8.2 has


def test_ssdlite_tf_pedestrian_graph_export(assets, tmp_path):
    """The real pedestrian SSDLite (TF graph, imported): parity on real photos with detections."""
    (pb,) = need(assets, "tf/pedestrian_ssdlite_frozen_inference_graph.pb")
    from compress.models import ssd

    det = ssd.build_from_config({"tf_graph": str(pb), "classes": ["person"]})
    out = tmp_path / "ssdlite-tf.onnx"
    report = export_bundle(det, out, "ssdlite-tf", parity_images=_real_images(assets))
    p = report["parity"]
    assert p["passed"] and p["max_abs_diff_scores"] <= 1e-4 and p["max_abs_diff_boxes"] <= 1e-4
    assert sum(r["detections"] for r in p["images"]) > 0
    assert check_onnx(out, "nano").ok


@pytest.fixture
def fake_loader(monkeypatch, tmp_path):
    """compress.models.load with a loader that returns TinyYolo for any folder."""
    import sys
    import types

    fake = types.ModuleType("compress.models.load")
    fake.load_detector_dir = lambda path: TinyYolo()
    monkeypatch.setitem(sys.modules, "compress.models.load", fake)
    monkeypatch.setenv("NANOPRUNE_ASSETS", str(tmp_path / "no-assets"))


def _model_folder(path):
    path.mkdir(parents=True)
    (path / "model.json").write_text(json.dumps({"family": "tiny"}))
    return path


def test_cli_exports_a_run_folder(tmp_path, fake_loader, capsys):
    from export.__main__ import main

    run = tmp_path / "runs" / "tiny"
    _model_folder(run / "prune" / "model")
    (run / "summary.json").write_text(
        json.dumps({"recipe": "tiny-person", "final_model": "prune/model"})
    )
    (run / "recipe.json").write_text(
        json.dumps({"export": {"opset": 12, "simplify": False, "parity_images": 1}})
    )
    assert main(["onnx", "--run", str(run)]) == 0
    report = json.loads((run / "export" / "tiny-person.report.json").read_text())
    assert report["opset"] == 12 and not report["simplify"]["simplified"]
    assert len(report["parity"]["images"]) == 1 and report["parity"]["images"][0][
        "image"
    ].startswith("synthetic")
    meta = read_bundle_meta(run / "export" / "tiny-person.onnx")
    assert meta["name"] == "tiny-person" and meta["source"]["run"] == str(run)
    assert "parity on 1 image" in capsys.readouterr().out
    (run / "summary.json").write_text(json.dumps({"recipe": "tiny-person"}))
    with pytest.raises(SystemExit, match="final_model"):
        main(["onnx", "--run", str(run)])


def test_cli_exports_a_model_folder(tmp_path, fake_loader, capsys):
    """`python -m export onnx --model DIR`, then `check` on the result."""
    from export.__main__ import main

    folder = _model_folder(tmp_path / "model")
    assert main(["onnx", "--model", str(folder), "--name", "cli"]) == 0
    report = json.loads((folder / "model.report.json").read_text())
    assert report["parity"]["passed"] and report["trt_check"]["ok"]
    meta = read_bundle_meta(folder / "model.onnx")
    assert meta["source"]["files"]["model.json"] == files.sha256_file(str(folder / "model.json"))
    assert main(["check", str(folder / "model.onnx"), "--target", "nano"]) == 0
    assert "OK" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no model.json"):
        main(["onnx", "--model", str(tmp_path)])
