"""The device half of benchmarks: A/B latency and loop FPS through the command line."""

import json

from benchmarks.stats import round_robin_orders, summarize
from tests.device.helpers import run_module, write_video


def test_latency_ab_json_from_two_bundles(bundle, tmp_path):
    out = tmp_path / "latency.json"
    proc = run_module(
        "-m", "benchmarks", "latency", "--model", bundle("tiny-base.onnx"),
        "--model", bundle("tiny-pruned.onnx"), "--iterations", "20", "--warmup", "2",
        "--threads", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert "base" in text and "pruned" in text and "p50" in text


def test_loop_fps_on_a_video(bundle, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=12, size=(96, 64))
    out = tmp_path / "loop.json"
    proc = run_module(
        "-m", "benchmarks", "loop", "--model", bundle("tiny-pruned.onnx"), "--source", video,
        "--frames", "8", "--warmup-frames", "2", "--threads", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "fps" in out.read_text().lower()


def test_stats_and_orders():
    s = summarize([0.010, 0.020, 0.030, 0.040])
    assert abs(s["p50"] - 25.0) < 1e-6  # milliseconds
    orders = round_robin_orders(2, 4)
    assert sorted(sum((list(o) for o in orders), [])) == [0, 0, 0, 0, 1, 1, 1, 1]
