"""edge_runtime as the Nano runs it: onnxruntime backend, loop, outputs, MJPEG, command line."""

import json
import sys
import threading
import time
import urllib.request

import cv2
import numpy as np

from edge_runtime.detector import BundleDetector
from edge_runtime.mjpeg import BOUNDARY, MjpegServer
from edge_runtime.outputs import DetectionLog, VideoRecorder
from edge_runtime.pipeline import run_loop
from edge_runtime.sources import open_source
from tests.device.helpers import one_error_line, run_module, write_video


def white_block(h=120, w=160):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[30:90, 50:110] = 255
    return frame


def test_detector_finds_the_block_with_both_resize_modes(bundle):
    for name in ("grid.onnx", "grid-bgr-stretch.onnx"):
        with BundleDetector(bundle(name), backend="ort", threads=1) as det:
            boxes, scores, classes = det.detect(white_block())
        assert len(boxes) >= 1, name
        assert boxes.dtype.kind == "f" and boxes.shape[1] == 4
        assert (boxes[:, [0, 2]] >= -1).all() and (boxes[:, [0, 2]] <= 161).all()
        assert ((scores > 0) & (scores <= 1)).all() and (classes == 0).all()


def test_loop_over_a_video_writes_the_recording_and_one_log_line_per_frame(bundle, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=6)
    det = BundleDetector(bundle("grid.onnx"), backend="ort", threads=1)
    log_path, rec_path = tmp_path / "det.jsonl", tmp_path / "out.avi"
    outputs = [DetectionLog(str(log_path), det.classes), VideoRecorder(str(rec_path), fps=10)]
    stats = run_loop(det, open_source(video), outputs, bench_frames=0, handle_signals=False)
    assert stats["frames"] == 6 and stats["stopped_by"] == "end"
    lines = log_path.read_text().splitlines()
    assert len(lines) == 6 and [json.loads(x)["frame"] for x in lines] == list(range(6))
    cap = cv2.VideoCapture(str(rec_path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()


def test_mjpeg_stream_serves_jpeg_frames(bundle, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), white_block())
    det = BundleDetector(bundle("grid.onnx"), backend="ort", threads=1)
    server = MjpegServer("127.0.0.1", 0, title="grid")
    stop = threading.Event()
    loop = threading.Thread(
        target=run_loop,
        args=(det, open_source(str(tmp_path / "a.png"), loop=True), [server]),
        kwargs={"stop_event": stop, "bench_frames": 0, "handle_signals": False},
    )
    loop.start()
    try:
        deadline = time.time() + 20
        body = b""
        with urllib.request.urlopen(server.url + "stream.mjpg", timeout=20) as r:
            assert r.headers["Content-Type"].endswith("boundary=" + BOUNDARY)
            while body.count(b"\xff\xd8") < 2 and time.time() < deadline:
                body += r.read1(65536) if hasattr(r, "read1") else r.read(4096)
        assert body.count(b"\xff\xd8") >= 2
        with urllib.request.urlopen(server.url + "stats.json", timeout=20) as r:
            assert json.loads(r.read().decode("utf-8"))["model"] == "grid"
    finally:
        stop.set()
        loop.join(30)
    assert not loop.is_alive()


def test_cli_runs_a_video_and_writes_stats(bundle, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=5)
    stats = tmp_path / "stats.json"
    proc = run_module(
        "-m", "edge_runtime", "run", "--model", bundle("grid.onnx"), "--source", video,
        "--backend", "ort", "--threads", "1", "--stats", str(stats), "--quiet", "--bench-frames", "0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(stats.read_text())["frames"] == 5


def test_cli_bad_models_give_one_line(bundle, tmp_path):
    good = open(bundle("grid.onnx"), "rb").read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good[: len(good) // 2])
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), white_block())
    for path, words in (
        (str(cut), "cannot load"),
        (bundle("plain.onnx"), "no 'nanoprune' metadata"),
        (str(tmp_path / "absent.onnx"), "not found"),
    ):
        proc = run_module("-m", "edge_runtime", "run", "--model", path, "--source", str(image))
        line = one_error_line(proc)
        assert words in line and path.split("/")[-1] in line, line


def test_info_and_the_whole_runtime_import_without_torch_or_onnx(bundle):
    proc = run_module("-m", "edge_runtime", "info", "--model", bundle("grid.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert "grid" in proc.stdout
    code = (
        "import pkgutil, importlib, sys, edge_runtime\n"
        "for m in pkgutil.iter_modules(edge_runtime.__path__):\n"
        "    importlib.import_module('edge_runtime.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'compress', 'onnx')]\n"
        "assert not bad, bad\n"
        "print(sys.version_info[:2])\n"
    )
    proc = run_module("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert str(tuple(sys.version_info[:2])) in proc.stdout


def test_a_truncated_video_says_it_ended_before_its_header_frame_count(bundle, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=40)
    data = open(video, "rb").read()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 3])
    whole = run_module(
        "-m", "edge_runtime", "run", "--model", bundle("grid.onnx"), "--source", video,
        "--backend", "ort", "--quiet", "--bench-frames", "0",
    )  # fmt: skip
    assert whole.returncode == 0 and "ended after" not in whole.stderr
    proc = run_module(
        "-m", "edge_runtime", "run", "--model", bundle("grid.onnx"), "--source", str(cut),
        "--backend", "ort", "--quiet", "--bench-frames", "0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warning = [x for x in proc.stderr.splitlines() if x.startswith("warning: ")]
    assert len(warning) == 1 and "cut.avi: the file ended after" in warning[0]
    assert "of the 40 frames its header gives" in warning[0]
