"""A tiny real detector and a synthetic person dataset for the trainer and recovery tests.

TinyDetector: conv-BN-leaky backbone, one stride-4 head predicting per cell an objectness
logit and a box (centre offset + log size), a loss (BCE + L1), and a decode -> boxes + scores,
so it trains, evaluates and prunes like a real Detector, in milliseconds.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from compress.models.base import Detector

SIZE = 32
STRIDE = 4


def cbl(c_in: int, c_out: int, bn: bool) -> nn.Sequential:
    layers = {"conv": nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn)}
    if bn:
        layers["bn"] = nn.BatchNorm2d(c_out)
    layers["act"] = nn.LeakyReLU(0.1)
    return nn.Sequential(dict_to_ordered(layers))


def dict_to_ordered(d: dict) -> dict:
    from collections import OrderedDict

    return OrderedDict(d)


class TinyDetector(Detector):
    family = "tiny"

    def __init__(self, width: int = 8, bn: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction  # "sum": loss x batch size, as YOLO's loss does
        self.class_names = ["person"]
        self.input_size = (SIZE, SIZE)
        self.resize_mode = "stretch"
        self.backbone = nn.Sequential(
            cbl(3, width, bn), nn.MaxPool2d(2), cbl(width, width * 2, bn), nn.MaxPool2d(2)
        )
        self.neck = cbl(width * 2, width * 2, bn)
        self.head = nn.Conv2d(width * 2, 5, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.backbone(images)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(images))

    def loss(self, raw: torch.Tensor, targets: list[dict]) -> tuple[torch.Tensor, dict[str, float]]:
        raw = raw.float()
        b, _, gh, gw = raw.shape
        obj_t = torch.zeros(b, gh, gw, device=raw.device)
        box_loss = raw.new_zeros(())
        n = 0
        for i, t in enumerate(targets):
            for box in t["boxes"]:
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                gx, gy = int(cx // STRIDE), int(cy // STRIDE)
                gx, gy = min(gx, gw - 1), min(gy, gh - 1)
                obj_t[i, gy, gx] = 1.0
                want = torch.stack(
                    [
                        cx / STRIDE - gx,
                        cy / STRIDE - gy,
                        torch.log((box[2] - box[0]) / STRIDE),
                        torch.log((box[3] - box[1]) / STRIDE),
                    ]
                )
                got = torch.cat([raw[i, 1:3, gy, gx].sigmoid(), raw[i, 3:5, gy, gx]])
                box_loss = box_loss + F.l1_loss(got, want, reduction="sum")
                n += 1
        obj_loss = F.binary_cross_entropy_with_logits(raw[:, 0], obj_t)
        box_loss = box_loss / max(n, 1)
        scale = b if self.reduction == "sum" else 1
        return (obj_loss + box_loss) * scale, {
            "obj": float(obj_loss.detach()),
            "box": float(box_loss.detach()),
        }

    def decode(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = raw.float()
        b, _, gh, gw = raw.shape
        gy, gx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        cx = (gx.to(raw) + raw[:, 1].sigmoid()) * STRIDE
        cy = (gy.to(raw) + raw[:, 2].sigmoid()) * STRIDE
        w, h = raw[:, 3].clamp(max=4).exp() * STRIDE, raw[:, 4].clamp(max=4).exp() * STRIDE
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(b, -1, 4)
        scores = raw[:, 0].sigmoid().reshape(b, -1, 1)
        return boxes, scores


class Rectangles(Dataset):
    """Bright 'persons' (tall rectangles) on noise; seeded by index; optional random flip."""

    def __init__(self, n: int = 16, offset: int = 0, hflip: float = 0.0) -> None:
        self.n, self.offset, self.hflip = n, offset, hflip
        self.classes = ["person"]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(1000 + self.offset + i)
        img = torch.rand(3, SIZE, SIZE, generator=g) * 0.2
        w, h = [int(v) for v in torch.randint(4, 9, (2,), generator=g)]
        h = h + 6
        x0 = int(torch.randint(0, SIZE - w, (1,), generator=g))
        y0 = int(torch.randint(0, SIZE - h, (1,), generator=g))
        img[:, y0 : y0 + h, x0 : x0 + w] = 0.9
        boxes = torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32)
        if self.hflip and float(torch.rand(())) < self.hflip:  # global RNG: the trainer seeds it
            img = img.flip(-1)
            boxes = torch.stack(
                [SIZE - boxes[:, 2], boxes[:, 1], SIZE - boxes[:, 0], boxes[:, 3]], 1
            )
        target = {
            "boxes": boxes,
            "labels": torch.zeros(1, dtype=torch.int64),
            "image_id": self.offset + i,
            "orig_size": (SIZE, SIZE),
            "ratio": (1.0, 1.0),
            "pad": (0.0, 0.0),
        }
        return img, target

    def to_coco(self) -> dict:
        images, anns = [], []
        for i in range(self.n):
            _, t = Rectangles.__getitem__(Rectangles(self.n, self.offset, 0.0), i)
            x0, y0, x1, y1 = t["boxes"][0].tolist()
            images.append({"id": t["image_id"], "width": SIZE, "height": SIZE})
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": t["image_id"],
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def collate(batch):
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


def tiny_cfg(**over) -> dict:
    cfg = {
        "epochs": 2,
        "batch_size": 4,
        "lr": 0.05,
        "warmup_epochs": 0.5,
        "eval_every": 0,
        "progress": False,
        "seed": 3,
    }
    cfg.update(over)
    return cfg


# A two-conv Darknet YOLO with one yolo head and one class: realistic and fast to train.
TINY_YOLO_CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=6,14, 12,30, 24,50
classes=1
num=3
jitter=.3
ignore_thresh=.7
truth_thresh=1
random=0
"""


def tiny_yolo(input_size: int = 64, seed: int = 0):
    """The tiny cfg above as a one-class person YOLO (the Darknet cfg builder)."""
    from compress.models.yolo import YOLO

    torch.manual_seed(seed)
    det = YOLO.from_cfg(TINY_YOLO_CFG, input_size, ["person"])
    det.init_head_bias()
    return det


def gloo_rank_env(rank: int, port: int, world_size: int = 2) -> None:
    """The variables torchrun would set for `rank` of a local CPU group, one torch thread
    each (spawned test workers join through `init_distributed` / `init_process_group`)."""
    import os

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
