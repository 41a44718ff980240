"""Tiny real ONNX bundles for the edge tests (a torch module exported in the test run)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from export.bundle import make_meta, to_props
from tests.conftest import need


class GridDetector(nn.Module):
    """A fixed-weight detector: one box per `cell` x `cell` cell; class 0 scores bright cells,
    class 1 scores red cells. Small, deterministic, and its detections follow the image."""

    def __init__(
        self, height: int = 64, width: int = 64, cell: int = 8, gain: float = 12.0
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, cell, stride=cell)
        with torch.no_grad():
            k = 1.0 / (cell * cell)
            self.conv.weight.zero_()
            self.conv.weight[0] = gain * k / 3.0  # mean brightness (RGB input)
            self.conv.weight[1, 0] = gain * k  # R
            self.conv.weight[1, 1] = -gain * k  # - G
            self.conv.bias.copy_(torch.tensor([-gain * 0.5, -gain * 0.3]))
        gy, gx = torch.meshgrid(
            torch.arange(height // cell), torch.arange(width // cell), indexing="ij"
        )
        x1, y1 = gx.flatten().float() * cell, gy.flatten().float() * cell
        boxes = torch.stack([x1 - cell / 4, y1 - cell / 4, x1 + cell * 1.25, y1 + cell * 1.25], 1)
        self.register_buffer("anchors", boxes[None])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.sigmoid(self.conv(images)).flatten(2).transpose(1, 2)
        return self.anchors.expand(images.shape[0], -1, -1), scores


def make_bundle(
    path: Path,
    height: int = 64,
    width: int = 64,
    resize: str = "letterbox",
    color: str = "RGB",
    meta: dict | None = None,
    with_meta: bool = True,
) -> Path:
    model = GridDetector(height, width).eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, height, width),),
        str(path),
        input_names=["images"],
        output_names=["boxes", "scores"],
        opset_version=13,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    if with_meta:
        fields = dict(
            name="grid",
            family="yolo",
            input_name="images",
            input_shape=[1, 3, height, width],
            classes=["person", "red"],
            resize=resize,
            color=color,
            score_threshold=0.5,
            nms_iou=0.45,
        )
        fields.update(meta or {})
        for key, value in to_props(make_meta(**fields)).items():
            proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "grid.onnx")


def yolo_tiny_bundle(assets_root: str) -> Path:
    """The real YOLOv3-tiny person bundle (Darknet loader + ONNX exporter), exported once per
    test session; skips when the assets or the host exporter are absent."""
    return yolo_tiny(assets_root)[1]


@functools.lru_cache(maxsize=1)
def yolo_tiny(assets_root: str) -> tuple[nn.Module, Path]:
    """(the host's PyTorch YOLOv3-tiny person detector, its exported ONNX bundle)."""
    root = Path(assets_root)
    need(root, "darknet/yolov3-tiny.cfg", "darknet/yolov3-tiny.weights", "darknet/coco.names")
    from compress.models.load import load_detector
    from export.onnx_export import export_bundle

    detector = load_detector(
        {
            "family": "yolo",
            "cfg": str(root / "darknet/yolov3-tiny.cfg"),
            "weights": str(root / "darknet/yolov3-tiny.weights"),
            "names": str(root / "darknet/coco.names"),
            "classes": ["person"],
            "input_size": 416,
        }
    )
    folder = tempfile.mkdtemp(prefix="edge-yolo-")
    atexit.register(shutil.rmtree, folder, True)
    path = Path(folder) / "yolov3-tiny-person.onnx"
    export_bundle(detector, path, "yolov3-tiny-person", simplify=False)
    return detector.eval(), path
