"""Device-side preprocessing and metadata reading (torch-free code the Nano runs)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from export import bundle
from export.trt.onnx_meta import read_bundle_meta
from export.trt.preprocess import RESIZERS, letterbox, list_images, preprocess, read_image
from tests.test_trt_builder import make_bundle

META = bundle.make_meta(
    name="t", family="yolo", input_name="images", input_shape=[1, 3, 64, 64], classes=["person"]
)


def test_letterbox_keeps_aspect_and_centres():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :100] = (255, 0, 0)  # left half blue (BGR)
    img, (rx, ry), (left, top) = letterbox(frame, 64, 64, pad_value=114)
    assert (
        img.shape == (64, 64, 3)
        and (rx, ry) == pytest.approx((0.32, 0.32))
        and (left, top) == (0, 16)
    )
    assert (img[:16] == 114).all() and (img[48:] == 114).all()  # 32 px of image, padded evenly
    # a box in input pixels maps back to the frame through ratio and pad
    x0, y0 = (10 - left) / rx, (20 - top) / ry
    assert (x0, y0) == pytest.approx((31.25, 12.5))


def test_preprocess_follows_metadata():
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 0] = 255  # pure blue in BGR
    x, _, _ = preprocess(frame, META)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    assert x[0, 2].max() == pytest.approx(1.0) and x[0, 0].max() == 0.0  # RGB: blue is channel 2
    bgr = dict(META, color="BGR", normalize={"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3})
    y, _, _ = preprocess(frame, bgr)
    assert y[0, 0].max() == pytest.approx(1.0) and y[0, 2].min() == pytest.approx(-1.0)
    s, ratio, pad = preprocess(np.zeros((32, 128, 3), np.uint8), dict(META, resize="stretch"))
    assert s.shape == (1, 3, 64, 64) and ratio == (0.5, 2.0) and pad == (0, 0)


def test_bad_images_are_named(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"no jpeg")
    with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
        read_image(tmp_path / "broken.jpg")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="sub: holds no images"):
        list_images(tmp_path / "sub")
    with pytest.raises(ValueError, match="not a folder of images"):
        list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="expected a BGR image"):
        preprocess(np.zeros((8, 8), np.uint8), META)


def test_metadata_read_without_the_onnx_package(tmp_path, monkeypatch):
    path = make_bundle(tmp_path / "m.onnx")
    with_onnx = read_bundle_meta(path)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as on the Nano
    assert read_bundle_meta(path) == with_onnx and with_onnx["name"] == "tiny"
    (tmp_path / "plain.onnx").write_bytes(b"\x08\x07")  # ir_version only: no metadata
    with pytest.raises(bundle.BundleError, match="not a nanoprune bundle"):
        read_bundle_meta(tmp_path / "plain.onnx")


@pytest.mark.parametrize(
    "shape, overrides",
    [
        ((480, 640, 3), {}),
        ((577, 769, 3), {"pad_value": 0}),
        ((300, 120, 3), {"resize": "stretch"}),
        (
            (64, 64, 3),
            {
                "color": "BGR",
                "normalize": {
                    "scale": 1 / 255,
                    "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225],
                },
            },
        ),
    ],
)
def test_blob_equals_the_plain_arithmetic(shape, overrides):
    """The channel-first, in-place arithmetic gives bit for bit what the plain per-pixel
    formula gives: x = pixel * scale, (x - mean) / std, HWC -> NCHW."""
    import cv2

    frame = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    meta = bundle.make_meta(**{**META, **overrides})
    ours, ratio, pad = preprocess(frame, meta)
    _, _, h, w = meta["input_shape"]
    image, ratio2, pad2 = RESIZERS[meta["resize"]](frame, h, w, meta["pad_value"])
    if meta["color"] == "RGB":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    norm = meta["normalize"]
    x = image.astype(np.float32) * np.float32(norm["scale"])
    mean, std = (np.asarray(norm[k], dtype=np.float32) for k in ("mean", "std"))
    if mean.any() or (std != 1.0).any():
        x = (x - mean) / std
    plain = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    assert ours.dtype == plain.dtype and np.array_equal(ours, plain)
    assert (ratio, pad) == (ratio2, pad2)


def test_the_device_loop_uses_this_preprocessor():
    """One Preprocessor: what the engine is checked and calibrated on is what the loop feeds."""
    from edge_runtime import detector
    from export.trt import preprocess as module

    assert detector.Preprocessor is module.Preprocessor
