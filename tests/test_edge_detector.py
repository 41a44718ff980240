"""BundleDetector and backends on tiny ONNX bundles: metadata, preprocessing, NMS, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge_runtime.backends import open_backend
from edge_runtime.detector import BundleDetector
from edge_runtime.errors import ModelError
from edge_runtime.postprocess import select
from export.trt.preprocess import Preprocessor
from tests.conftest import need
from tests.edge_fixtures import make_bundle, yolo_tiny_bundle


def test_detects_a_bright_square_in_frame_pixels(tmp_path: Path) -> None:
    det = BundleDetector(make_bundle(tmp_path / "g.onnx"), threads=1)
    frame = np.zeros((240, 320, 3), np.uint8)  # letterboxed to 48x64 inside 64x64
    frame[80:160, 120:200] = 255
    boxes, scores, classes = det.detect(frame)
    assert det.meta["classes"] == ["person", "red"]
    assert len(boxes) >= 1 and set(classes.tolist()) == {0}
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    # every detection sits on the bright square, in original pixels
    assert np.all(
        (centre[:, 0] > 100) & (centre[:, 0] < 220) & (centre[:, 1] > 60) & (centre[:, 1] < 180)
    )
    assert boxes.dtype == np.float32 and scores.shape == classes.shape == (len(boxes),)


def test_red_is_class_one_and_colour_order_matters(tmp_path: Path) -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, :, 2] = 255  # red in BGR
    rgb = BundleDetector(make_bundle(tmp_path / "rgb.onnx", color="RGB"))
    _, _, classes = rgb.detect(frame)
    assert 1 in classes.tolist()
    bgr = BundleDetector(make_bundle(tmp_path / "bgr.onnx", color="BGR"))
    _, _, classes = bgr.detect(frame)  # the graph sees blue in its "R" channel: not red
    assert 1 not in classes.tolist()


def test_preprocess_matches_torch_letterbox_reference() -> None:
    meta = {
        "input_shape": [1, 3, 64, 64],
        "resize": "letterbox",
        "pad_value": 114,
        "color": "RGB",
        "normalize": {
            "scale": 1 / 255,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
    }
    frame = np.random.default_rng(0).integers(0, 255, (30, 60, 3), dtype=np.uint8)
    blob, geo = Preprocessor(meta)(frame)
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert (geo.left, geo.top, geo.sx) == (0, 16, 64 / 60)
    ref = cv2.cvtColor(cv2.resize(frame, (64, 32)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    ref = (ref - np.array(meta["normalize"]["mean"])) / np.array(meta["normalize"]["std"])
    np.testing.assert_allclose(blob[0, :, 16:48].transpose(1, 2, 0), ref, atol=1e-5)
    pad = (114 / 255 - 0.485) / 0.229
    np.testing.assert_allclose(blob[0, 0, :16], pad, atol=1e-5)
    back = geo.to_frame(np.array([[0, 16, 64, 48]], np.float32))
    np.testing.assert_allclose(back, [[0, 0, 60, 30]], atol=1e-4)


def test_numpy_nms_equals_torchvision() -> None:
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 200, (400, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (400, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, (400, 3)).astype(np.float32)
    b, s, c = select(boxes, scores, 0.3, 0.45)
    rows, cols = np.nonzero(scores >= 0.3)
    tb, ts = torch.from_numpy(boxes[rows]), torch.from_numpy(scores[rows, cols])
    keep = batched_nms(tb, ts, torch.from_numpy(cols), 0.45)[:300].numpy()
    assert len(keep) == len(b) > 50
    np.testing.assert_array_equal(b, boxes[rows][keep])
    np.testing.assert_array_equal(c, cols[keep])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\x08\x07\x12\x07pytorch" + b"\xff" * 5, "cannot load"),
        (b"hello, I am a text file\n", "cannot load"),
    ],
)
def test_bad_model_files_give_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as info:
        open_backend(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_bundle_and_missing_metadata(tmp_path: Path) -> None:
    good = make_bundle(tmp_path / "good.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError, match="cut.onnx: onnxruntime cannot load"):
        open_backend(tmp_path / "cut.onnx")
    plain = make_bundle(tmp_path / "plain.onnx", with_meta=False)
    with pytest.raises(ModelError, match="no 'nanoprune' metadata"):
        BundleDetector(plain)
    with pytest.raises(ModelError, match="unknown model type '.pt'"):
        (tmp_path / "m.pt").write_bytes(b"x")
        open_backend(tmp_path / "m.pt")
    with pytest.raises(ModelError, match="not found"):
        open_backend(tmp_path / "absent.onnx")


def test_threads_are_recorded(tmp_path: Path) -> None:
    det = BundleDetector(make_bundle(tmp_path / "g.onnx"), threads=1)
    info = det.describe()
    assert (
        info["threads"] == 1
        and info["backend"] == "ort"
        and "CPUExecutionProvider" in info["providers"]
    )


def test_yolov3_tiny_bundle_finds_the_person(assets: Path) -> None:
    """The real YOLOv3-tiny person bundle (exported from the Darknet weights) finds people in person.jpg."""
    (image,) = need(assets, "images/person.jpg")
    det = BundleDetector(yolo_tiny_bundle(str(assets)), threads=2)
    boxes, scores, classes = det.detect(cv2.imread(str(image)))
    assert det.meta["classes"] == ["person"] and det.input_shape == (1, 3, 416, 416)
    assert (classes == 0).sum() >= 1 and scores.max() > 0.5
    x1, y1, x2, y2 = boxes[int(scores.argmax())]
    assert (y2 - y1) > 200 and (y2 - y1) > (x2 - x1)  # a standing person, in original pixels


def test_ort_provider_choice_and_tensorrt_options(tmp_path: Path) -> None:
    from edge_runtime.backends import ort_providers

    assert ort_providers(["CPUExecutionProvider", "AzureExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    chosen = ort_providers(
        ["CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider"],
        cache_dir=tmp_path,
    )
    assert [p if isinstance(p, str) else p[0] for p in chosen] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    options = chosen[0][1]
    assert options["trt_fp16_enable"] is True and options["trt_max_workspace_size"] == 256 << 20
    assert options["trt_engine_cache_path"] == str(tmp_path)
