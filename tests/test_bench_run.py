"""`python -m benchmarks run` + `report` on a synthetic pipeline run folder (no real assets)."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np

from benchmarks import __main__ as bench_cli
from tests.test_bench_latency import make_bundle


def write_video(path, frames=8, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def write_dataset(root, n=4):
    """A YOLO-txt folder: n images with one person box each."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        cv2.imwrite(
            str(root / "images" / "train" / f"img{i}.jpg"),
            rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
        )
        (root / "labels" / "train" / f"img{i}.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (root / "names.txt").write_text("person\n")


def make_run(tmp_path):
    run = tmp_path / "runs" / "tiny-person"
    (run / "export").mkdir(parents=True)
    (run / "prune" / "model").mkdir(parents=True)
    base = make_bundle(
        run / "export" / "tiny-person-base.onnx",
        width=16,
        depth=2,
        size=64,
        name="base",
        flops=4 * 10**7,
    )
    pruned = make_bundle(
        run / "export" / "tiny-person-pruned.onnx",
        width=8,
        depth=1,
        size=64,
        name="pruned",
        flops=10**7,
    )
    (run / "export" / "report.json").write_text(
        json.dumps({"bundles": {"base": str(base), "pruned": str(pruned)}})
    )
    write_dataset(tmp_path / "data")
    recipe = {
        "name": "tiny-person",
        "model": {"family": "yolo", "input_size": 64},
        "data": {
            "format": "yolo",
            "root": str(tmp_path / "data"),
            "split": "train",
            "names": str(tmp_path / "data" / "names.txt"),
            "classes": ["person"],
            "val_fraction": 0.5,
            "split_seed": 0,
        },
        "bench": {
            "threads": 1,
            "warmup": 1,
            "iterations": 5,
            "video": str(write_video(tmp_path / "clip.avi")),
            "video_frames": 4,
            "loop_frames": 4,
        },
    }
    (run / "recipe.json").write_text(json.dumps(recipe))
    (run / "summary.json").write_text(
        json.dumps(
            {
                "recipe": "tiny-person",
                "final_model": str(run / "prune" / "model"),
                "figures": {
                    "base": {"AP50": 0.1, "flops": 4e7, "params": 1000},
                    "pruned": {"AP50": 0.09, "flops": 1e7, "params": 500},
                },
            }
        )
    )
    return run


def test_bench_run_and_report(tmp_path, capsys):
    run = make_run(tmp_path)
    assert bench_cli.main(["run", str(run)]) == 0
    bench = json.loads((run / "benchmarks" / "bench.json").read_text())
    assert [m["name"] for m in bench["latency"]["models"]] == ["unpruned", "final"]
    assert bench["latency"]["threads"] == 1 and bench["latency"]["iterations"] == 5
    # the pipeline's bundles are benchmarked as they are, nothing re-exported
    assert bench["latency"]["models"][1]["path"].endswith("tiny-person-pruned.onnx")
    assert not (run / "benchmarks" / "models").exists()
    assert set(bench["video"]["results"]) == {"unpruned", "final", "hog"}
    assert bench["video"]["results"]["hog"]["frames"] == 4
    assert set(bench["loops"]) == {"unpruned", "final"}
    assert bench["loops"]["final"]["stages"]["inference"]["n"] == 4
    assert set(bench["ap"]) == {"unpruned", "final", "hog"}
    assert bench["ap"]["hog"]["gt_boxes"] == 2  # half of the 4 images are held out
    rows = {r["name"]: r for r in bench["table"]}
    assert rows["final"]["flops"] == 10**7 and rows["hog"]["latency_ms"] is None
    assert rows["hog"]["video_ms"]["p50"] > 0 and rows["final"]["loop"]["loop_fps"] > 0
    assert "| final | final |" in capsys.readouterr().out

    assert bench_cli.main(["report", str(run)]) == 0
    page = (run / "report" / "report.html").read_text()
    assert len(re.findall(r"data:image/png;base64,", page)) == 3  # no prune report: no layer plot
    assert "per-layer" in page  # ... and the report says so
    assert "https://" not in page and "http://" not in page
    # the compare verb reads the bench JSON directly
    assert bench_cli.main(["compare", str(run / "benchmarks" / "bench.json")]) == 0


def test_bench_run_rejects_a_missing_folder(tmp_path, capsys):
    assert bench_cli.main(["run", str(tmp_path / "nope")]) == 2
    assert "make prune-yolo" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bench_cli.main(["run", str(empty)]) == 2
    assert "--recipe" in capsys.readouterr().err
