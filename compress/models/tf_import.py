"""Import a TF1 Object Detection API SSDLite-MobileNetV2 frozen graph into PyTorch.

`python -m compress import-tf frozen_inference_graph.pb --out runs/tf-import` writes a model
folder (model.json + channel spec + state_dict, the shared save path) and a report.json.

The GraphDef is read without TensorFlow (`ssd_tf_graph`: TF's schema declared for the protobuf
runtime). What is mapped, and how:
- every conv / depthwise conv: TF HWIO (depthwise HWC1) -> PyTorch OIHW (depthwise C1HW);
- every FusedBatchNorm: gamma, beta, moving mean/variance and its own epsilon, kept as a
  BatchNorm2d (not folded) so the model trains and prunes like the others;
- box predictors: TF encodes (ty, tx, th, tw) per anchor; the rows of each box conv are
  permuted to torchvision's (tx, ty, tw, th) so one decoder with the same (10, 10, 5, 5)
  scales serves every SSD;
- anchors: per-layer scales and aspect ratios read from the MultipleGridAnchorGenerator's
  constants; grid sizes follow from the feature maps;
- preprocessing: the graph's resize size and the [-1, 1] scaling (x * 2/255 - 1) are checked.
The graph resizes with TF1's ResizeBilinear (align_corners=False, no half-pixel centres);
`tf_resize_bilinear` reproduces it for exact comparisons with the graph's own detections.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.models.ssd import SSDDetector, build
from compress.models.ssd_tf_graph import Graph, GraphError
from compress.models.ssd_tf_mobilenet import FEATURE_BLOCK

VARIANT = "ssdlite_mobilenet_v2_tf"
FE = "FeatureExtractor/MobilenetV2"
EXTRA_NAMES = [
    "layer_19_{}_Conv2d_2_{}_256",
    "layer_19_{}_Conv2d_3_{}_128",
    "layer_19_{}_Conv2d_4_{}_128",
    "layer_19_{}_Conv2d_5_{}_64",
]


def _block_prefix(i: int) -> str:
    return f"{FE}/expanded_conv" + ("" if i == 0 else f"_{i}")


def _extra_prefixes(graph: Graph) -> list[tuple[str, str, str]]:
    """(1x1, depthwise, 1x1) name prefixes of the four extra layers, found by their TF names
    (`layer_19_1_Conv2d_2_1x1_256`, `layer_19_2_Conv2d_2_3x3_s2_512_depthwise`, ...)."""
    out = []
    for k in range(2, 6):
        names = [n for n in graph.nodes if n.startswith(f"{FE}/layer_19_") and f"_Conv2d_{k}_" in n]
        reduce = sorted(
            {n.split("/")[2] for n in names if n.split("/")[2].startswith("layer_19_1_")}
        )
        expand = sorted(
            {n.split("/")[2] for n in names if n.split("/")[2].startswith("layer_19_2_")}
        )
        dw = [e for e in expand if e.endswith("_depthwise")]
        pw = [e for e in expand if not e.endswith("_depthwise")]
        if len(reduce) != 1 or len(dw) != 1 or len(pw) != 1:
            raise GraphError(
                f"{graph.source}: extra feature layer {k} not found (is this an SSDLite-MobileNetV2 graph?)"
            )
        out.append((f"{FE}/{reduce[0]}", f"{FE}/{dw[0]}", f"{FE}/{pw[0]}"))
    return out


def _conv_weight(graph: Graph, prefix: str) -> tuple[np.ndarray, bool]:
    """The kernel of the conv under `prefix` as OIHW, and whether it is depthwise."""
    for op_name, depthwise in ((f"{prefix}/Conv2D", False), (f"{prefix}/depthwise", True)):
        if graph.has(op_name):
            w = graph.const(graph.node(op_name).input[1])
            if depthwise:  # [kh, kw, in, multiplier] -> [in * multiplier, 1, kh, kw]
                kh, kw, cin, mult = w.shape
                return w.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw), True
            return w.transpose(3, 2, 0, 1), False
    raise GraphError(f"{graph.source}: no convolution under {prefix!r}")


def _copy(dst: torch.Tensor, src: np.ndarray, what: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise GraphError(
            f"{what}: graph has shape {tuple(src.shape)}, the PyTorch layer {tuple(dst.shape)}"
        )
    with torch.no_grad():
        dst.copy_(torch.from_numpy(np.ascontiguousarray(src, dtype=np.float32)))


def _load_conv_bn(graph: Graph, prefix: str, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> int:
    w, _ = _conv_weight(graph, prefix)
    _copy(conv.weight, w, f"{prefix} weights")
    for suffix in ("FusedBatchNorm", "FusedBatchNormV3"):  # TF <= 1.14 / TF 1.15+ node names
        bn_name = f"{prefix}/BatchNorm/{suffix}"
        if graph.has(bn_name):
            break
    else:
        return 1 + _load_folded_bn(graph, prefix, bn)
    _, gamma, beta, mean, var = graph.node(bn_name).input[:5]
    for dst, src, name in (
        (bn.weight, gamma, "gamma"),
        (bn.bias, beta, "beta"),
        (bn.running_mean, mean, "moving_mean"),
        (bn.running_var, var, "moving_variance"),
    ):
        _copy(dst, graph.const(src), f"{prefix} BatchNorm {name}")
    bn.eps = float(graph.attr(bn_name, "epsilon").f)
    return 5


def _load_folded_bn(graph: Graph, prefix: str, bn: nn.BatchNorm2d) -> int:
    """A graph whose BN was folded into the conv (conv -> BiasAdd): an identity BatchNorm
    (gamma 1, mean 0, variance 1 - eps) carrying the bias, so the layer can still be pruned."""
    bias_add = f"{prefix}/BiasAdd"
    if not graph.has(bias_add):
        raise GraphError(
            f"{graph.source}: {prefix!r} has neither a FusedBatchNorm nor a BiasAdd after its conv"
        )
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
    _copy(bn.bias, graph.const(graph.node(bias_add).input[1]), f"{prefix} biases")
    return 1


def _load_conv_bias(
    graph: Graph, prefix: str, conv: nn.Conv2d, rows: np.ndarray | None = None
) -> int:
    w, _ = _conv_weight(graph, prefix)
    b = graph.const(graph.node(f"{prefix}/BiasAdd").input[1])
    if rows is not None:
        w, b = w[rows], b[rows]
    _copy(conv.weight, w, f"{prefix} weights")
    _copy(conv.bias, b, f"{prefix} biases")
    return 2


def anchor_settings(graph: Graph) -> dict[str, Any]:
    """Per-layer scales and aspect ratios of the graph's MultipleGridAnchorGenerator."""
    gen = "MultipleGridAnchorGenerator"
    scales, ratios = [], []
    for layer in range(6):
        sqrt = f"{gen}/Sqrt/x" if layer == 0 else f"{gen}/Sqrt_{layer}/x"
        scale = f"{gen}/truediv_{14 + layer}/x"
        if not (graph.has(sqrt) and graph.has(scale)):
            raise GraphError(
                f"{graph.source}: anchor generator constants {sqrt!r}/{scale!r} not found"
            )
        ratios.append([float(x) for x in graph.const(sqrt).ravel()])
        scales.append([float(x) for x in graph.const(scale).ravel()])
    return {"scales": scales, "ratios": ratios}


def graph_settings(graph: Graph) -> dict[str, Any]:
    """Input size, preprocessing and post-processing constants the graph carries."""
    resize = [
        n
        for n in graph.nodes.values()
        if n.op == "ResizeBilinear" and n.name.startswith("Preprocessor")
    ]
    if len(resize) != 1:
        raise GraphError(
            f"{graph.source}: expected one Preprocessor ResizeBilinear, found {len(resize)}"
        )
    size = [int(x) for x in graph.const(resize[0].input[1])]
    align = graph.attr(resize[0].name, "align_corners").b
    scale = float(graph.const("Preprocessor/mul/x"))
    shift = float(graph.const("Preprocessor/sub/y"))
    if abs(scale - 2 / 255) > 1e-6 or shift != 1.0:
        raise GraphError(
            f"{graph.source}: preprocessing x*{scale}-{shift} is not the [-1, 1] scaling SSDLite uses"
        )
    out: dict[str, Any] = {
        "input_size": size,
        "resize_align_corners": bool(align),
        "preprocess": [scale, shift],
    }
    for node in graph.nodes.values():
        if node.op.startswith("NonMaxSuppression"):
            out["nms_iou"] = float(graph.const(node.input[3]))
            out["nms_score_threshold"] = float(graph.const(node.input[4]))
    sig = [
        n
        for n in graph.nodes.values()
        if n.name.startswith("Postprocessor") and n.op in ("Sigmoid", "Softmax")
    ]
    out["score"] = "sigmoid" if sig and sig[0].op == "Sigmoid" else "softmax"
    return out


def import_frozen_graph(
    path: str | os.PathLike, class_names: list[str] | None = None
) -> SSDDetector:
    """The graph's SSDLite-MobileNetV2 as an `SSDDetector` (variant ssdlite_mobilenet_v2_tf)."""
    graph = Graph.load(path)
    settings = graph_settings(graph)
    box0 = _conv_weight(graph, "BoxPredictor_0/BoxEncodingPredictor")[0].shape[0] // 4
    cls0 = _conv_weight(graph, "BoxPredictor_0/ClassPredictor")[0].shape[0]
    columns = cls0 // box0
    class_names = list(class_names or ["person"])
    if columns != 1 + len(class_names):
        raise GraphError(
            f"{path}: the graph predicts {columns - 1} class(es); got names {class_names}"
        )
    det = build(
        VARIANT,
        class_names,
        tuple(settings["input_size"]),
        columns=columns,
        anchor_settings=anchor_settings(graph),
    )
    det.score = settings["score"]
    det.default_nms_iou = settings.get("nms_iou", det.default_nms_iou)
    n = _load_weights(graph, det)
    det.import_report = {
        **settings,
        "tensors_mapped": n,
        "anchors": int(det.anchors.shape[0]),
        "columns": columns,
        "nodes": len(graph.nodes),
    }
    return det.eval()


def _load_weights(graph: Graph, det: SSDDetector) -> int:
    bb, head = det.core.backbone, det.core.head
    n = _load_conv_bn(graph, f"{FE}/Conv", bb.stem.conv, bb.stem.bn)
    for i, block in enumerate(bb.blocks):
        p = _block_prefix(i)
        if isinstance(block.expand, nn.Sequential):
            n += _load_conv_bn(graph, f"{p}/expand", block.expand.conv, block.expand.bn)
        n += _load_conv_bn(graph, f"{p}/depthwise", block.depthwise.conv, block.depthwise.bn)
        n += _load_conv_bn(graph, f"{p}/project", block.project.conv, block.project.bn)
    n += _load_conv_bn(graph, f"{FE}/Conv_1", bb.last.conv, bb.last.bn)
    for extra, prefixes in zip(bb.extras, _extra_prefixes(graph)):
        for layer, prefix in zip(extra, prefixes):
            n += _load_conv_bn(graph, prefix, layer.conv, layer.bn)
    _check_feature_taps(graph)
    for i in range(len(head.regression_head.module_list)):
        for name, sub in (
            ("BoxEncodingPredictor", head.regression_head),
            ("ClassPredictor", head.classification_head),
        ):
            block = sub.module_list[i]
            p = f"BoxPredictor_{i}/{name}"
            n += _load_conv_bn(graph, f"{p}_depthwise", block[0][0], block[0][1])
            rows = None
            if name == "BoxEncodingPredictor":  # (ty, tx, th, tw) -> (tx, ty, tw, th) per anchor
                anchors = block[1].out_channels // 4
                rows = (np.arange(anchors)[:, None] * 4 + np.array([1, 0, 3, 2])).ravel()
            n += _load_conv_bias(graph, p, block[1], rows)
    return n


def _check_feature_taps(graph: Graph) -> None:
    """The box predictors must read block 13's expansion and Conv_1, as the extractor does."""
    first = graph.node("BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise").input[0]
    expected = f"{_block_prefix(FEATURE_BLOCK)}/expansion_output"
    if first.split(":")[0] != expected:
        raise GraphError(f"{graph.source}: BoxPredictor_0 reads {first!r}, expected {expected!r}")


def tf_resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """TF1 `resize_bilinear(align_corners=False, half_pixel_centers=False)` of an HxWxC image
    to `size` (h, w) as float32: source = dest * in/out, no half-pixel offset (OpenCV's
    INTER_LINEAR uses half-pixel centres and differs by up to a pixel)."""
    ih, iw = image.shape[:2]
    oh, ow = size
    img = image.astype(np.float32)

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = axis(ih, oh)
    x0, x1, fx = axis(iw, ow)
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * fx[None, :, None]
    bottom = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * fx[None, :, None]
    return top + (bottom - top) * fy[:, None, None]


# --------------------------------------------------------------------------- CLI


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Import a TF1 Object Detection API SSDLite-MobileNetV2 frozen graph",
        add_help=add_help,
    )
    parser.add_argument(
        "graph",
        help="frozen_inference_graph.pb (absolute, ./relative or relative to NANOPRUNE_ASSETS)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="run folder: the model goes to OUT/model, the report to OUT/report.json",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        default=["person"],
        help="class names of the graph's classes (default: person)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="default score threshold stored with the model",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    from compress.io import file_record, write_json
    from compress.models.load import asset_path, save_detector

    start = time.perf_counter()
    path = asset_path(args.graph, "TF frozen graph")
    det = import_frozen_graph(path, class_names=args.classes)
    if args.score_threshold is not None:
        det.default_score_threshold = args.score_threshold
    out = Path(args.out)
    model_dir = save_detector(det, out / "model", extra={"source": {"tf_graph": file_record(path)}})
    report = {
        "stage": "import-tf",
        "inputs": {"tf_graph": file_record(path)},
        "settings": {"classes": args.classes, "variant": VARIANT},
        "graph": det.import_report,
        "figures": {
            "params": sum(p.numel() for p in det.parameters()),
            "seconds": round(time.perf_counter() - start, 2),
        },
        "model": str(model_dir),
    }
    write_json(out / "report.json", report)
    print(
        f"imported {path.name}: {report['graph']['tensors_mapped']} tensors, {report['graph']['anchors']} anchors -> {model_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
