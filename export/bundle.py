"""The model bundle: one ONNX file whose metadata tells the runtime everything it needs.

The metadata is stored as JSON under one `metadata_props` key, "nanoprune", so onnxruntime's
`get_modelmeta().custom_metadata_map` reads it on the device without the `onnx` package.
Torch-free and Python 3.6 compatible: the device imports this module.

Fields (format_version 1):
  format_version   int
  name             str, the model's name (recipe name)
  family           "yolo" | "ssd"
  input_name       str;  input_shape [1, 3, H, W];  layout "NCHW";  dtype "float32"
  color            "RGB" | "BGR"   channel order the graph expects
  resize           "letterbox" | "stretch";  pad_value int (0-255) for letterbox borders
  normalize        {"scale": 1/255, "mean": [..3], "std": [..3]}:  x = (pixel*scale - mean)/std
  classes          list of class names (index = column of scores)
  outputs          {"kind": "boxes_scores", "boxes": name, "scores": name,
                    "box_format": "xyxy", "box_units": "input_pixels"}
                   boxes [1, N, 4], scores [1, N, C] (per-class probabilities, no background)
  score_threshold  float, default score threshold;  nms_iou float, default NMS IoU
  flops, params    optional ints (at input_shape);  source optional dict (run, sha256, ...)
"""

import json

from edge_runtime.user_errors import UserError

METADATA_KEY = "nanoprune"
FORMAT_VERSION = 1

DEFAULTS = {
    "format_version": FORMAT_VERSION,
    "layout": "NCHW",
    "dtype": "float32",
    "color": "RGB",
    "resize": "letterbox",
    "pad_value": 114,
    "normalize": {"scale": 1.0 / 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    "outputs": {
        "kind": "boxes_scores",
        "boxes": "boxes",
        "scores": "scores",
        "box_format": "xyxy",
        "box_units": "input_pixels",
    },
    "score_threshold": 0.25,
    "nms_iou": 0.45,
}

REQUIRED = ("name", "family", "input_name", "input_shape", "classes")


class BundleError(UserError, ValueError):
    """The file is not a nanoprune model bundle, or its metadata is not usable."""


def make_meta(**fields):
    """Defaults + the given fields, validated."""
    meta = json.loads(json.dumps(DEFAULTS))
    meta.update(fields)
    validate(meta)
    return meta


def validate(meta):
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise BundleError("bundle metadata lacks: " + ", ".join(missing))
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(
            "bundle format_version {} is newer than this runtime understands ({}); update "
            "nanoprune on the device".format(meta.get("format_version"), FORMAT_VERSION)
        )
    shape = meta["input_shape"]
    if len(shape) != 4 or int(shape[1]) != 3:
        raise BundleError("input_shape must be [N, 3, H, W], got {}".format(shape))
    if meta.get("resize") not in ("letterbox", "stretch"):
        raise BundleError(
            "resize must be 'letterbox' or 'stretch', got {!r}".format(meta.get("resize"))
        )
    if meta.get("color") not in ("RGB", "BGR"):
        raise BundleError("color must be 'RGB' or 'BGR', got {!r}".format(meta.get("color")))
    if not meta["classes"]:
        raise BundleError("classes is empty")
    return meta


def to_props(meta):
    """metadata -> {key: string} for onnx `metadata_props`."""
    return {METADATA_KEY: json.dumps(validate(meta), sort_keys=True)}


def from_props(props, source="model"):
    """{key: string} (onnx metadata_props or onnxruntime custom_metadata_map) -> metadata."""
    text = (props or {}).get(METADATA_KEY)
    if text is None:
        raise BundleError(
            "{} has no '{}' metadata: it is not a nanoprune bundle. Export it with "
            "`python -m export onnx` (which embeds input size, resize mode, classes and "
            "thresholds).".format(source, METADATA_KEY)
        )
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise BundleError(
            "{}: '{}' metadata is not JSON: {}".format(source, METADATA_KEY, exc)
        ) from None
    merged = json.loads(json.dumps(DEFAULTS))
    merged.update(meta)
    return validate(merged)
