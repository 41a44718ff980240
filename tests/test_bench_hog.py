"""The OpenCV HOG+SVM peer: same detection contract as the edge runtime, speed and AP paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import __main__ as bench_cli
from benchmarks.hog import HogPeopleDetector, hog_speed
from benchmarks.video import time_on_frames
from edge_runtime.video import read_frames
from tests.conftest import need


def test_hog_finds_pedestrians_in_vtest(assets):
    (video,) = need(assets, "video/vtest.avi")
    frames = read_frames(video, 2)
    det = HogPeopleDetector()
    for frame in frames:
        boxes, scores, classes = det.detect(frame)
        h, w = frame.shape[:2]
        assert boxes.shape[1] == 4 and len(boxes) == len(scores) == len(classes) >= 1
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert boxes[:, 0::2].max() <= w and boxes[:, 1::2].max() <= h and boxes.min() >= 0
        assert set(classes.tolist()) == {0}
    # a lower threshold and no grouping (NMS instead) keeps weaker people too: what AP needs
    loose = HogPeopleDetector(hit_threshold=-1.0, group_threshold=0)
    assert len(loose.detect(frames[0])[0]) >= len(det.detect(frames[0])[0])
    # resizing first maps boxes back to the frame's pixels
    half = HogPeopleDetector(width=384).detect(frames[0])[0]
    assert half.size == 0 or half[:, 0::2].max() <= frames[0].shape[1]


def test_hog_speed_and_cli(assets, tmp_path):
    (video,) = need(assets, "video/vtest.avi")
    speed = hog_speed(HogPeopleDetector(), str(video), frames=2, warmup=0)
    assert (
        speed["frames"] == 2
        and speed["latency_ms"]["p50"] > 0
        and speed["frame_shape"] == [576, 768, 3]
    )
    out = tmp_path / "hog.json"
    assert (
        bench_cli.main(
            ["hog", "--video", str(video), "--frames", "2", "--threads", "1", "--out", str(out)]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["speed"]["frames"] == 2 and data["settings"]["group_threshold"] == 2


def test_hog_small_images_give_no_boxes():
    # below the 64x128 window OpenCV's detectMultiScale crashes the process: must be guarded
    boxes, scores, classes = HogPeopleDetector().detect(np.zeros((96, 128, 3), np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)


def test_interleaved_timing_on_same_frames():
    frames = [np.full((130, 70, 3), i, np.uint8) for i in range(5)]
    seen = {"a": [], "b": []}

    def make(name):
        def detect(frame):
            seen[name].append(int(frame[0, 0, 0]))
            return np.zeros((1, 4)), np.zeros(1), np.zeros(1)

        return detect

    result = time_on_frames([("a", make("a")), ("b", make("b"))], frames, warmup=1)
    assert seen["a"][1:] == seen["b"][1:] == [0, 1, 2, 3, 4]  # same frames, after one warm-up
    assert result["a"]["frames"] == 5 and result["b"]["detections_per_frame"] == 1.0
    with pytest.raises(ValueError):
        time_on_frames([], frames)


def test_hog_ap_on_coco128(assets, tmp_path):
    need(assets, "coco128/images/train2017", "darknet/coco.names")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: hog\nmodel: {input_size: 416}\n"
        "data: {format: yolo, root: coco128, split: train2017, names: darknet/coco.names,"
        " classes: [person], val_fraction: 0.5, split_seed: 0, max_images: 8}\n"
    )
    out = tmp_path / "hog.json"
    assert (
        bench_cli.main(
            [
                "hog",
                "--recipe",
                str(recipe),
                "--hit-threshold",
                "-1",
                "--group-threshold",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ap = json.loads(out.read_text())["ap"]
    assert ap["images"] == 4 and ap["gt_boxes"] > 0
    assert 0.0 <= ap["AP50"] <= 1.0 and 0.0 <= ap["AP50_95"] <= ap["AP50"]
