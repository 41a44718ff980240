"""SSD person detectors behind `Detector`: torchvision's SSD300-VGG16 and SSDLite320-MobileNetV3,
and the TF Object Detection API's SSDLite-MobileNetV2 (imported by `tf_import`).

The traced part is `SSDCore`: images in [0, 1] -> normalize -> backbone -> head -> raw
`(cls_logits [B, N, K+1], bbox_regression [B, N, 4])`, K classes plus background in column 0.
Torch-Pruning prunes it (keep the last conv of each head) and ONNX export traces it; torchvision's
`SSD.forward` with its transform and NMS is never used. `decode` applies the anchors (a buffer
computed for the fixed input size) and the (10, 10, 5, 5) box coder, all static tensor ops.

A pruned SSD is saved as data, not a pickle: a channel spec (every conv's in/out/groups, every
BatchNorm's width, any other reshaped parameter such as SSD300's `scale_weight`) that is applied
to the variant's builder, plus a state_dict loaded with `weights_only=True`.

Example:
    >>> det = build_from_config({"family": "ssd", "variant": "ssdlite320_mobilenet_v3_large",
    ...                          "classes": ["person"], "input_size": 320, "weights": None})
    >>> boxes, scores = det.decode(det(torch.rand(1, 3, 320, 320)))  # [1,N,4], [1,N,1]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FrozenBatchNorm2d, box_iou

from compress.io import atomic_torch_save, read_json, write_json
from compress.models.base import Detector
from compress.train.distributed import global_count

SPEC_FILE = "ssd_spec.json"
STATE_FILE = "model.pt"
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
NEG_TO_POS = 3  # hard negative mining ratio (torchvision and TF's SSD configs)


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """How to build one SSD: backbone + head for `columns` classes (background included)."""

    build: Callable[[int, tuple[int, int]], tuple[nn.Module, nn.Module]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    score: str  # "softmax" (torchvision) or "sigmoid" (TF OD API)
    nms_iou: float
    # torchvision clips boxes to the image before NMS; TF's graph runs NMS on unclipped boxes
    # and clips afterwards (IoUs near the threshold then differ), so its variant does not clip.
    clip_boxes: bool = True
    coco_weights: str | None = None  # torchvision weights enum for COCO-91


def _tv_anchor_generator(name: str) -> DefaultBoxGenerator:
    if name == "ssd300_vgg16":  # torchvision's settings (ssd.py)
        return DefaultBoxGenerator(
            [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
            scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
            steps=[8, 16, 32, 64, 100, 300],
        )
    return DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)


def _feature_shapes(backbone: nn.Module, input_size: tuple[int, int]) -> list[torch.Size]:
    """Feature map shapes from a forward on the meta device: no memory, no FLOPs."""
    params = {k: v.to("meta") for k, v in backbone.state_dict(keep_vars=True).items()}
    was_training = backbone.training
    backbone.eval()  # BatchNorm refuses one value per channel in training mode
    try:
        with torch.no_grad():
            feats = torch.func.functional_call(
                backbone, params, (torch.empty(1, 3, *input_size, device="meta"),)
            )
    finally:
        backbone.train(was_training)
    feats = list(feats.values()) if isinstance(feats, dict) else list(feats)
    return [f.shape for f in feats]


def _build_ssd300(columns: int, input_size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    from torchvision.models import vgg16
    from torchvision.models.detection.ssd import SSDHead, _vgg_extractor

    backbone = _vgg_extractor(vgg16(weights=None), False, 5)
    shapes = _feature_shapes(backbone, input_size)
    anchors = _tv_anchor_generator("ssd300_vgg16").num_anchors_per_location()
    return backbone, SSDHead([s[1] for s in shapes], anchors, columns)


def _build_ssdlite320(columns: int, input_size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor

    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    # reduced_tail=False: the layout of torchvision's COCO weights (trained from an ImageNet
    # backbone); torchvision's builder would pick the reduced tail when weights_backbone=None.
    backbone = _mobilenet_extractor(
        mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=False), 6, norm
    )
    shapes = _feature_shapes(backbone, input_size)
    anchors = _tv_anchor_generator("ssdlite320_mobilenet_v3_large").num_anchors_per_location()
    return backbone, SSDLiteHead([s[1] for s in shapes], anchors, columns, norm)


def _build_tf_mobilenet_v2(
    columns: int, input_size: tuple[int, int]
) -> tuple[nn.Module, nn.Module]:
    from torchvision.models.detection.ssdlite import SSDLiteHead

    from compress.models.ssd_tf_mobilenet import BN_EPS, MobileNetV2SSDLiteExtractor

    backbone = MobileNetV2SSDLiteExtractor(input_size)
    norm = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=0.03)
    return backbone, SSDLiteHead(backbone.out_channels(), [3, 6, 6, 6, 6, 6], columns, norm)


VARIANTS: dict[str, Variant] = {
    "ssd300_vgg16": Variant(
        _build_ssd300,
        (0.48235, 0.45882, 0.40784),
        (1 / 255,) * 3,
        300,
        "softmax",
        0.45,
        coco_weights="SSD300_VGG16_Weights",
    ),
    "ssdlite320_mobilenet_v3_large": Variant(
        _build_ssdlite320,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        320,
        "softmax",
        0.55,
        coco_weights="SSDLite320_MobileNet_V3_Large_Weights",
    ),
    # TF1 OD API SSDLite-MobileNetV2: [-1, 1] input, sigmoid scores, NMS IoU 0.6 in its graph
    "ssdlite_mobilenet_v2_tf": Variant(
        _build_tf_mobilenet_v2,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        300,
        "sigmoid",
        0.6,
        clip_boxes=False,
    ),
}


# --------------------------------------------------------------------------- the model


class SSDCore(nn.Module):
    """images [B,3,H,W] in [0,1] -> (cls_logits [B,N,K+1], bbox_regression [B,N,4])."""

    def __init__(
        self, backbone: nn.Module, head: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone((images - self.mean) / self.std)
        out = self.head(list(feats.values()) if isinstance(feats, dict) else list(feats))
        return out["cls_logits"], out["bbox_regression"]


# narrow() rather than [..., 1:]: the latter exports an INT64-max Slice end that TensorRT clamps
def _score_softmax(cls_logits: torch.Tensor) -> torch.Tensor:
    return F.softmax(cls_logits, dim=-1).narrow(-1, 1, cls_logits.shape[-1] - 1)


def _score_sigmoid(cls_logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(cls_logits).narrow(-1, 1, cls_logits.shape[-1] - 1)


def _cls_loss_softmax(cls_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    k = cls_logits.size(-1)
    return F.cross_entropy(cls_logits.reshape(-1, k), targets.reshape(-1), reduction="none").view(
        targets.shape
    )


def _cls_loss_sigmoid(cls_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # TF's weighted sigmoid loss: one-hot over all K+1 columns, summed per anchor
    onehot = F.one_hot(targets, cls_logits.size(-1)).to(cls_logits.dtype)
    return F.binary_cross_entropy_with_logits(cls_logits, onehot, reduction="none").sum(-1)


SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": _score_softmax,
    "sigmoid": _score_sigmoid,
}
CLS_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "softmax": _cls_loss_softmax,
    "sigmoid": _cls_loss_sigmoid,
}


class SSDDetector(Detector):
    family = "ssd"
    resize_mode = "stretch"  # torchvision and TF SSDs resize without letterbox
    pad_value = 0
    default_score_threshold = 0.3

    def __init__(
        self,
        core: SSDCore,
        variant: str,
        class_names: list[str],
        input_size: tuple[int, int],
        anchors: torch.Tensor,
        score: str = "softmax",
        nms_iou: float = 0.45,
        anchor_settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score={score!r}; known: {', '.join(SCORES)}")
        self.core = core
        self.variant = variant
        self.class_names = list(class_names)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.score = score
        self.default_nms_iou = nms_iou
        self.anchor_settings = anchor_settings
        self.register_buffer("anchors", anchors, persistent=False)
        h, w = self.input_size
        self.register_buffer(
            "box_limit", torch.tensor([w, h, w, h], dtype=torch.float32), persistent=False
        )
        self.box_coder = det_utils.BoxCoder(weights=BOX_WEIGHTS)
        self.matcher = det_utils.SSDMatcher(0.5)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.core(images)

    def decode(self, raw: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cls_logits, reg = raw
        a = self.anchors
        wa, ha = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cxa, cya = a[:, 0] + 0.5 * wa, a[:, 1] + 0.5 * ha
        wx, wy, ww, wh = BOX_WEIGHTS
        clip = self.box_coder.bbox_xform_clip
        cx = reg[..., 0] / wx * wa + cxa
        cy = reg[..., 1] / wy * ha + cya
        w = torch.exp(torch.clamp(reg[..., 2] / ww, max=clip)) * wa
        h = torch.exp(torch.clamp(reg[..., 3] / wh, max=clip)) * ha
        boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        if VARIANTS[self.variant].clip_boxes:
            boxes = torch.minimum(boxes.clamp(min=0), self.box_limit)
        return boxes, SCORES[self.score](cls_logits)

    def loss(
        self, raw: tuple[torch.Tensor, torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """torchvision's SSD loss: IoU-0.5 matching (SSDMatcher), smooth-L1 on matched anchors,
        classification with 3:1 hard negative mining, both over the number of matches."""
        cls_logits, reg = raw
        anchors = self.anchors
        bbox_loss, cls_targets, num_fg = [], [], 0
        for t, reg_i in zip(targets, reg):
            boxes = t["boxes"].to(reg.device, reg.dtype)
            if boxes.numel() == 0:
                matched = torch.full((anchors.size(0),), -1, dtype=torch.int64, device=reg.device)
            else:
                matched = self.matcher(box_iou(boxes, anchors))
            fg = torch.where(matched >= 0)[0]
            fg_gt = matched[fg]
            num_fg += fg.numel()
            target_reg = self.box_coder.encode_single(boxes[fg_gt], anchors[fg])
            bbox_loss.append(F.smooth_l1_loss(reg_i[fg], target_reg, reduction="sum"))
            gt = torch.zeros(anchors.size(0), dtype=torch.int64, device=reg.device)
            gt[fg] = t["labels"].to(reg.device)[fg_gt] + 1  # column 0 is background
            cls_targets.append(gt)
        cls_targets = torch.stack(cls_targets)
        cls_loss = CLS_LOSSES[self.score](cls_logits, cls_targets)
        foreground = cls_targets > 0
        num_negative = NEG_TO_POS * foreground.sum(1, keepdim=True)
        negative_loss = cls_loss.clone().detach()
        negative_loss[foreground] = -float("inf")
        _, idx = negative_loss.sort(1, descending=True)
        background = idx.sort(1)[1] < num_negative
        n = max(1, num_fg)
        reduced = global_count(torch.tensor([float(num_fg)], device=reg.device))
        if reduced is not None:  # DDP: over the global batch's matches, as one process does
            n = max(1.0, float(reduced[0])) / reduced[1]
        box_term = torch.stack(bbox_loss).sum() / n
        cls_term = (cls_loss[foreground].sum() + cls_loss[background].sum()) / n
        total = box_term + cls_term
        return total, {
            "loss": float(total.detach()),
            "bbox": float(box_term.detach()),
            "cls": float(cls_term.detach()),
        }

    def pruning_kwargs(self) -> dict[str, Any]:
        """Torch-Pruning settings for this SSD (pass with `example_inputs` of the input size):
        the last conv of every head stays whole (its width is anchors x columns or anchors x 4),
        and SSD300's L2-norm `scale_weight` is an unwrapped parameter pruned with conv4_3."""
        head = self.core.head
        ignored = _class_head_convs(head) + [
            b if isinstance(b, nn.Conv2d) else b[-1] for b in head.regression_head.module_list
        ]
        scale = getattr(self.core.backbone, "scale_weight", None)
        return {
            "ignored_layers": ignored,
            "unwrapped_parameters": [(scale, 0)] if scale is not None else None,
        }

    def bundle_meta(self) -> dict[str, Any]:
        meta = super().bundle_meta()
        meta.update({"variant": self.variant, "score_activation": self.score})
        return meta


# --------------------------------------------------------------------------- anchors


def make_anchors(
    variant: str,
    core: SSDCore,
    input_size: tuple[int, int],
    anchor_settings: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Anchors [N, 4] xyxy in input pixels, in the head's output order."""
    shapes = _feature_shapes(core.backbone, input_size)
    if variant == "ssdlite_mobilenet_v2_tf":
        from compress.models.ssd_tf_mobilenet import grid_anchors, ssd_anchor_settings

        if anchor_settings is None:
            scales, ratios = ssd_anchor_settings()
            anchor_settings = {"scales": scales, "ratios": ratios}
        return grid_anchors(
            [s[-2:] for s in shapes],
            anchor_settings["scales"],
            anchor_settings["ratios"],
            input_size,
        )
    h, w = input_size
    # the generator only reads shapes, dtype and device of its inputs
    images = ImageList(torch.zeros(1, 3, h, w), [(h, w)])
    feats = [torch.zeros(1, 0, *s[-2:]) for s in shapes]
    return _tv_anchor_generator(variant)(images, feats)[0]


# --------------------------------------------------------------------------- channel spec


def channel_spec(module: nn.Module) -> dict[str, Any]:
    """Every conv's [in, out, groups], every BatchNorm's width, and the shape of every other
    parameter (e.g. SSD300's L2-norm `scale_weight`): what a pruned model needs to rebuild."""
    convs, norms, params = {}, {}, {}
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            convs[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.BatchNorm2d):
            norms[name] = m.num_features
        else:
            for pname, p in m.named_parameters(recurse=False):
                params[f"{name}.{pname}" if name else pname] = list(p.shape)
    return {"convs": convs, "norms": norms, "params": params}


def _set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def apply_channel_spec(
    module: nn.Module, spec: dict[str, Any], source: str = "channel spec"
) -> nn.Module:
    """Resize the convs, BatchNorms and parameters of a freshly built `module` to `spec`."""
    for name, (cin, cout, groups) in spec.get("convs", {}).items():
        m = _get(module, name, nn.Conv2d, source)
        if (m.in_channels, m.out_channels, m.groups) != (cin, cout, groups):
            new = nn.Conv2d(
                cin,
                cout,
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                groups,
                m.bias is not None,
                m.padding_mode,
            )
            _set_child(module, name, new)
    for name, width in spec.get("norms", {}).items():
        m = _get(module, name, nn.BatchNorm2d, source)
        if m.num_features != width:
            _set_child(
                module,
                name,
                nn.BatchNorm2d(width, m.eps, m.momentum, m.affine, m.track_running_stats),
            )
    for name, shape in spec.get("params", {}).items():
        owner, _, pname = name.rpartition(".")
        target = module.get_submodule(owner) if owner else module
        p = getattr(target, pname, None)
        if not isinstance(p, nn.Parameter):
            raise ValueError(f"{source}: no parameter {name!r} in this model")
        if list(p.shape) != list(shape):
            setattr(target, pname, nn.Parameter(torch.empty(shape)))
    return module


def _get(module: nn.Module, name: str, kind: type, source: str) -> nn.Module:
    try:
        m = module.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{source}: no layer {name!r} in this model (wrong variant?)") from None
    if not isinstance(m, kind):
        raise ValueError(
            f"{source}: layer {name!r} is a {type(m).__name__}, expected {kind.__name__}"
        )
    return m


def replace_frozen_bn(module: nn.Module) -> nn.Module:
    """FrozenBatchNorm2d -> BatchNorm2d with the same statistics, so the model trains and prunes."""
    for name, m in list(module.named_modules()):
        if isinstance(m, FrozenBatchNorm2d):
            bn = nn.BatchNorm2d(m.weight.numel(), eps=m.eps)
            with torch.no_grad():
                bn.weight.copy_(m.weight)
                bn.bias.copy_(m.bias)
                bn.running_mean.copy_(m.running_mean)
                bn.running_var.copy_(m.running_var)
            _set_child(module, name, bn)
    return module


# --------------------------------------------------------------------------- classes


def _class_head_convs(head: nn.Module) -> list[nn.Conv2d]:
    """The final classification conv of each feature level (SSDHead or SSDLiteHead)."""
    out = []
    for block in head.classification_head.module_list:
        out.append(block if isinstance(block, nn.Conv2d) else block[-1])
    return out


def keep_class_columns(core: SSDCore, keep: list[int]) -> SSDCore:
    """Slice the classification convs to the columns in `keep` (0 = background first): the
    kept classes' logits stay exactly the same, the head shrinks."""
    head = core.head.classification_head
    cols = head.num_columns
    for i, conv in enumerate(_class_head_convs(core.head)):
        anchors = conv.out_channels // cols
        rows = torch.tensor([a * cols + k for a in range(anchors) for k in keep])
        new = nn.Conv2d(
            conv.in_channels,
            len(rows),
            conv.kernel_size,
            conv.stride,
            conv.padding,
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            new.weight.copy_(conv.weight[rows])
            if conv.bias is not None:
                new.bias.copy_(conv.bias[rows])
        block = head.module_list[i]
        if isinstance(block, nn.Conv2d):
            head.module_list[i] = new
        else:
            block[-1] = new
    head.num_columns = len(keep)
    return core


def coco_columns(class_names: list[str]) -> list[int]:
    """Columns of torchvision's COCO-91 heads for `class_names` (background first)."""
    from torchvision.models.detection.ssd import SSD300_VGG16_Weights

    categories = SSD300_VGG16_Weights.COCO_V1.meta["categories"]
    missing = [c for c in class_names if c not in categories]
    if missing:
        raise ValueError(
            f"classes {missing} are not COCO categories; known: {[c for c in categories if c not in ('__background__', 'N/A')]}"
        )
    return [0] + [categories.index(c) for c in class_names]


# --------------------------------------------------------------------------- building


def _input_size(value: Any, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))


def build(
    variant: str,
    class_names: list[str],
    input_size: tuple[int, int] | int | None = None,
    columns: int | None = None,
    spec: dict[str, Any] | None = None,
    anchor_settings: dict[str, Any] | None = None,
) -> SSDDetector:
    """An SSD with random weights (or the layout of `spec`), `columns` head columns
    (default: background + classes)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown SSD variant {variant!r}; known: {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    size = _input_size(input_size, v.input_size)
    backbone, head = v.build(columns or 1 + len(class_names), size)
    core = replace_frozen_bn(SSDCore(backbone, head, v.mean, v.std))
    if spec is not None:
        apply_channel_spec(core, spec["channels"], spec.get("_source", "channel spec"))
        core.head.classification_head.num_columns = int(spec.get("columns", 1 + len(class_names)))
    anchors = make_anchors(variant, core, size, anchor_settings)
    return SSDDetector(
        core, variant, class_names, size, anchors, v.score, v.nms_iou, anchor_settings
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable state_dict ({exc})") from None
    if isinstance(state, dict) and isinstance(
        state.get("model"), dict
    ):  # torchvision reference checkpoints
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    return state


def _torchvision_state_dict(variant: str, weights: str) -> dict[str, torch.Tensor]:
    import torchvision.models.detection as tvd

    v = VARIANTS[variant]
    if v.coco_weights is None:
        raise ValueError(f"variant {variant!r} has no torchvision weights; give a file path")
    enum = getattr(tvd, v.coco_weights)
    name = "COCO_V1" if weights.upper() == "DEFAULT" else weights
    try:
        return enum[name].get_state_dict(progress=True, check_hash=True)
    except KeyError:
        raise ValueError(
            f"{v.coco_weights} has no {weights!r}; known: {', '.join(enum.__members__)}"
        ) from None
    except OSError as exc:
        raise OSError(
            f"could not download torchvision's {v.coco_weights}.{name} ({exc}); offline, download it where "
            f"you have internet and set `weights:` to the .pth file"
        ) from None


def _is_torchvision_weights_name(variant: str, weights: Any) -> bool:
    """DEFAULT or a member of the variant's torchvision weights enum (COCO_V1), not a path."""
    import torchvision.models.detection as tvd

    if not isinstance(weights, str):
        return False
    enum_name = VARIANTS[variant].coco_weights if variant in VARIANTS else None
    members = getattr(tvd, enum_name).__members__ if enum_name else {}
    return weights.upper() == "DEFAULT" or weights in members


def _head_columns(state: dict[str, torch.Tensor], core: SSDCore) -> int:
    convs = _class_head_convs(core.head)
    name = next(n for n, m in core.named_modules() if m is convs[0])
    rows = state[f"{name}.weight"].shape[0]
    anchors = convs[0].out_channels // core.head.classification_head.num_columns
    return rows // anchors


def build_from_config(model_cfg: dict[str, Any]) -> SSDDetector:
    """The recipe's `model:` section: variant, classes, input_size, weights (a file path, a
    torchvision weights name such as DEFAULT / COCO_V1, or null for random), or `tf_graph`
    (a TF1 OD API frozen graph, imported by `compress.models.tf_import`)."""
    from compress.models.load import asset_path

    variant = model_cfg.get("variant", "ssdlite320_mobilenet_v3_large")
    classes = list(model_cfg.get("classes") or ["person"])
    size = model_cfg.get("input_size")
    if model_cfg.get("tf_graph"):
        from compress.models.tf_import import import_frozen_graph

        det = import_frozen_graph(
            asset_path(model_cfg["tf_graph"], "TF frozen graph"), class_names=classes
        )
        if size is not None and _input_size(size, 0) != det.input_size:
            raise ValueError(
                f"model.input_size={size}: the imported TF graph is fixed at {list(det.input_size)}"
            )
        return det
    weights = model_cfg.get("weights")
    if not weights:
        return build(variant, classes, size)
    if _is_torchvision_weights_name(variant, weights):
        state = _torchvision_state_dict(variant, weights)
        source = f"torchvision {weights}"
    else:
        path = asset_path(weights, "SSD weights")
        state, source = _read_state_dict(path), str(path)
    probe = build(variant, classes, size)
    columns = _head_columns(state, probe.core)
    det = probe if columns == 1 + len(classes) else build(variant, classes, size, columns=columns)
    try:
        det.core.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"{source}: weights do not fit {variant} ({str(exc).splitlines()[0]})"
        ) from None
    if columns == 91 and len(classes) + 1 != 91:  # COCO weights: keep background + our classes
        keep_class_columns(det.core, coco_columns(classes))
    elif columns != 1 + len(classes):
        raise ValueError(
            f"{source}: head has {columns} columns; expected 91 (COCO) or {1 + len(classes)} for {classes}"
        )
    return det


# --------------------------------------------------------------------------- folders


def save(detector: SSDDetector, folder: str | os.PathLike) -> dict[str, Any]:
    """Write the channel spec and the state_dict; returns model.json's entries."""
    folder = Path(folder)
    spec = {
        "variant": detector.variant,
        "input_size": list(detector.input_size),
        "classes": list(detector.class_names),
        "columns": detector.core.head.classification_head.num_columns,
        "score": detector.score,
        "anchor_settings": detector.anchor_settings,
        "channels": channel_spec(detector.core),
    }
    write_json(folder / SPEC_FILE, spec)
    atomic_torch_save(detector.core.state_dict(), folder / STATE_FILE)
    return {"variant": detector.variant, "spec": SPEC_FILE, "state_dict": STATE_FILE}


def load_dir(folder: str | os.PathLike, meta: dict[str, Any]) -> SSDDetector:
    """The SSD saved by `save`: the builder reshaped by the spec, then the state_dict."""
    folder = Path(folder)
    spec_path = folder / meta.get("spec", SPEC_FILE)
    spec = read_json(spec_path)
    for key in ("variant", "input_size", "classes", "channels"):
        if key not in spec:
            raise ValueError(f"{spec_path}: missing {key!r}")
    spec["_source"] = str(spec_path)
    det = build(
        spec["variant"],
        spec["classes"],
        spec["input_size"],
        spec=spec,
        anchor_settings=spec.get("anchor_settings"),
    )
    if spec.get("score"):
        det.score = spec["score"]
    state_path = folder / meta.get("state_dict", STATE_FILE)
    try:
        det.core.load_state_dict(_read_state_dict(state_path))
    except RuntimeError as exc:
        raise ValueError(
            f"{state_path}: does not fit {spec_path} ({str(exc).splitlines()[0]})"
        ) from None
    return det
