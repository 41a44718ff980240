"""SSDLite-MobileNetV2 as the TF1 Object Detection API builds it, in PyTorch.

Two details decide whether imported TF weights give TF's numbers:
- TF 'SAME' padding of a stride-2 convolution pads `total // 2` before and the rest after,
  so an even input (300 -> 150) gets 0 on the top/left and 1 on the bottom/right, where
  PyTorch's symmetric padding would shift every feature map by one pixel. The pads depend on
  the spatial size, so the extractor is built for one input size (the detector's).
- The first feature map is the *expansion* output of block 13 (19x19x576 at 300 px), not a
  block output; the second is `Conv_1` (10x10x1280); four extra blocks (1x1 -> depthwise
  3x3 stride 2 -> 1x1, all ReLU6) make the last four.
The box predictors are torchvision's `SSDLiteHead` (depthwise 3x3 + BN + ReLU6, then a 1x1
conv with bias), which is the same block TF's SSDLite uses.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

BN_EPS = 1e-3  # TF's slim BatchNorm default in the SSDLite configs

# MobileNetV2 inverted residual settings: (expansion t, out channels c, repeats n, stride s)
MOBILENET_V2 = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
FEATURE_BLOCK = 13  # its expansion output is the first SSD feature map
LAST_CHANNELS = 1280
EXTRAS = [(256, 512), (128, 256), (128, 256), (64, 128)]  # (1x1 width, output width)


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(pad before, pad after, output size) of TF's SAME padding along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class ConvBNAct(nn.Sequential):
    """[ZeroPad2d] -> Conv2d (no bias) -> BatchNorm2d -> [ReLU6], with TF SAME padding."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        hw: tuple[int, int],
        groups: int = 1,
        act: bool = True,
    ) -> None:
        (top, bottom, oh), (left, right, ow) = (tf_same_pads(s, kernel, stride) for s in hw)
        layers: list[tuple[str, nn.Module]] = []
        if (top, left) == (bottom, right):
            padding = (top, left)
        else:  # asymmetric: pad explicitly, conv without padding
            layers.append(("pad", nn.ZeroPad2d((left, right, top, bottom))))
            padding = (0, 0)
        layers.append(
            ("conv", nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False))
        )
        layers.append(("bn", nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.03)))
        if act:
            layers.append(("act", nn.ReLU6(inplace=True)))
        super().__init__(OrderedDict(layers))
        self.out_hw = (oh, ow)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, stride: int, hw: tuple[int, int]) -> None:
        super().__init__()
        self.expand = ConvBNAct(cin, hidden, 1, 1, hw) if hidden != cin else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, hw, groups=hidden)
        self.project = ConvBNAct(hidden, cout, 1, 1, self.depthwise.out_hw, act=False)
        self.use_residual = stride == 1 and cin == cout
        self.out_hw = self.depthwise.out_hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.use_residual else y


class MobileNetV2SSDLiteExtractor(nn.Module):
    """Six feature maps for an SSDLite head, TF layout and padding, for one input size."""

    def __init__(self, input_size: tuple[int, int]) -> None:
        super().__init__()
        hw = tuple(input_size)
        self.stem = ConvBNAct(3, 32, 3, 2, hw)
        hw, cin = self.stem.out_hw, 32
        blocks = []
        for t, c, n, s in MOBILENET_V2:
            for i in range(n):
                block = InvertedResidual(cin, cin * t, c, s if i == 0 else 1, hw)
                blocks.append(block)
                hw, cin = block.out_hw, c
        self.blocks = nn.ModuleList(blocks)
        self.last = ConvBNAct(cin, LAST_CHANNELS, 1, 1, hw)
        extras, cin = [], LAST_CHANNELS
        for mid, out in EXTRAS:
            reduce = ConvBNAct(cin, mid, 1, 1, hw)
            dw = ConvBNAct(mid, mid, 3, 2, hw, groups=mid)
            expand = ConvBNAct(mid, out, 1, 1, dw.out_hw)
            extras.append(nn.Sequential(reduce, dw, expand))
            hw, cin = dw.out_hw, out
        self.extras = nn.ModuleList(extras)

    def out_channels(self) -> list[int]:
        feature = self.blocks[FEATURE_BLOCK].expand.conv.out_channels
        return [feature, self.last.conv.out_channels] + [
            e[2].conv.out_channels for e in self.extras
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, block in enumerate(self.blocks):
            if i == FEATURE_BLOCK:  # tap the expansion output, then finish the block
                expanded = block.expand(x)
                features.append(expanded)
                x = block.project(block.depthwise(expanded))
            else:
                x = block(x)
        x = self.last(x)
        features.append(x)
        for extra in self.extras:
            x = extra(x)
            features.append(x)
        return features


def grid_anchors(
    grids: Sequence[Sequence[int]],
    scales: Sequence[Sequence[float]],
    ratios: Sequence[Sequence[float]],
    input_size: tuple[int, int],
) -> torch.Tensor:
    """TF's MultipleGridAnchorGenerator (default strides 1/grid, offsets half a cell) as xyxy
    input pixels, ordered row, column, box spec like TF's reshape of the predictor output."""
    h, w = input_size
    out = []
    for (gh, gw), layer_scales, layer_ratios in zip(grids, scales, ratios):
        s = np.asarray(layer_scales, np.float64)
        r = np.sqrt(np.asarray(layer_ratios, np.float64))
        bh, bw = s / r, s * r  # base_anchor_size [1, 1] on a square image
        cy = (np.arange(gh) + 0.5) / gh
        cx = (np.arange(gw) + 0.5) / gw
        cy, cx = np.meshgrid(cy, cx, indexing="ij")
        cy, cx = cy[..., None], cx[..., None]
        boxes = np.stack(
            np.broadcast_arrays(
                (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
            ),
            -1,
        )
        out.append(boxes.reshape(-1, 4))
    return torch.from_numpy(np.concatenate(out).astype(np.float32))


def ssd_anchor_settings(
    num_layers: int = 6,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 0.3333),
    reduce_lowest: bool = True,
) -> tuple[list[list[float]], list[list[float]]]:
    """Per-layer (scales, ratios) of TF's `ssd_anchor_generator` config (create_ssd_anchors):
    used when a graph is built from scratch rather than imported."""
    s = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)] + [
        1.0
    ]
    scales, ratios = [], []
    for layer in range(num_layers):
        if layer == 0 and reduce_lowest:
            scales.append([0.1, s[0], s[0]])
            ratios.append([1.0, 2.0, 0.5])
        else:
            scales.append([s[layer]] * len(aspect_ratios) + [math.sqrt(s[layer] * s[layer + 1])])
            ratios.append(list(aspect_ratios) + [1.0])
    return scales, ratios
