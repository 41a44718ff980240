"""Box-aware transforms: torchvision `transforms.v2` augmentation, then letterbox or stretch.

The resize records `ratio` (rw, rh) and `pad` (px, py) in the target so that
`x_orig = (x_input - px) / rw`; the evaluator uses exactly that to put boxes back on the
original image. Resizing is plain bilinear without antialiasing, the way `cv2.resize` (and so
the Nano runtime) does it, so host accuracy is measured on the pixels the device will see.
For training samples augmentation runs after the resize, so ratio/pad describe the resize
and the augmentation moves the boxes on the input-size image.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

Sample = tuple[torch.Tensor, dict[str, Any]]

AUGMENT_KEYS = {"hflip", "color_jitter", "scale", "translate", "degrees", "min_box_size"}


def as_hw(input_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return input_size, input_size
    h, w = (int(v) for v in input_size)
    return h, w


class Letterbox:
    """Keep the aspect ratio, scale to fit, pad the rest (centered) with `pad_value`."""

    def __init__(self, input_size: int | tuple[int, int], pad_value: int = 114) -> None:
        self.size = as_hw(input_size)
        self.pad_value = pad_value

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        (H, W), (h, w) = self.size, image.shape[-2:]
        r = min(H / h, W / w)
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        px, py = (W - nw) // 2, (H - nh) // 2
        image, boxes = _resize(image, target["boxes"], nh, nw)
        border = [px, py, W - nw - px, H - nh - py]
        image = F.pad(image, border, fill=self.pad_value)
        boxes = F.pad(boxes, border)
        return image, {
            **target,
            "boxes": boxes,
            "ratio": (nw / w, nh / h),
            "pad": (float(px), float(py)),
        }


class Stretch:
    """Resize both sides to the input size: no padding, aspect ratio not kept."""

    def __init__(self, input_size: int | tuple[int, int], pad_value: int = 114) -> None:
        self.size = as_hw(input_size)
        self.pad_value = pad_value

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        (H, W), (h, w) = self.size, image.shape[-2:]
        image, boxes = _resize(image, target["boxes"], H, W)
        return image, {**target, "boxes": boxes, "ratio": (W / w, H / h), "pad": (0.0, 0.0)}


RESIZERS = {"letterbox": Letterbox, "stretch": Stretch}


def _resize(
    image: torch.Tensor, boxes: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    return F.resize(image, [h, w], antialias=False), F.resize(boxes, [h, w])


def build_augment(augment: dict[str, Any] | None, pad_value: int = 114) -> v2.Transform | None:
    """The recipe's `train.augment` mapping as a v2 pipeline (boxes follow every step)."""
    if not augment:
        return None
    unknown = set(augment) - AUGMENT_KEYS
    if unknown:
        raise ValueError(f"unknown augment keys {sorted(unknown)}; known: {sorted(AUGMENT_KEYS)}")
    steps: list[v2.Transform] = []
    if augment.get("hflip"):
        steps.append(v2.RandomHorizontalFlip(p=float(augment["hflip"])))
    if augment.get("color_jitter"):
        s = float(augment["color_jitter"])
        steps.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4)))
    scale, translate, degrees = (
        augment.get("scale"),
        augment.get("translate"),
        augment.get("degrees"),
    )
    if scale or translate or degrees:
        steps.append(
            v2.RandomAffine(
                degrees=float(degrees or 0),
                translate=(float(translate), float(translate)) if translate else None,
                scale=tuple(scale) if scale else None,
                interpolation=v2.InterpolationMode.BILINEAR,
                fill=pad_value,
            )
        )
    # Boxes pushed out of the frame or squeezed to slivers by the affine step are dropped
    # together with their labels.
    steps.append(v2.ClampBoundingBoxes())
    steps.append(v2.SanitizeBoundingBoxes(min_size=float(augment.get("min_box_size", 2.0))))
    return v2.Compose(steps)


class DetectionTransform:
    """(uint8 image [3,h,w], target with boxes xyxy original pixels) -> (float image [3,H,W]
    in [0,1], target with boxes in input pixels, ratio, pad)."""

    def __init__(
        self,
        input_size: int | tuple[int, int],
        resize: str = "letterbox",
        train: bool = False,
        augment: dict[str, Any] | None = None,
        pad_value: int = 114,
    ) -> None:
        if resize not in RESIZERS:
            raise ValueError(f"unknown resize {resize!r}; known: {', '.join(RESIZERS)}")
        self.input_size = as_hw(input_size)
        self.resize = resize
        self.pad_value = pad_value
        self.train = train
        self.augment = build_augment(augment, pad_value) if train else None
        self.resizer = RESIZERS[resize](self.input_size, pad_value)

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> Sample:
        h, w = image.shape[-2:]
        image = tv_tensors.Image(image)
        target = {
            **target,
            "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w)),
        }
        # Resize first: augmenting the input-size image costs the same whatever the photo's
        # resolution (colour jitter on a full-size photo took ~1 s per image on 2 cores).
        image, target = self.resizer(image, target)
        if self.augment is not None:
            h, w = image.shape[-2:]
            target["boxes"] = tv_tensors.BoundingBoxes(
                target["boxes"], format="XYXY", canvas_size=(h, w)
            )
            image, target = self.augment(image, target)
        image = F.to_dtype(image, torch.float32, scale=True)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor).float()
        return image.as_subclass(torch.Tensor), target

    def __repr__(self) -> str:
        return f"DetectionTransform(input_size={self.input_size}, resize={self.resize!r}, train={self.train})"


def build_transform(
    input_size: int | tuple[int, int],
    resize: str = "letterbox",
    train: bool = False,
    augment: dict[str, Any] | None = None,
    pad_value: int = 114,
) -> DetectionTransform:
    return DetectionTransform(input_size, resize, train, augment, pad_value)
