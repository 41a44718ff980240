"""Counting people on the real one-by-one video against a ground truth taken by eye.

The detections of YOLOv3-tiny (person, 416 px, onnxruntime) on all 1,394 frames are cached in
tests/data (computing them takes minutes on one core); one test re-detects a few frames to
show the cache is still what the model gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.counting import Counter, parse_shapes
from edge_runtime.track import Tracker
from edge_runtime.tracking import TrackingStage
from tests.conftest import need

DATA = Path(__file__).resolve().parent / "data"
TRUTH = json.loads((DATA / "one_by_one_truth.json").read_text())
CACHE = json.loads((DATA / "one_by_one_detections.json").read_text())
SLACK = 15  # frames (1.5 s): a person half out of the picture is not detected at once


class Frame:
    def __init__(self, index: int, dets: list, conf: float, shape: tuple) -> None:
        kept = np.array([d for d in dets if d[4] >= conf], dtype=np.float32).reshape(-1, 5)
        self.index, self.timestamp = index, index / TRUTH["fps"]
        self.frame = np.empty(shape, np.uint8)
        self.boxes, self.scores = kept[:, :4], kept[:, 4]
        self.classes = np.zeros(len(kept), np.int64)


def track_video(conf: float) -> tuple[TrackingStage, dict, list]:
    """Run the loop's tracking stage over the cached detections at detector threshold conf:
    (stage, {track id: [first, last] frame seen}, all events with their frame)."""
    lines, zones = parse_shapes([TRUTH["line"]], [TRUTH["zone"]])
    stage = TrackingStage(Tracker(), Counter(lines, zones), ["person"], fps=TRUTH["fps"])
    width, height = CACHE["size"]
    seen, events = {}, []
    for i, dets in enumerate(CACHE["detections"]):
        result = Frame(i, dets, conf, (height, width, 3))
        stage.update(result)
        for tid in result.track_ids[result.track_ids > 0].tolist():
            seen.setdefault(tid, [i, i])[1] = i
        events += [dict(e, frame=i) for e in result.events]
    return stage, seen, events


def visit_of(frame: int) -> int | None:
    for k, v in enumerate(TRUTH["visits"]):
        if v["first"] - SLACK <= frame <= v["last"] + SLACK:
            return k
    return None


def test_cache_covers_the_whole_video() -> None:
    assert len(CACHE["detections"]) == TRUTH["frames"]
    busy = {i for i, d in enumerate(CACHE["detections"]) if any(s >= 0.5 for *_, s in d)}
    outside = [i for i in busy if visit_of(i) is None]
    assert not outside, "confident detections where the truth says the room is empty"


@pytest.mark.parametrize("conf", [0.25, 0.1])  # the bundle's default, and a low floor
def test_one_track_per_visitor_and_each_zone_entry_and_exit_counted(conf: float) -> None:
    stage, seen, events = track_video(conf)
    summary = stage.summary()
    assert summary["unique_tracks"] == len(TRUTH["visits"]) == len(seen)
    # every track lies inside one visit, and covers most of it: no ID switch, no merge
    visits = sorted(visit_of(first) for first, _ in seen.values())
    assert visits == list(range(len(TRUTH["visits"])))
    for first, last in seen.values():
        truth = TRUTH["visits"][visit_of(first)]
        assert visit_of(last) == visit_of(first)
        assert last - first >= 0.8 * (truth["last"] - truth["first"])
    zone = summary["zones"]["table"]
    assert zone["entries"] == TRUTH["zone_entries"] and zone["inside"] == 0
    enters = [visit_of(e["frame"]) for e in events if e["type"] == "enter"]
    assert enters == list(range(len(TRUTH["visits"])))
    line = summary["lines"]["exit"]
    assert (line["in"], line["out"]) == (TRUTH["line_in"], TRUTH["line_out"])
    # each visitor's time at the table: most of the time they were in the picture, never more
    for tid, dwell in zone["dwell_s"].items():
        truth = TRUTH["visits"][visit_of(seen[int(tid)][0])]
        in_picture = (truth["last"] - truth["first"]) / TRUTH["fps"]
        assert 0.7 * in_picture <= dwell <= in_picture


def test_cache_is_what_the_model_detects(assets: Path) -> None:
    (video,) = need(assets, TRUTH["video"])
    from edge_runtime.detector import BundleDetector
    from tests.edge_fixtures import yolo_tiny_bundle

    det = BundleDetector(yolo_tiny_bundle(str(assets)), threads=1, score_threshold=0.1)
    cap = cv2.VideoCapture(str(video))
    for index in (120, 600, 1300):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        assert ok
        boxes, scores, _ = det.detect(frame)
        cached = np.array(CACHE["detections"][index]).reshape(-1, 5)
        assert len(cached) == len(boxes), index
        np.testing.assert_allclose(cached[:, :4], boxes, atol=1.0)
        np.testing.assert_allclose(cached[:, 4], scores, atol=0.01)
    cap.release()
