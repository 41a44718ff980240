"""onnx-simplifier on a bundle, keeping its metadata (host only: onnxsim has no Nano wheel).

Constant folding turns the legacy exporter's shape arithmetic (Shape -> Gather -> Concat ->
Reshape) into initializers, which TensorRT 8.2 needs for Reshape targets and Slice axes.
"""

from __future__ import annotations

import onnx


def simplify_model(model: onnx.ModelProto, check_n: int = 0) -> tuple[onnx.ModelProto, dict]:
    """(simplified model, report). A model onnxsim cannot simplify comes back unchanged with
    the reason in the report, so export still works (simplification is an optimization)."""
    import onnxsim

    nodes_before = len(model.graph.node)
    props = {p.key: p.value for p in model.metadata_props}
    try:
        simplified, ok = onnxsim.simplify(model, check_n=check_n)
    except Exception as exc:  # onnxsim raises bare RuntimeErrors from its C++ core
        return model, {
            "simplified": False,
            "reason": f"onnxsim failed: {exc}",
            "nodes": nodes_before,
        }
    if not ok:
        return model, {
            "simplified": False,
            "reason": "onnxsim's own check failed",
            "nodes": nodes_before,
        }
    # onnxsim rebuilds the model; put the bundle metadata back exactly as it was
    del simplified.metadata_props[:]
    onnx.helper.set_model_props(simplified, props)
    return simplified, {
        "simplified": True,
        "onnxsim": getattr(onnxsim, "__version__", "unknown"),
        "nodes_before": nodes_before,
        "nodes": len(simplified.graph.node),
    }
