"""Latency benchmark: statistics on synthetic timings, round-robin order, A/B on tiny bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import __main__ as bench_cli
from benchmarks.latency import measure_models
from benchmarks.stats import round_robin_orders, speedup, summarize
from export.bundle import make_meta, to_props


def make_bundle(
    path: Path,
    width: int = 8,
    depth: int = 1,
    size: int = 32,
    name: str = "tiny",
    flops: int | None = None,
    score_bias: float = -8.0,
) -> Path:
    """A real nanoprune ONNX bundle: `depth` 3x3 convs of `width` channels, then a 1x1 head
    read as boxes [1, N, 4] (input pixels) and sigmoid scores [1, N, 1]. `score_bias` shifts the
    logits: the default keeps nearly every score under 0.001, so NMS has little to do and the
    timings are the network's."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "images", 3
    for i in range(depth):
        w = numpy_helper.from_array(
            (rng.standard_normal((width, cin, 3, 3)) * 0.1).astype(np.float32), f"w{i}"
        )
        inits.append(w)
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev, cin = f"r{i}", width
    inits += [
        numpy_helper.from_array(
            (rng.standard_normal((5, cin, 1, 1)) * 0.1).astype(np.float32), "wh"
        ),
        numpy_helper.from_array(np.array([1, 5, -1], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array([4, 1], dtype=np.int64), "split"),
        numpy_helper.from_array(np.array(float(size), dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(score_bias, dtype=np.float32), "bias"),
    ]
    nodes += [
        helper.make_node("Conv", [prev, "wh"], ["head"]),
        helper.make_node("Reshape", ["head", "shape"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["rows"], perm=[0, 2, 1]),
        helper.make_node("Split", ["rows", "split"], ["raw_boxes", "logits"], axis=2),
        helper.make_node("Sigmoid", ["raw_boxes"], ["unit_boxes"]),
        helper.make_node("Mul", ["unit_boxes", "scale"], ["boxes"]),
        helper.make_node("Add", ["logits", "bias"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["scores"]),
    ]
    n = size * size
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n, 1]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = make_meta(
        name=name,
        family="yolo",
        input_name="images",
        input_shape=[1, 3, size, size],
        classes=["person"],
        flops=flops,
        params=int(sum(np.prod(i.dims) for i in inits)),
    )
    helper.set_model_props(model, to_props(meta))
    onnx.checker.check_model(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_summarize_known_percentiles():
    s = summarize([t / 1000.0 for t in range(1, 101)])  # 1..100 ms
    assert s["n"] == 100
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(100.0)
    assert s["fps"] == pytest.approx(1000.0 / 50.5)


def test_summarize_tail_does_not_move_median():
    rng = np.random.default_rng(1)
    steady = rng.normal(0.020, 0.0005, 1000)
    spiky = steady.copy()
    spiky[::50] = 0.2  # 2% of frames stall for 200 ms
    a, b = summarize(steady), summarize(spiky)
    assert b["p50"] == pytest.approx(a["p50"], rel=0.02)
    assert b["p99"] > 5 * a["p99"]
    assert b["fps"] < a["fps"]


def test_summarize_rejects_bad_input():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([0.01, -0.002])


def test_speedup_is_baseline_over_candidate():
    assert speedup({"p50": 30.0}, {"p50": 10.0}) == pytest.approx(3.0)


def test_round_robin_gives_every_model_every_position():
    orders = round_robin_orders(3, 6)
    assert orders[:3] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    for position in range(3):
        firsts = [o[position] for o in orders]
        assert sorted(firsts) == [0, 0, 1, 1, 2, 2]


def test_measure_models_ab(tmp_path):
    big = make_bundle(tmp_path / "big.onnx", width=48, depth=4, size=64, name="big", flops=10**9)
    small = make_bundle(
        tmp_path / "small.onnx", width=4, depth=1, size=64, name="small", flops=10**7
    )
    r = measure_models([big, small], threads=1, warmup=2, iterations=30)
    assert r["threads"] == 1 and r["iterations"] == 30 and r["environment"]["threads"] == 1
    names = [m["name"] for m in r["models"]]
    assert names == ["big", "small"]
    for m in r["models"]:
        lat = m["latency_ms"]
        assert lat["n"] == 30 and lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert m["runtime"]["backend"] == "ort"
        assert len(m["sha256"]) == 64
    assert r["models"][0]["flops"] == 10**9 and r["models"][1]["params"] > 0
    assert r["models"][0]["speedup_p50"] == pytest.approx(1.0)
    # ~100x fewer MACs: the small model must come out faster, whatever the machine's load.
    assert r["models"][1]["speedup_p50"] > 1.0
    assert r["models"][1]["speedup_paired_p50"] > 1.0
    json.dumps(r)  # the record is plain JSON


def test_latency_cli_writes_json_and_rejects_missing_model(tmp_path, capsys):
    a = make_bundle(tmp_path / "a.onnx")
    out = tmp_path / "lat.json"
    rc = bench_cli.main(
        [
            "latency",
            "--model",
            str(a),
            "--model",
            str(a),
            "--threads",
            "1",
            "--warmup",
            "1",
            "--iterations",
            "5",
            "--mode",
            "detect",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert [m["name"] for m in data["models"]] == ["a", "a#2"]
    assert data["mode"] == "detect"
    rc = bench_cli.main(["latency", "--model", str(tmp_path / "missing.onnx")])
    assert rc == 2
    assert "missing.onnx" in capsys.readouterr().err
