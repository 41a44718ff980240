"""TensorRT compatibility check: ops, opset, restrictions, shapes and dtypes, by node name."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.__main__ import main as export_main
from export.check import check_onnx


def model_of(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def fvi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


X = fvi("images", [1, 3, 8, 8])


def test_plain_cnn_passes_both_targets():
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    m = model_of([helper.make_node("Conv", ["images", "w"], ["y"], name="conv0", pads=[1, 1, 1, 1]),
                  helper.make_node("Sigmoid", ["y"], ["out"], name="act")],
                 [X], [fvi("out", [1, 4, 8, 8])], [w])  # fmt: skip
    for target in ("nano", "desktop"):
        report = check_onnx(m, target)
        assert report.ok and not report.problems, report.format()
        assert report.ops == {"Conv": 1, "Sigmoid": 1}


def test_op_missing_from_trt82_is_named_with_its_node():
    m = model_of([helper.make_node("HardSwish", ["images"], ["out"], name="backbone.hs3")],
                 [X], [fvi("out", [1, 3, 8, 8])], opset=14)  # fmt: skip
    nano = check_onnx(m, "nano")
    assert not nano.ok
    hs = [p for p in nano.errors if p.op == "HardSwish"]
    assert (
        hs
        and hs[0].node == "backbone.hs3"
        and "No importer registered for op: HardSwish" in hs[0].message
    )
    assert any(p.op == "opset" and "opset 14" in p.message for p in nano.errors)
    assert check_onnx(m, "desktop").ok  # TensorRT 10 has HardSwish and opset 14


def test_topk_with_runtime_k_is_an_error_on_82_only():
    k = helper.make_node("Shape", ["images"], ["shape"], name="k_from_shape")
    topk = helper.make_node("TopK", ["flat", "k"], ["v", "i"], name="select", axis=-1)
    nodes = [
        helper.make_node("Flatten", ["images"], ["flat"], name="flatten"),
        k,
        helper.make_node("Slice", ["shape", "s0", "s1"], ["k"], name="take_n"),
        topk,
    ]
    inits = [
        numpy_helper.from_array(np.array([3], np.int64), "s0"),
        numpy_helper.from_array(np.array([4], np.int64), "s1"),
    ]
    m = model_of(
        nodes,
        [X],
        [fvi("v", [1, None]), helper.make_tensor_value_info("i", TensorProto.INT64, [1, None])],
        inits,
    )
    nano = check_onnx(m, "nano")
    assert [(p.node, p.op) for p in nano.errors] == [("select", "TopK")]
    assert "K" in nano.errors[0].message
    assert any(p.op == "INT64" for p in nano.warnings)
    desktop = check_onnx(m, "desktop")
    assert desktop.ok and not desktop.problems  # TensorRT 10: runtime K and INT64 are fine


def test_nms_custom_domain_resize_and_maxpool_indices():
    nodes = [
        helper.make_node("MaxPool", ["images"], ["p", "idx"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Resize", ["p", "", "scales"], ["r"], name="up", mode="cubic"),
        helper.make_node("MyPlugin", ["r"], ["q"], name="plugin", domain="com.example"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["keep"], name="nms"),
    ]
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    inputs = [X, fvi("boxes", [1, 10, 4]), fvi("scores", [1, 1, 10])]
    outs = [fvi("q", [1, 3, 8, 8]), helper.make_tensor_value_info("keep", TensorProto.INT64, [None, 3]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 3, 4, 4])]  # fmt: skip
    m = model_of(nodes, inputs, outs, inits)
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    nano = check_onnx(m, "nano")
    found = {(p.node, p.op) for p in nano.errors}
    assert found == {
        ("pool", "MaxPool"),
        ("up", "Resize"),
        ("plugin", "MyPlugin"),
        ("nms", "NonMaxSuppression"),
    }
    assert any("cubic" in p.message for p in nano.errors)
    assert any("plugin" in p.message for p in nano.errors if p.op == "MyPlugin")


def test_ops_inside_subgraphs_are_checked():
    then = helper.make_graph([helper.make_node("NonZero", ["images"], ["nz"], name="inner_nz")], "then", [],
                             [helper.make_tensor_value_info("nz", TensorProto.INT64, [4, None])])  # fmt: skip
    other = helper.make_graph([helper.make_node("Shape", ["images"], ["sh"], name="inner_shape")], "else", [],
                              [helper.make_tensor_value_info("sh", TensorProto.INT64, [4])])  # fmt: skip
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    node = helper.make_node(
        "If", ["cond"], ["o"], name="branch", then_branch=then, else_branch=other
    )
    m = model_of([node], [X, cond], [helper.make_tensor_value_info("o", TensorProto.INT64, None)])
    nano = check_onnx(m, "nano")
    assert ("inner_nz", "NonZero") in {(p.node, p.op) for p in nano.errors}


def test_dynamic_input_error_on_nano_warning_on_desktop():
    m = model_of([helper.make_node("Relu", ["images"], ["y"], name="r")],
                 [fvi("images", ["batch", 3, 8, 8])], [fvi("y", ["batch", 3, 8, 8])])  # fmt: skip
    assert [p.op for p in check_onnx(m, "nano").errors] == ["input"]
    desktop = check_onnx(m, "desktop")
    assert desktop.ok and [p.op for p in desktop.warnings] == ["input"]


def test_cli_exit_codes_and_json(tmp_path, capsys):
    bad = model_of([helper.make_node("NonZero", ["images"], ["nz"], name="find")],
                   [X], [helper.make_tensor_value_info("nz", TensorProto.INT64, [4, None])])  # fmt: skip
    path = tmp_path / "bad.onnx"
    onnx.save(bad, str(path))
    assert export_main(["check", str(path), "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "find [NonZero]" in out and "1 error(s)" in out
    assert '"ok": false' in (tmp_path / "r.json").read_text()
    assert export_main(["check", str(path), "--target", "desktop"]) == 0
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.onnx: not a readable ONNX"):
        check_onnx(tmp_path / "junk.onnx")
