"""Darknet YOLO (v3, v3-tiny, v3-SPP and kin) as a `Detector`, built from cfg blocks.

The cfg is the structure: `YOLO.blocks` is the list of layer dicts (no `[net]`; Darknet layer i
is `blocks[i]` and `module_list[i]`), so the pruners change `filters` or drop blocks and
rebuild with `YOLO.from_blocks`, and `to_cfg()` writes the widths the modules really have
(Torch-Pruning shrinks convs in place) so Darknet and OpenCV 4 read the result.

`forward(images)` returns the raw head tensors `[B, A*(5+C), H, W]` (one per `[yolo]` layer);
`decode(raw)` applies sigmoid, grid, stride and anchors with precomputed buffers, so ONNX
export (opset 13, legacy exporter) sees only static shapes.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.models.base import Detector
from compress.models.darknet_cfg import (
    CfgError,
    layer_refs,
    parse_cfg,
    split_net,
    where,
    where_key,
    write_cfg,
)

# Darknet activation name -> module factory. Add one line to support another activation.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky": lambda: nn.LeakyReLU(0.1),
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "logistic": nn.Sigmoid,
    "mish": nn.Mish,
    "swish": nn.SiLU,
}

Shape = tuple[int, int, int]  # (channels, height, width) of one layer's output


class EdgePadMaxPool(nn.Module):
    """Darknet's maxpool: total padding `size - 1` by default, `padding // 2` before and the
    rest after (so tiny's size=2 stride=1 pool pads one column right and one row below).
    Darknet fills the pad with -inf; repeating the edge row/column gives the same maxima
    (every window that touches the pad also holds the edge it repeats) and exports as
    Slice + Concat, which TensorRT 8.2 takes without a non-zero constant Pad."""

    def __init__(self, size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding
        self.before, self.after = padding // 2, padding - padding // 2
        symmetric = self.before == self.after and self.before <= size // 2
        self.pool = nn.MaxPool2d(size, stride, padding=self.before if symmetric else 0)
        self.edge_pad = not symmetric and padding > 0
        self.in_hw: tuple[int, int] | None = None  # set by YOLO for its input size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.edge_pad:
            # while tracing, shapes are tensors: use the size the model was built for
            h, w = self.in_hw if self.in_hw is not None and _tracing() else x.shape[2:]
            x = _edge_pad(x, self.before, self._after(w), dim=3)
            x = _edge_pad(x, self.before, self._after(h), dim=2)
        return self.pool(x)

    def _after(self, n: int) -> int:
        """The trailing pad, or 0 where no window reaches it (stride 2 on an even size):
        same output, and the exported graph is a bare MaxPool there."""
        reach = (n + self.before + self.after - self.size) // self.stride + 1
        return self.after if reach != (n + self.before - self.size) // self.stride + 1 else 0

    def extra_repr(self) -> str:
        return f"size={self.size}, stride={self.stride}, padding={self.padding} (darknet)"


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _edge_pad(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    parts = [x.narrow(dim, 0, 1)] * before + [x] + [x.narrow(dim, x.shape[dim] - 1, 1)] * after
    return torch.cat(parts, dim) if len(parts) > 1 else x


class Route(nn.Module):
    """Concatenate earlier outputs (channels); with `groups`, keep chunk `group_id` of it."""

    def __init__(self, layers: list[int], groups: int = 1, group_id: int = 0) -> None:
        super().__init__()
        self.layers, self.groups, self.group_id = layers, groups, group_id

    def forward(self, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        x = (
            torch.cat([outputs[i] for i in self.layers], 1)
            if len(self.layers) > 1
            else outputs[self.layers[0]]
        )
        if self.groups > 1:
            x = x.chunk(self.groups, 1)[self.group_id]
        return x

    def extra_repr(self) -> str:
        return f"layers={self.layers}" + (
            f", groups={self.groups}, group_id={self.group_id}" if self.groups > 1 else ""
        )


class Shortcut(nn.Module):
    """Residual add of the previous layer and layer `source` (linear activation)."""

    def __init__(self, source: int) -> None:
        super().__init__()
        self.source = source

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        return x + outputs[self.source]

    def extra_repr(self) -> str:
        return f"from={self.source}"


class YOLOLayer(nn.Module):
    """One detection head: passes its input through in `forward` (the raw output) and turns
    it into boxes and scores in `decode`, with grid and anchors precomputed as buffers."""

    def __init__(
        self, anchors: Sequence[Sequence[float]], num_classes: int, scale_xy: float = 1.0
    ) -> None:
        super().__init__()
        self.num_anchors = len(anchors)
        self.num_classes = num_classes
        self.scale_xy = float(scale_xy)
        # Buffers are kept below rank 4: `model.to(memory_format=torch.channels_last)`
        # converts every rank-4/5 tensor and fails on anything else of that rank.
        self.register_buffer(
            "anchor_wh", torch.tensor(anchors, dtype=torch.float32).view(-1, 2), persistent=False
        )
        self.grid_hw = (0, 0)
        self.stride_xy = (0.0, 0.0)

    def set_grid(self, grid_hw: tuple[int, int], input_hw: tuple[int, int]) -> None:
        ny, nx = grid_hw
        self.grid_hw = (ny, nx)
        self.stride_xy = (input_hw[1] / nx, input_hw[0] / ny)  # Darknet: (i + x) / lw * net_w
        like = {"dtype": self.anchor_wh.dtype, "device": self.anchor_wh.device}
        ys, xs = torch.meshgrid(torch.arange(ny, **like), torch.arange(nx, **like), indexing="ij")
        self.register_buffer("grid", torch.stack((xs, ys), -1), persistent=False)  # [ny, nx, 2]
        self.register_buffer("stride", torch.tensor(self.stride_xy, **like), persistent=False)

    @property
    def outputs_per_anchor(self) -> int:
        return 5 + self.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def split(self, raw: torch.Tensor) -> torch.Tensor:
        """[B, A*(5+C), H, W] -> [B, A, H, W, 5+C] (view + permute, no copy)."""
        ny, nx = self.grid_hw
        expected = (self.num_anchors * self.outputs_per_anchor, ny, nx)
        if not _tracing() and tuple(raw.shape[1:]) != expected:
            raise ValueError(
                f"yolo head got {tuple(raw.shape[1:])}, expected "
                f"{expected}: was the model run at another "
                "input size? call set_input_size() first"
            )
        return raw.view(raw.shape[0], self.num_anchors, self.outputs_per_anchor, ny, nx).permute(
            0, 1, 3, 4, 2
        )

    def decode_split(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split head [B, A, H, W, 5+C] -> boxes [B, A, H, W, 4] xyxy pixels, scores [B, A, H, W, C]."""
        s = self.scale_xy
        xy = p[..., :2].sigmoid()
        if s != 1.0:
            xy = xy * s - (s - 1.0) / 2
        xy = (xy + self.grid) * self.stride
        half_wh = p[..., 2:4].exp() * self.anchor_wh.view(-1, 1, 1, 2) * 0.5
        # explicit slice ends: an open end exports as INT64_MAX, which TensorRT 8.2 clamps
        scores = p[..., 4:5].sigmoid() * p[..., 5 : 5 + self.num_classes].sigmoid()
        return torch.cat((xy - half_wh, xy + half_wh), -1), scores

    def decode(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = self.decode_split(self.split(raw))
        b = raw.shape[0]
        return boxes.reshape(b, -1, 4), scores.reshape(b, -1, self.num_classes)

    def extra_repr(self) -> str:
        return f"anchors={self.anchor_wh.tolist()}, classes={self.num_classes}, grid={self.grid_hw}"


# ---- builders: block -> (module, output channels); one per Darknet layer type ----------------


def _int(
    block: dict[str, Any], key: str, default: int | None = None, index: int | None = None
) -> int:
    value = block.get(key, default)
    if value is None:
        raise CfgError(f"{where(block, index)}: missing required key {key!r}")
    if not isinstance(value, int | float) or not float(value).is_integer():
        raise CfgError(f"{where_key(block, key, index)}={value!r} is not an integer")
    return int(value)


def _numbers(block: dict[str, Any], key: str, default: Any, index: int) -> list[float]:
    """A number or comma list (anchors=, mask=) as floats; a word in it names key and line."""
    value = block.get(key, default)
    values = value if isinstance(value, list | range) else [value]
    if not all(isinstance(v, int | float) for v in values):
        raise CfgError(f"{where_key(block, key, index)}={value!r} is not a number list")
    return [float(v) for v in values]


def _build_conv(block: dict[str, Any], i: int, shapes: list[Shape]) -> tuple[nn.Module, int]:
    c_in = shapes[i - 1][0] if i else shapes[-1][0]
    filters, size = _int(block, "filters", index=i), _int(block, "size", 1, i)
    stride, groups = _int(block, "stride", 1, i), _int(block, "groups", 1, i)
    pad = size // 2 if _int(block, "pad", 0, i) else _int(block, "padding", 0, i)
    bn = bool(_int(block, "batch_normalize", 0, i))
    act = str(block.get("activation", "logistic"))
    if act not in ACTIVATIONS:
        raise CfgError(
            f"{where(block, i)}: activation {act!r} unsupported; known: {', '.join(ACTIVATIONS)}"
        )
    if c_in % groups or filters % groups:
        raise CfgError(
            f"{where(block, i)}: groups={groups} does not divide {c_in} inputs / {filters} filters"
        )
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(c_in, filters, size, stride, pad, groups=groups, bias=not bn))
    if bn:
        # eps 1e-5 added to the variance, as Darknet's GPU kernel (the weights were trained
        # there; its CPU path adds 1e-6 to the std instead). Momentum 0.03 rather than Darknet's 0.01: fine-tuning after pruning runs
        # few epochs and the running statistics must catch up within them.
        seq.add_module("bn", nn.BatchNorm2d(filters, eps=1e-5, momentum=0.03))
    seq.add_module("act", ACTIVATIONS[act]())
    return seq, filters


def _build_maxpool(block: dict[str, Any], i: int, shapes: list[Shape]) -> tuple[nn.Module, int]:
    size = _int(block, "size", 1, i)
    stride = _int(block, "stride", 1, i)
    padding = _int(block, "padding", size - 1, i)
    return EdgePadMaxPool(size, stride, padding), shapes[i - 1][0]


def _build_route(block: dict[str, Any], i: int, shapes: list[Shape]) -> tuple[nn.Module, int]:
    refs = _refs(block, i)
    groups, group_id = _int(block, "groups", 1, i), _int(block, "group_id", 0, i)
    channels = sum(shapes[r][0] for r in refs)
    if channels % groups or not 0 <= group_id < groups:
        raise CfgError(
            f"{where(block, i)}: groups={groups} group_id={group_id} do not split {channels} channels"
        )
    return Route(refs, groups, group_id), channels // groups


def _build_shortcut(block: dict[str, Any], i: int, shapes: list[Shape]) -> tuple[nn.Module, int]:
    (src,) = _refs(block, i)
    if str(block.get("activation", "linear")) != "linear":
        raise CfgError(f"{where(block, i)}: only activation=linear shortcuts are supported")
    if shapes[src] != shapes[i - 1]:
        raise CfgError(
            f"{where(block, i)}: adds layer {src} {shapes[src]} to layer {i - 1} {shapes[i - 1]}; "
            "shapes must match (prune shortcut-coupled channels with one shared mask)"
        )
    return Shortcut(src), shapes[i - 1][0]


def _build_upsample(block: dict[str, Any], i: int, shapes: list[Shape]) -> tuple[nn.Module, int]:
    return nn.Upsample(scale_factor=_int(block, "stride", 2, i), mode="nearest"), shapes[i - 1][0]


def _build_yolo(block: dict[str, Any], i: int, shapes: list[Shape]) -> tuple[nn.Module, int]:
    anchors = _numbers(block, "anchors", [], i)
    if not anchors or len(anchors) % 2:
        raise CfgError(
            f"{where(block, i)}: anchors must be w,h pairs, got {block.get('anchors')!r}"
        )
    pairs = [anchors[k : k + 2] for k in range(0, len(anchors), 2)]
    mask = [int(m) for m in _numbers(block, "mask", range(len(pairs)), i)]
    if any(not 0 <= m < len(pairs) for m in mask):
        raise CfgError(f"{where(block, i)}: mask {mask} indexes outside the {len(pairs)} anchors")
    classes = _int(block, "classes", index=i)
    layer = YOLOLayer([pairs[m] for m in mask], classes, _numbers(block, "scale_x_y", 1.0, i)[0])
    expected = len(mask) * (5 + classes)
    if shapes[i - 1][0] != expected:
        raise CfgError(
            f"{where(block, i)}: the layer before has {shapes[i - 1][0]} channels, a head with "
            f"{len(mask)} anchors x (5 + {classes} classes) needs {expected}"
        )
    return layer, expected


BUILDERS: dict[str, Callable[[dict[str, Any], int, list[Shape]], tuple[nn.Module, int]]] = {
    "convolutional": _build_conv,
    "maxpool": _build_maxpool,
    "route": _build_route,
    "shortcut": _build_shortcut,
    "upsample": _build_upsample,
    "yolo": _build_yolo,
}


def _refs(block: dict[str, Any], i: int) -> list[int]:
    key = "layers" if block["type"] == "route" else "from"
    if key not in block:
        raise CfgError(f"{where(block, i)}: missing {key}=")
    refs = layer_refs(block, i)
    bad = [r for r in refs if not 0 <= r < i]
    if bad:
        raise CfgError(
            f"{where(block, i)}: {key}={block[key]} points at layer(s) {bad}, outside 0..{i - 1}"
        )
    if block["type"] == "shortcut" and len(refs) != 1:
        raise CfgError(f"{where(block, i)}: shortcut takes exactly one from=, got {block[key]}")
    return refs


# Spatial size of each layer's output (h, w), from the cfg alone (Darknet's own formulas).
def _spatial(
    block: dict[str, Any], i: int, hw: list[tuple[int, int]], in_hw: tuple[int, int]
) -> tuple[int, int]:
    prev = hw[i - 1] if i else in_hw
    kind = block["type"]
    if kind == "convolutional":
        k, s = _int(block, "size", 1, i), _int(block, "stride", 1, i)
        p = k // 2 if _int(block, "pad", 0, i) else _int(block, "padding", 0, i)
        return tuple((d + 2 * p - k) // s + 1 for d in prev)
    if kind == "maxpool":
        k, s = _int(block, "size", 1, i), _int(block, "stride", 1, i)
        p = _int(block, "padding", k - 1, i)
        return tuple((d + p - k) // s + 1 for d in prev)
    if kind == "upsample":
        s = _int(block, "stride", 2, i)
        return (prev[0] * s, prev[1] * s)
    if kind == "route":
        sizes = {hw[r] for r in _refs(block, i)}
        if len(sizes) != 1:
            raise CfgError(
                f"{where(block, i)}: routes layers of different sizes {sorted(sizes)}; check the input size"
            )
        return sizes.pop()
    return prev


class YOLO(Detector):
    """A Darknet YOLO built from cfg blocks.

    Example:
        >>> det = YOLO.from_cfg("darknet/yolov3-tiny.cfg", 416, class_names)
        >>> load_weights(det, "darknet/yolov3-tiny.weights")
        >>> boxes, scores = det.decode(det(images))   # [B, N, 4], [B, N, 80]
    """

    family = "yolo"
    pad_value = 127  # Darknet letterboxes with 0.5 grey

    def __init__(
        self,
        net: dict[str, Any],
        blocks: list[dict[str, Any]],
        input_size: int | Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.net = dict(net)
        self.blocks = [b if isinstance(b, dict) else dict(b) for b in blocks]
        if input_size is None:
            input_size = (_int(net, "height", 416), _int(net, "width", 416))
        self.input_size = _hw(input_size)
        in_ch = _int(net, "channels", 3)
        shapes: list[Shape] = []
        hw: list[tuple[int, int]] = []
        modules = []
        for i, block in enumerate(self.blocks):
            if "type" not in block:
                raise CfgError(f"layer {i}: block has no 'type'")
            builder = BUILDERS.get(block["type"])
            if builder is None:
                raise CfgError(
                    f"{where(block, i)}: layer type [{block['type']}] unsupported; known: {', '.join(BUILDERS)}"
                )
            hw.append(_spatial(block, i, hw, self.input_size))
            if min(hw[-1]) < 1:
                raise CfgError(
                    f"{where(block, i)}: output size {hw[-1]} at input {self.input_size} is empty"
                )
            module, channels = builder(block, i, shapes if i else [(in_ch, *self.input_size)])
            shapes.append((channels, *hw[-1]))
            modules.append(module)
        self.module_list = nn.ModuleList(modules)
        self.yolo_indices = [i for i, m in enumerate(modules) if isinstance(m, YOLOLayer)]
        if not self.yolo_indices:
            raise CfgError("the cfg has no [yolo] layer")
        classes = {self.module_list[i].num_classes for i in self.yolo_indices}
        if len(classes) != 1:
            raise CfgError(f"[yolo] layers disagree on classes: {sorted(classes)}")
        nc = classes.pop()
        names = list(class_names) if class_names is not None else [f"class{k}" for k in range(nc)]
        if len(names) != nc:
            raise CfgError(
                f"{len(names)} class names given, the cfg's [yolo] layers have classes={nc}"
            )
        self.class_names = names
        # Only outputs that a later route/shortcut reads are kept during forward.
        self._kept = {
            r
            for i, b in enumerate(self.blocks)
            if b["type"] in ("route", "shortcut")
            for r in layer_refs(b, i)
        }
        self.weights_header: tuple[int, int, int, int] | None = None
        self.loss_cfg: dict[str, Any] = {}
        self._set_grids(hw)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_cfg(
        cls,
        cfg: str | os.PathLike,
        input_size: int | Sequence[int] | None = None,
        class_names: Sequence[str] | str | os.PathLike | None = None,
    ) -> YOLO:
        """Build from a cfg path or cfg text; `class_names` is a list or a `.names` file."""
        net, blocks = split_net(parse_cfg(cfg))
        if isinstance(class_names, (str, os.PathLike)):
            class_names = read_names(class_names)
        return cls(net, blocks, input_size, class_names)

    @classmethod
    def from_blocks(
        cls,
        net: dict[str, Any],
        blocks: list[dict[str, Any]],
        input_size: int | Sequence[int],
        class_names: Sequence[str],
    ) -> YOLO:
        return cls(net, blocks, input_size, class_names)

    # Settings that are not in the cfg text, so every rebuild must carry them over.
    CARRIED_SETTINGS = (
        "resize_mode",
        "pad_value",
        "default_score_threshold",
        "default_nms_iou",
        "weights_header",
        "loss_cfg",
    )

    def rebuilt(
        self,
        blocks: list[dict[str, Any]],
        class_names: Sequence[str] | None = None,
        net: dict[str, Any] | None = None,
    ) -> YOLO:
        """A new YOLO (fresh weights) from edited layer blocks, at this model's input size and
        with its settings (resize, pad, thresholds, weights header, loss settings)."""
        names = list(self.class_names if class_names is None else class_names)
        new = type(self).from_blocks(net or self.net, blocks, self.input_size, names)
        for attr in self.CARRIED_SETTINGS:
            setattr(new, attr, copy.deepcopy(getattr(self, attr)))
        return new

    def set_input_size(self, input_size: int | Sequence[int]) -> None:
        """Re-grid the heads for another input size (the weights do not change)."""
        self.input_size = _hw(input_size)
        hw: list[tuple[int, int]] = []
        for i, block in enumerate(self.blocks):
            hw.append(_spatial(block, i, hw, self.input_size))
        self._set_grids(hw)

    def _set_grids(self, hw: list[tuple[int, int]]) -> None:
        for i, module in enumerate(self.module_list):
            if isinstance(module, EdgePadMaxPool):
                module.in_hw = hw[i - 1] if i else self.input_size
        for i in self.yolo_indices:
            self.module_list[i].set_grid(hw[i], self.input_size)
        self._loss = None

    @property
    def yolo_layers(self) -> list[YOLOLayer]:
        return [self.module_list[i] for i in self.yolo_indices]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ---- cfg out --------------------------------------------------------------------------
    def sync_blocks(self) -> list[dict[str, Any]]:
        """Write the modules' real widths back into the blocks (after in-place pruning)."""
        for block, module in zip(self.blocks, self.module_list):
            if block["type"] == "convolutional":
                block["filters"] = module.conv.out_channels
            elif block["type"] == "yolo":
                block["classes"] = module.num_classes
        return self.blocks

    def to_cfg(self) -> str:
        """Darknet cfg text of the current structure (widths, classes, input size)."""
        self.sync_blocks()
        net = dict(
            self.net,
            type=self.net.get("type", "net"),
            height=self.input_size[0],
            width=self.input_size[1],
        )
        net = {"type": net.pop("type"), **net}
        return write_cfg([net, *self.blocks])

    # ---- Detector -------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor | None] = []
        raw: list[torch.Tensor] = []
        x = images
        for i, module in enumerate(self.module_list):
            if isinstance(module, Route):
                x = module(outputs)
            elif isinstance(module, Shortcut):
                x = module(x, outputs)
            else:
                x = module(x)
            if isinstance(module, YOLOLayer):
                raw.append(x)
            outputs.append(x if i in self._kept else None)
        return raw

    def decode(self, raw: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [layer.decode(p) for layer, p in zip(self.yolo_layers, raw)]
        return torch.cat([b for b, _ in parts], 1), torch.cat([s for _, s in parts], 1)

    def loss(
        self, raw: Sequence[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from compress.models.yolo_loss import YOLOLoss

        if self._loss is None:
            self._loss = YOLOLoss(self.yolo_layers, **self.loss_cfg)
        return self._loss(raw, targets)

    def init_head_bias(self, prior: float = 0.01) -> None:
        """Start objectness near `prior` (focal-loss paper trick) for training from scratch."""
        for i in self.yolo_indices:
            conv = self.module_list[i - 1].conv
            layer = self.module_list[i]
            if conv.bias is None:
                continue
            with torch.no_grad():
                b = conv.bias.view(layer.num_anchors, layer.outputs_per_anchor)
                b[:, 4] = -math.log((1 - prior) / prior)
                b[:, 5:] = (
                    -math.log((layer.num_classes - 0.99) / 0.99) if layer.num_classes > 1 else 0.0
                )


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


def read_names(path: str | os.PathLike) -> list[str]:
    """A Darknet `.names` file: one class name per line (blank lines ignored)."""
    path = Path(path)
    try:
        names = [
            line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    except FileNotFoundError:
        raise FileNotFoundError(f"class names file not found: {path}") from None
    if not names:
        raise ValueError(f"{path}: no class names in this file")
    return names


__all__ = [
    "ACTIVATIONS",
    "BUILDERS",
    "YOLO",
    "YOLOLayer",
    "Route",
    "Shortcut",
    "EdgePadMaxPool",
    "read_names",
]


# ---- the "yolo" family for compress.models.load (same three functions as compress.models.ssd) --


def build_from_config(model_cfg: dict[str, Any]) -> YOLO:
    """A YOLO from a recipe's `model:` section: cfg (+ weights, names, classes, input_size).

    Without `weights` the model starts from random weights (objectness bias at a 1% prior).
    With `classes` a strict subset of the names, the heads are sliced to those classes.
    """
    from compress.models.darknet_weights import load_weights
    from compress.models.load import asset_path
    from compress.models.person import specialize

    if "cfg" not in model_cfg:
        raise ValueError("model: a yolo model needs `cfg:` (a Darknet .cfg path)")
    names: Sequence[str] | None = model_cfg.get("class_names")
    if model_cfg.get("names"):
        names = read_names(asset_path(model_cfg["names"], "names"))
    det = YOLO.from_cfg(asset_path(model_cfg["cfg"], "cfg"), model_cfg.get("input_size"), names)
    if model_cfg.get("weights"):
        load_weights(det, asset_path(model_cfg["weights"], "weights"))
    else:
        det.init_head_bias()
    if model_cfg.get("classes"):
        det = specialize(det, list(model_cfg["classes"]))
    return det


def save(detector: YOLO, folder: str | os.PathLike) -> dict[str, Any]:
    """Write `model.cfg` + `model.weights` into `folder`; returns their model.json entries."""
    from compress.io import atomic_write_text
    from compress.models.darknet_weights import save_weights

    folder = Path(folder)
    atomic_write_text(folder / "model.cfg", detector.to_cfg())
    save_weights(detector, folder / "model.weights")
    return {"cfg": "model.cfg", "weights": "model.weights"}


def load_dir(folder: str | os.PathLike, meta: dict[str, Any]) -> YOLO:
    """Inverse of `save`: the cfg + weights named in model.json (paths relative to folder)."""
    from compress.models.darknet_weights import load_weights

    folder = Path(folder)
    det = YOLO.from_cfg(folder / meta["cfg"], meta.get("input_size"), meta.get("classes"))
    load_weights(det, folder / meta["weights"])
    return det
