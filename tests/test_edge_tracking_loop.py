"""Tracking in the threaded loop: a fake detector that finds white blobs drives run_loop, the
log, the recording, the stats and the MJPEG page; `--track` off leaves all of them as before;
the CLI rejects bad lines and zones with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.counting import Counter, parse_shapes
from edge_runtime.mjpeg import MjpegServer
from edge_runtime.outputs import DetectionLog, VideoRecorder
from edge_runtime.pipeline import Result, run_loop
from edge_runtime.sources import open_source
from edge_runtime.track import Tracker
from edge_runtime.tracking import TrackingStage
from tests.edge_fixtures import make_bundle

ROOT = Path(__file__).resolve().parents[1]
W, H, N = 320, 240, 40


class _Backend:
    name = "fake"

    def infer(self, blob):
        return {"mask": blob}


class BlobDetector:
    """The loop's detector interface over a blob finder: every white rectangle is a person."""

    classes = ["person"]
    backend = _Backend()

    def preprocess(self, frame):
        return (frame[:, :, 1] > 160).astype(np.uint8), None

    def postprocess(self, outputs, geometry):
        n, _, stats, _ = cv2.connectedComponentsWithStats(outputs["mask"])
        xywh = stats[1:, :4].astype(np.float32)
        xywh = xywh[stats[1:, 4] > 200]  # no specks from video compression
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return boxes, np.full(len(boxes), 0.9, np.float32), np.zeros(len(boxes), np.int64)

    def describe(self):
        return {"backend": "fake"}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """10 FPS: one person walks down across y=120 at x~80, another stands at x~240."""
    path = tmp_path_factory.mktemp("walk") / "walk.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    for i in range(N):
        frame = np.zeros((H, W, 3), np.uint8)
        y = 10 + i * 4
        frame[y : y + 50, 65:95] = 255
        frame[150:210, 225:255] = 255
        writer.write(frame)
    writer.release()
    return path


def stage() -> TrackingStage:
    lines, zones = parse_shapes(["door=0,120,160,120"], ["spot=0.6,0.5,1,0.5,1,1,0.6,1"])
    return TrackingStage(Tracker(), Counter(lines, zones), ["person"], fps=10.0)


def test_tracking_in_the_loop_reaches_log_stats_and_recording(video: Path, tmp_path: Path) -> None:
    log, rec = tmp_path / "det.jsonl", tmp_path / "rec.avi"
    seen = []
    outputs = [DetectionLog(log, ["person"]), VideoRecorder(str(rec), fps=10.0)]
    stats = run_loop(
        BlobDetector(),
        open_source(video),
        outputs,
        bench_frames=2,
        bench_min_s=0.05,
        handle_signals=False,
        tracking=stage(),
        on_result=lambda r: seen.append(r.counts),
    )
    counting = stats["counting"]
    assert stats["frames"] == N and stats["stages"]["track"]["n"] == N
    assert counting["unique_tracks"] == 2 and counting["in_view"] == 2
    assert counting["lines"]["door"]["in"] == 1 and counting["lines"]["door"]["out"] == 0
    assert counting["zones"]["spot"]["entries"] == 1 and counting["zones"]["spot"]["inside"] == 1
    assert counting["clock"] == "video" and counting["zones"]["spot"]["dwell_s"]
    assert seen[-1]["lines"] == {"door": [1, 0]} and seen[-1]["in_view"] == 2
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(len(r["ids"]) == len(r["boxes"]) for r in records)
    crossings = [(r["frame"], e) for r in records for e in r["events"] if e["type"] == "cross"]
    assert len(crossings) == 1 and crossings[0][1]["dir"] == "in"
    # the person crosses y=120 with the foot (box bottom) between frames 14 and 16
    assert 13 <= crossings[0][0] <= 17
    assert {i for r in records[5:] for i in r["ids"]} == {1, 2}
    cap = cv2.VideoCapture(str(rec))
    ok, first = cap.read()
    cap.release()
    b, g, r = first[120, 30].astype(int)  # on the drawn count line: yellow
    assert ok and g > 150 and r > 150 and b < 110


def test_without_tracking_the_loop_is_as_before(video: Path, tmp_path: Path) -> None:
    log = tmp_path / "det.jsonl"
    seen = []
    stats = run_loop(
        BlobDetector(),
        open_source(video),
        [DetectionLog(log, ["person"])],
        bench_frames=0,
        handle_signals=False,
        on_result=lambda r: seen.append(r.track_ids),
    )
    assert "counting" not in stats and "track" not in stats["stages"]
    assert seen == [None] * N
    assert all("ids" not in json.loads(line) for line in log.read_text().splitlines())


def test_mjpeg_status_carries_the_counts_and_the_page_plots_them() -> None:
    server = MjpegServer("127.0.0.1", 0)
    try:
        result = Result(7, 0.0, np.zeros((H, W, 3), np.uint8), 0.001)
        result.annotated = result.frame
        result.counts = {
            "in_view": 2,
            "unique": 5,
            "lines": {"door": [3, 1]},
            "zones": {"spot": 1},
            "history": [[0, 1], [1, 2]],
        }
        server.write(result)
        with urllib.request.urlopen(server.url + "stats.json", timeout=5) as r:
            status = json.loads(r.read())
        with urllib.request.urlopen(server.url, timeout=5) as r:
            page = r.read().decode()
    finally:
        server.close()
    assert status["counts"]["lines"] == {"door": [3, 1]} and status["counts"]["unique"] == 5
    assert 'id="spark"' in page and "c.history" in page and "showCounts" in page


def edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_cli_counts_and_reports(video: Path, tmp_path: Path) -> None:
    model = make_bundle(tmp_path / "grid.onnx")
    stats_path = tmp_path / "stats.json"
    out = edge(
        "--model", str(model), "--source", str(video), "--bench-frames", "0",
        "--count-line", "door=0,0.5,0.5,0.5", "--zone", "0.5,0.5,1,0.5,1,1",
        "--stats", str(stats_path), "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    stats = json.loads(stats_path.read_text())
    assert set(stats["counting"]["lines"]) == {"door"} and set(stats["counting"]["zones"]) == {
        "zone1"
    }
    assert "unique people" in out.stdout and "door: in" in out.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--count-line", "1,2,3"], "--count-line '1,2,3': expected [name=]x1,y1,x2,y2"),
        (["--zone", "hall=1,2,x,4,5,6"], "--zone 'hall=1,2,x,4,5,6': coordinates must be"),
        (["--count-line", "a=0,0,1,1", "--zone", "a=0,0,1,0,1,1"], "the name 'a' is used twice"),
        (["--track", "--track-max-misses", "0"], "--track-max-misses must be >= 1"),
    ],
)
def test_cli_rejects_bad_specs_before_loading_the_model(flags, message, tmp_path: Path) -> None:
    out = edge("--model", str(tmp_path / "absent.onnx"), "--source", "x.mp4", *flags)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr


def test_cli_rejects_a_zone_outside_the_frame(video: Path, tmp_path: Path) -> None:
    model = make_bundle(tmp_path / "grid.onnx")
    out = edge("--model", str(model), "--source", str(video), "--zone", "0,0,500,0,500,100")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "point (500, 0) is outside the 320x240 frame" in lines[0]
