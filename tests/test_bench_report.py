"""`python -m benchmarks report`: Markdown + self-contained HTML from a synthetic run folder."""

from __future__ import annotations

import base64
import json
import re

from benchmarks import __main__ as bench_cli
from benchmarks.plots import pareto_front


def lat(p50):
    return {
        "n": 50,
        "mean": p50 * 1.05,
        "p50": p50,
        "p90": p50 * 1.3,
        "p99": p50 * 1.6,
        "fps": 1000 / p50,
    }


def write_run(run):
    rows = [
        {
            "name": "unpruned",
            "role": "unpruned",
            "onnx": "u.onnx",
            "flops": 5.6e9,
            "params": 8.7e6,
            "latency_ms": lat(30.0),
            "speedup_p50": 1.0,
            "video_ms": lat(36.0),
            "loop": {
                "loop_fps": 26.0,
                "model_fps": 33.0,
                "stages": {
                    "capture": 2.0,
                    "preprocess": 1.5,
                    "inference": 30.0,
                    "postprocess": 0.5,
                    "output": 0.1,
                },
            },
            "AP50": 0.30,
            "AP50_95": 0.15,
        },
        {
            "name": "final",
            "role": "final",
            "onnx": "f.onnx",
            "flops": 2.1e9,
            "params": 3.0e6,
            "latency_ms": lat(14.0),
            "speedup_p50": 2.14,
            "video_ms": lat(19.0),
            "loop": {
                "loop_fps": 50.0,
                "model_fps": 70.0,
                "stages": {
                    "capture": 2.0,
                    "preprocess": 1.5,
                    "inference": 14.0,
                    "postprocess": 0.5,
                    "output": 0.1,
                },
            },
            "AP50": 0.28,
            "AP50_95": 0.14,
        },
        {
            "name": "hog",
            "role": "peer (OpenCV HOG+SVM)",
            "onnx": None,
            "flops": None,
            "params": None,
            "latency_ms": None,
            "speedup_p50": None,
            "video_ms": lat(70.0),
            "loop": None,
            "AP50": 0.007,
            "AP50_95": 0.001,
        },
    ]
    env = {
        "device": "AMD EPYC",
        "cpu_model": "AMD EPYC",
        "cpu_usable": 2,
        "gpu": None,
        "power_mode": None,
        "libraries": {"onnxruntime": "1.31.1", "tensorrt": None, "python": "3.11"},
    }
    bench = {
        "kind": "bench",
        "recipe": "yolov3-tiny-person",
        "table": rows,
        "environment": env,
        "settings": {
            "iterations": 50,
            "threads": 2,
            "backend": "ort",
            "video_frames": 20,
            "images": "val",
        },
        "missing": ["labelled images partly absent (demo note)"],
    }
    (run / "benchmarks").mkdir(parents=True)
    (run / "benchmarks" / "bench.json").write_text(json.dumps(bench))
    nano = {
        "kind": "latency",
        "backend": "trt",
        "threads": 4,
        "environment": {"device": "NVIDIA Jetson Nano Developer Kit", "power_mode": "MAXN"},
        "models": [{"name": "final", "latency_ms": lat(25.0), "speedup_p50": 1.0}],
    }
    (run / "benchmarks" / "nano-latency.json").write_text(json.dumps(nano))
    per_layer1 = [{"layer": i, "before": 16 * (i + 1), "after": 8 * (i + 1)} for i in range(13)]
    per_layer2 = [
        {"layer": i, "before": 8 * (i + 1), "after": 8 * (i + 1) - 8 * (i % 2)} for i in range(13)
    ]
    (run / "prune").mkdir()
    (run / "prune" / "report.json").write_text(
        json.dumps(
            {
                "method": "slimming",
                "final": {"AP50": 0.28, "flops": 2.1e9},
                "cycles": [
                    {"cycle": 1, "prune": {"per_layer": per_layer1}},
                    {"cycle": 2, "prune": {"per_layer": per_layer2}},
                ],
            }
        )
    )
    (run / "summary.json").write_text(
        json.dumps(
            {
                "name": "yolov3-tiny-person",
                "final_model": "prune/model",
                "targets": {"flops_at_most_0.40x": {"value": 0.375, "met": True}},
                "stages": {
                    "baseline": {
                        "figures": {"AP50": 0.30, "AP50_95": 0.15, "flops": 5.6e9, "params": 8.7e6}
                    },
                    "prune": {
                        "figures": {"AP50": 0.28, "AP50_95": 0.14, "flops": 2.1e9, "params": 3.0e6}
                    },
                },
            }
        )
    )


def test_report_is_self_contained(tmp_path, capsys):
    run = tmp_path / "runs" / "yolov3-tiny-person"
    write_run(run)
    assert bench_cli.main(["report", str(run)]) == 0
    page = (run / "report" / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # latency, AP vs FPS, stages, layer widths
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing fetched from anywhere
    assert "<table>" in page and "hog" in page and "2.14x" in page
    assert "NVIDIA Jetson Nano Developer Kit" in page  # the extra device measurement is shown
    assert "demo note" in page  # the bench's own missing notes are passed on
    assert "flops_at_most_0.40x" in page  # the pipeline's targets, met or not
    md = (run / "report" / "report.md").read_text()
    assert "| final | final |" in md and "report_files/ap_vs_fps.png" in md
    for name in ("latency", "ap_vs_fps", "stages", "layers"):
        assert (run / "report" / "report_files" / f"{name}.png").stat().st_size > 1000


def test_report_names_what_is_missing(tmp_path, capsys):
    run = tmp_path / "empty-run"
    run.mkdir()
    assert bench_cli.main(["report", str(run)]) == 0
    page = (run / "report" / "report.html").read_text()
    assert "Not in this report" in page
    assert "benchmarks run" in page and "per-layer" in page
    assert "data:image/png" not in page
    assert bench_cli.main(["report", str(tmp_path / "nowhere")]) == 2


def test_pareto_front():
    # (fps, AP): c is beaten by b (faster and more accurate); a, b, d are trade-offs.
    pts = [(5.0, 0.30), (20.0, 0.28), (10.0, 0.20), (60.0, 0.01)]
    assert pareto_front(pts) == [0, 1, 3]
