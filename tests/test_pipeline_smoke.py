"""`python -m nanoprune` (what `make prune-yolo` runs: the compress pipeline with export and
bench) end to end on the smoke profile (real YOLOv3-tiny weights and coco128): every stage
runs or says why not, and the run folder holds what a user reads."""

from __future__ import annotations

import json

import pytest

from compress.io import read_json
from nanoprune.__main__ import run
from tests.conftest import need


def test_tiny_person_smoke_pipeline(assets, tmp_path):
    need(
        assets,
        "darknet/yolov3-tiny.cfg",
        "darknet/yolov3-tiny.weights",
        "darknet/coco.names",
        "coco128/labels/train2017",
    )
    out = tmp_path / "run"
    rc = run(
        ["--recipe", "configs/yolov3-tiny-person.yaml", "--profile", "smoke", "--out", str(out)]
    )
    summary = read_json(out / "summary.json")
    stages = summary["stages"]
    assert list(stages) == [
        "base",
        "specialise",
        "prune",
        "evaluate",
        "ship",
        "export",
        "bench",
        "compare",
        "versus",
    ]
    failed = {k: v["error"] for k, v in stages.items() if v["status"] == "failed"}
    assert rc == 0 and not failed, failed
    for name in ("base", "specialise", "prune", "evaluate", "ship"):
        assert stages[name]["status"] == "done"
    for (
        name,
        entry,
    ) in stages.items():  # each stage either ran and wrote its report, or says why not
        assert (
            (out / name / "report.json").is_file() if entry["status"] == "done" else entry["reason"]
        )
    # The pruned model is smaller, and is what the evaluate stage re-loaded from disk.
    fig = summary["figures"]
    assert (
        fig["pruned"]["flops"] < fig["base"]["flops"]
        and fig["pruned"]["params"] < fig["base"]["params"]
    )
    # The run hands over one model: the smallest that holds AP50, else the best unpruned one,
    # and the summary's last lines say which and why.
    shipped = read_json(out / "ship" / "report.json")
    names = {c["name"] for c in shipped["candidates"]}
    assert {"base", "specialised", "prune cycle 1"} <= names
    assert summary["final_model"].endswith("ship/model")
    # every finished cycle is on disk as soon as it ends, not only with the stage's report
    assert read_json(out / "prune" / "rounds.json")["rounds"][0]["cycle"] == 1
    assert (out / "ship" / "model" / "model.json").is_file()
    assert fig["shipped"]["name"] in names and fig["specialised"]["AP50"] >= 0
    last = (out / "summary.md").read_text().strip().splitlines()[-2:]
    assert last[0].startswith("Shipped: " + fig["shipped"]["name"])
    assert ("Why:" in last[1]) == fig["shipped"]["holds"]
    assert (out / "prune" / "model" / "model.cfg").read_text().count("[convolutional]") == 13
    # report.json: thresholds and how they were found, per-layer widths, AP and FLOPs per step
    report = read_json(out / "prune" / "report.json")
    cycle = report["cycles"][0]
    assert (
        cycle["prune"]["threshold"]["method"] == "gmm" and cycle["prune"]["threshold"]["value"] > 0
    )
    assert {"layer", "before", "after"} <= set(cycle["prune"]["per_layer"][0])
    for step in ("sparse", "pruned", "recovered"):
        assert {"AP50", "AP50_95", "flops", "params"} <= set(cycle[step])
    assert len(cycle["gamma_log"]) == 2  # before sparsity + 1 epoch
    # the cut convs were refitted by least squares, and the AP before the refit is on record
    refit = cycle["prune"]["reconstruct"]
    assert refit["images"] > 0 and "AP50" in refit["before_refit"]
    assert all(v["error_after"] <= v["error_before"] for v in refit["layers"].values())
    assert set(report["plots"]) >= {
        "gamma_hist_cycle1.png",
        "channels_cycle1.png",
        "ap_vs_flops.png",
    }
    assert all((out / "prune" / p).stat().st_size > 1000 for p in report["plots"])
    # held-out images only: the base report says how many were trained on and evaluated
    base = read_json(out / "base" / "report.json")
    assert base["data"]["val_images"] > 0 and base["inputs"]["weights"]["sha256"]
    md = (out / "summary.md").read_text()
    assert "| prune | done |" in md and "pruned" in md
    assert "AP50 after each step" in md
    json.dumps(summary)
    # The recovery methods side by side on the pruned model, same images seen by each.
    table = {r["method"]: r for r in read_json(out / "compare" / "report.json")["table"]}
    assert set(table) == {"finetune", "grafting"}
    assert all(r["images_seen"] == 36 and r["AP50"] is not None for r in table.values())
    assert (
        "Recovery methods on the pruned model" in md and (out / "compare" / "compare.png").is_file()
    )
    # ACP's swarm side by side with slimming, from the same model toward the same FLOPs.
    vs = summary["figures"]["versus"]
    assert set(vs) == {"slimming", "acp"} and vs["acp"]["flops"] < fig["base"]["flops"]
    assert "Prune methods from the same model to the same FLOPs" in md
    # A partial re-run updates the summary: the stages it did not run keep their results.
    assert (
        run(
            [
                "--recipe",
                "configs/yolov3-tiny-person.yaml",
                "--profile",
                "smoke",
                "--out",
                str(out),
                "--stages",
                "base",
            ]
        )
        == 0
    )
    again = read_json(out / "summary.json")
    assert list(again["stages"]) == list(stages) and again["final_model"] == summary["final_model"]
    assert again["figures"]["pruned"] == fig["pruned"]


def test_missing_yolov3_weights_fail_clearly(assets, tmp_path):
    need(assets, "darknet/yolov3.cfg", "coco128/labels/train2017")
    if (assets / "darknet/yolov3.weights").exists():
        pytest.skip("yolov3.weights present: nothing missing to report")
    out = tmp_path / "run"
    rc = run(["--recipe", "configs/yolov3-person.yaml", "--profile", "smoke", "--out", str(out)])
    stages = read_json(out / "summary.json")["stages"]
    assert rc == 1
    assert stages["base"]["status"] == "failed" and "yolov3.weights" in stages["base"]["error"]
    assert all(stages[s]["status"] == "skipped" for s in ("prune", "evaluate", "export", "bench"))
    assert "base" in stages["prune"]["reason"]


def test_pipeline_rejects_unknown_stage():
    with pytest.raises(SystemExit, match="unknown stage"):
        run(["--recipe", "configs/yolov3-tiny-person.yaml", "--stages", "base,nope"])


def test_targets_come_from_the_recipe():
    """An SSD recipe states its own targets (0.5x FLOPs, no latency target); a recipe
    without a `targets:` section is judged by the YOLOv3-tiny ones; a typo is refused."""
    from compress.report import targets as _targets

    fig = {
        "base": {"AP50": 0.4},
        "ratios": {"flops_ratio": 0.45, "AP50_delta": -0.005},
        "latency": {"latency_ratio_p50": 0.6},
    }
    ssd = _targets(fig, {"flops_ratio": 0.5, "latency_ratio": None})
    assert ssd == {
        "flops_at_most_0.50x": {"value": 0.45, "met": True},
        "AP50_drop_at_most_0.01": {"value": -0.005, "met": True},
    }
    assert _targets(fig)["flops_at_most_0.40x"]["met"] is False
    assert _targets(fig)["ort_latency_at_most_0.45x"]["met"] is False
    with pytest.raises(ValueError, match="flops_ration"):
        _targets(fig, {"flops_ration": 0.5})


def test_compress_imports_neither_export_nor_benchmarks():
    """Imports flow export -> compress and benchmarks -> all: a compress module that imported
    either (directly or through importlib) would tie the host package to the device side."""
    import ast
    from pathlib import Path

    import compress

    wrong = []
    for path in sorted(Path(compress.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.startswith(("export.", "benchmarks.")) else []
            wrong += [
                f"{path}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("export", "benchmarks")
            ]
    assert not wrong, wrong


def test_base_and_export_alone_export_the_unpruned_model(assets, tmp_path):
    """`--stages base,export` on a fresh folder: the unpruned model's bundle, named after the
    recipe (the name the web page shows), and no pruned one."""
    need(
        assets, "darknet/yolov3-tiny.cfg", "darknet/yolov3-tiny.weights", "coco128/labels/train2017"
    )
    out = tmp_path / "run"
    args = ["--recipe", "configs/yolov3-tiny-person.yaml", "--profile", "smoke", "--out", str(out)]
    assert run([*args, "--stages", "base,export"]) == 0
    report = read_json(out / "export" / "report.json")
    assert set(report["bundles"]) == {"base"}
    assert (out / "export" / "yolov3-tiny-person-base.onnx").is_file()
    assert report["reports"]["base"]["name"] == "yolov3-tiny-person-base"
