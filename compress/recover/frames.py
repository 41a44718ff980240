"""Unlabeled video frames as a training set for label-free distillation.

Real deployments have hours of video and few labels: the teacher's outputs on the frames are
the targets. Frames are read with OpenCV (every `stride`-th frame, at most `max_frames`), put
through the detector's own preprocessing (the data's eval transform: letterbox or stretch) and
kept in memory as uint8 at the input size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from compress.paths import resolve_asset
from edge_runtime import video

DEFAULT_VIDEO = "video/vtest.avi"


def read_frames(
    path: str | os.PathLike, stride: int = 5, max_frames: int = 120
) -> list[np.ndarray]:
    """RGB frames 0, stride, 2*stride, ... (at most max_frames) of a video file."""
    return [
        np.ascontiguousarray(bgr[:, :, ::-1])
        for bgr in video.read_frames(path, max_frames, stride=stride)
    ]


class VideoFrames(Dataset):
    """(image [3, H, W] float in [0, 1], target with no boxes) per kept frame."""

    classes: list[str]

    def __init__(
        self,
        video: str | os.PathLike,
        input_size: tuple[int, int],
        resize: str = "letterbox",
        pad_value: int = 114,
        stride: int = 5,
        max_frames: int = 120,
        classes: list[str] | None = None,
    ) -> None:
        from compress.data.transforms import build_transform

        self.path = resolve_asset(video)
        self.classes = list(classes or ["person"])
        tf = build_transform(tuple(input_size), resize, train=False, pad_value=pad_value)
        self.images, self.meta = [], []
        for rgb in read_frames(self.path, stride, max_frames):
            h, w = rgb.shape[:2]
            target = {
                "boxes": torch.zeros(0, 4),
                "labels": torch.zeros(0, dtype=torch.int64),
                "image_id": len(self.images),
                "orig_size": (h, w),
                "ratio": (1.0, 1.0),
                "pad": (0.0, 0.0),
            }
            image, target = tf(torch.from_numpy(rgb.transpose(2, 0, 1).copy()), target)
            self.images.append((image * 255).round().to(torch.uint8))
            self.meta.append(target)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.images[index].float() / 255, dict(self.meta[index])
