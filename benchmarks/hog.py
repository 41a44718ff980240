"""The peer a user would pick without us: OpenCV's HOG + linear SVM people detector.

`HogPeopleDetector.detect(frame)` has the same `(boxes, scores, classes)` contract as the
edge runtime, so the HOG peer is timed on the same video frames and scored on the same
labelled images as our models. Scores are the SVM margins (not probabilities): they rank
detections, which is all COCO AP needs.

    python -m benchmarks hog --video video/vtest.avi --frames 20 --recipe configs/x.yaml
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import cv2
import numpy as np

from benchmarks.video import time_on_frames
from edge_runtime.postprocess import nms
from edge_runtime.video import read_frames


class HogPeopleDetector:
    """cv2.HOGDescriptor with `getDefaultPeopleDetector()` (Dalal-Triggs, 64x128 window).

    Args:
        hit_threshold: SVM margin a window needs; below 0 keeps weak detections, which AP
            rewards (the ranking decides) and a live display does not.
        win_stride, padding: window step and border in pixels (OpenCV's sample uses 8, 8).
        scale: image pyramid step.
        group_threshold: minimum overlapping windows per kept box (OpenCV's grouping); 0 keeps
            every window and applies NMS at `nms_iou` instead (more, better-ranked boxes for AP).
        width: frames are resized to this width first (smaller = faster; larger finds people
            under the 64x128 window); None = as they are.
        nms_iou: IoU of the NMS used when group_threshold is 0.
    """

    classes = ("person",)

    def __init__(
        self,
        hit_threshold: float = 0.0,
        win_stride: int = 8,
        padding: int = 8,
        scale: float = 1.05,
        group_threshold: int = 2,
        width: int | None = None,
        nms_iou: float = 0.45,
    ) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.hit_threshold = float(hit_threshold)
        self.win_stride = (int(win_stride), int(win_stride))
        self.padding = (int(padding), int(padding))
        self.scale = float(scale)
        self.group_threshold = int(group_threshold)
        self.width = width
        self.nms_iou = float(nms_iou)

    def settings(self) -> dict[str, Any]:
        return {
            "hit_threshold": self.hit_threshold,
            "win_stride": self.win_stride[0],
            "padding": self.padding[0],
            "scale": self.scale,
            "group_threshold": self.group_threshold,
            "width": self.width,
            "nms_iou": self.nms_iou if self.group_threshold == 0 else None,
        }

    def detect(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BGR frame -> boxes [n, 4] xyxy frame pixels, scores [n] (SVM margin), classes [n] (0)."""
        factor = 1.0
        image = frame_bgr
        if self.width and frame_bgr.shape[1] != self.width:
            factor = self.width / frame_bgr.shape[1]
            inter = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            image = cv2.resize(frame_bgr, None, fx=factor, fy=factor, interpolation=inter)
        win_w, win_h = self.hog.winSize
        if image.shape[0] < win_h or image.shape[1] < win_w:
            # No 64x128 window fits (and OpenCV's detectMultiScale crashes on such images).
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        rects, weights = self.hog.detectMultiScale(
            image,
            hitThreshold=self.hit_threshold,
            winStride=self.win_stride,
            padding=self.padding,
            scale=self.scale,
            groupThreshold=self.group_threshold,
        )
        rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
        weights = np.asarray(weights, dtype=np.float32).reshape(-1)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / factor
        if self.group_threshold == 0 and len(boxes):
            # Raw windows overlap heavily: the edge runtime's own NMS keeps the best of each.
            keep = nms(boxes, weights, self.nms_iou)
            boxes, weights = boxes[keep], weights[keep]
        h, w = frame_bgr.shape[:2]
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        return boxes, weights, np.zeros(len(boxes), dtype=np.int64)


def hog_speed(
    detector: HogPeopleDetector, video: str, frames: int = 20, warmup: int = 1
) -> dict[str, Any]:
    """HOG's per-frame latency on the first `frames` frames of a video."""
    clip = read_frames(video, frames)
    result = time_on_frames([("hog", detector.detect)], clip, warmup=warmup)["hog"]
    result.update(video=str(video), frame_shape=list(clip[0].shape))
    return result


def hog_accuracy(detector: HogPeopleDetector, dataset) -> dict[str, Any]:
    from benchmarks.accuracy import evaluate_frames

    return evaluate_frames(detector.detect, detector.classes, dataset)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("--video", help="video for speed (relative to NANOPRUNE_ASSETS or a path)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--recipe", help="recipe whose data: section gives the labelled images")
    parser.add_argument("--profile", help="recipe profile")
    parser.add_argument(
        "--images",
        choices=("val", "all"),
        default="val",
        help="the recipe's validation split (the models' test set) or all images",
    )
    parser.add_argument("--hit-threshold", type=float, default=0.0)
    parser.add_argument("--group-threshold", type=int, default=2)
    parser.add_argument("--width", type=int, default=None, help="resize frames to this width first")
    parser.add_argument(
        "--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)"
    )
    parser.add_argument("--out", help="write the JSON here")
    return parser


def main(args: argparse.Namespace) -> int:
    import json

    from benchmarks.accuracy import labelled_images
    from compress.paths import resolve_asset

    if not args.video and not args.recipe:
        print("error: give --video (speed) and/or --recipe (AP)", file=sys.stderr)
        return 2
    if args.threads:
        cv2.setNumThreads(args.threads)
    det = HogPeopleDetector(
        hit_threshold=args.hit_threshold, group_threshold=args.group_threshold, width=args.width
    )
    out: dict[str, Any] = {
        "name": "hog",
        "settings": det.settings(),
        "threads": args.threads or cv2.getNumThreads(),
    }
    try:
        if args.video:
            out["speed"] = hog_speed(det, str(resolve_asset(args.video)), args.frames)
        if args.recipe:
            dataset = labelled_images(args.recipe, args.profile, args.images)
            out["ap"] = hog_accuracy(det, dataset)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(out, indent=2, default=float)
    if args.out:
        from compress.io import write_json

        write_json(args.out, out)
    print(text)
    return 0
