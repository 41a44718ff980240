"""The loop's file outputs in their own thread (drop and count when behind), and the
model-only FPS measured by time and skipped after a signal."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import cv2
import numpy as np
import pytest

from edge_runtime.detector import BundleDetector
from edge_runtime.errors import EdgeError
from edge_runtime.output_thread import OutputThread, off_loop
from edge_runtime.outputs import DetectionLog
from edge_runtime.pipeline import Result, model_only, run_loop
from edge_runtime.sources import open_source
from tests.edge_fixtures import make_bundle


class SlowOutput:
    needs_image = True
    off_loop = True

    def __init__(self, seconds: float, fail_at: int | None = None) -> None:
        self.seconds, self.fail_at, self.seen, self.closed = seconds, fail_at, [], False

    def write(self, result) -> None:
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise EdgeError("disk full")
        time.sleep(self.seconds)
        assert result.annotated is not None and result.annotated.shape == (24, 32, 3)
        self.seen.append(result.index)

    def close(self) -> None:
        self.closed = True


def result(i: int) -> Result:
    r = Result(i, time.time(), np.zeros((24, 32, 3), np.uint8), 0.0)
    r.boxes, r.scores, r.classes = np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)
    return r


def test_a_slow_writer_never_holds_the_loop_and_every_frame_is_counted() -> None:
    slow = SlowOutput(0.02)
    writer = OutputThread([slow], ["person"], depth=4)
    start = time.perf_counter()
    for i in range(60):
        writer.write(result(i))
    handed_over = time.perf_counter() - start
    writer.close()
    assert slow.closed and writer.dropped > 0
    assert writer.written + writer.dropped == 60 == len(slow.seen) + writer.dropped
    assert slow.seen == sorted(slow.seen)  # in order, gaps where frames were dropped
    assert handed_over < 60 * 0.02 / 2  # the 1.2 s of writing did not happen in the loop


def test_a_writer_error_reaches_the_loop_and_every_output_is_closed() -> None:
    bad, other = SlowOutput(0.0, fail_at=2), SlowOutput(0.0)
    writer = OutputThread([bad, other], ["person"], depth=64)
    with pytest.raises(EdgeError, match="disk full"):
        for i in range(50):
            writer.write(result(i))
            time.sleep(0.005)
    with pytest.raises(EdgeError, match="disk full"):
        writer.close()  # the outputs are closed all the same (what was written is kept)
    assert bad.closed and other.closed and bad.seen == [0, 1]
    outputs, moved = off_loop([object(), bad], ["person"])
    assert moved is not None and moved.outputs == [bad] and len(outputs) == 2
    moved.close()


def test_loop_logs_every_frame_through_the_writer(tmp_path) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 255, np.uint8))
    det = BundleDetector(make_bundle(tmp_path / "g.onnx"), threads=1)
    log = tmp_path / "det.jsonl"
    stats = run_loop(
        det, open_source(image, loop=True), [DetectionLog(str(log), det.classes)],
        max_frames=10, bench_frames=0, handle_signals=False,
    )  # fmt: skip
    assert stats["outputs"] == ["DetectionLog"]
    assert stats["output_thread"]["written"] + stats["output_thread"]["dropped"] == 10
    lines = [json.loads(x)["frame"] for x in log.read_text().splitlines()]
    assert len(lines) == stats["output_thread"]["written"] and lines == sorted(lines)


def test_model_only_is_measured_for_seconds_not_frames() -> None:
    calls = []

    def infer(blob):
        calls.append(blob)
        time.sleep(0.01)

    blobs = list(range(16))
    quick = model_only(infer, blobs, min_seconds=0.05, warmup=0)
    # time decides, not whole passes over the 16 stored frames
    assert quick["seconds"] >= 0.05 and 1 <= quick["iterations"] < 16
    stop = threading.Event()
    stop.set()
    assert model_only(infer, blobs, min_seconds=5.0, stop=stop) is None


def test_model_only_is_skipped_after_a_signal(tmp_path) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 255, np.uint8))
    det = BundleDetector(make_bundle(tmp_path / "g.onnx"), threads=1)

    def term(result):
        if result.index == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    start = time.perf_counter()
    stats = run_loop(
        det, open_source(image, loop=True), on_result=term, bench_frames=8, bench_min_s=30.0
    )
    assert stats["stopped_by"] == "signal SIGTERM" and stats["model_only"] is None
    assert time.perf_counter() - start < 20
