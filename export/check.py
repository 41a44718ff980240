"""Will TensorRT build this ONNX file? Answered on the workstation, without TensorRT.

    python -m export check model.onnx --target nano      # TensorRT 8.2.1 (JetPack 4.6)
    python -m export check model.onnx --target desktop   # TensorRT 10

Checks the opset range, every node (subgraphs included) against the target's ONNX parser
support list (`export.trt_support`), the documented per-op restrictions (constant TopK K,
constant Slice/Squeeze/Unsqueeze axes, Resize modes, MaxPool indices), ops the bundle must
not carry (NonMaxSuppression), static input shapes, and INT64/DOUBLE tensors that TensorRT
casts down. Each problem names the node and op; the command exits 1 when any is an error.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
from onnx import numpy_helper

from edge_runtime.user_errors import UserError
from export.trt_support import (
    RESIZE_COORDINATE_MODES,
    RESIZE_MODES,
    RESIZE_NEAREST_MODES,
    TARGETS,
)

DEFAULT_DOMAINS = ("", "ai.onnx")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass
class Problem:
    severity: str  # "error" | "warning"
    node: str
    op: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity:7s} {self.node or '-'} [{self.op}] {self.message}"


@dataclass
class CheckReport:
    path: str
    target: str
    tensorrt: str
    opset: int
    ops: dict[str, int]
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def unsupported_ops(self) -> set[str]:
        return {p.op for p in self.errors}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def format(self) -> str:
        head = (
            f"{self.path}: TensorRT {self.tensorrt} ({self.target}), opset {self.opset}, "
            f"{sum(self.ops.values())} nodes: "
            + ("OK" if self.ok else f"{len(self.errors)} error(s)")
            + (f", {len(self.warnings)} warning(s)" if self.warnings else "")
        )
        return "\n".join([head] + [f"  {p}" for p in self.problems])

    def raise_for_errors(self) -> CheckReport:
        if not self.ok:
            raise TrtCompatibilityError(self.format())
        return self


class TrtCompatibilityError(UserError, ValueError):
    """TensorRT's parser or builder would refuse this model (the message lists why)."""


# --- per-op rules: (node, constants, target spec) -> problems ---------------------------------

Rule = Callable[[onnx.NodeProto, set, dict], Iterator[Problem]]


def _name(node: onnx.NodeProto) -> str:
    """The node's name, or its first output's when the exporter left it unnamed."""
    return node.name or (f"(output {node.output[0]})" if node.output else "(unnamed)")


def _input_constant(index: int, what: str) -> Rule:
    def rule(node, constants, spec):
        op = node.op_type
        if op not in spec["restrictions"]:
            return
        if len(node.input) > index and node.input[index] and node.input[index] not in constants:
            yield Problem(
                "error",
                _name(node),
                node.op_type,
                f"{what} ('{node.input[index]}') is computed at run time; TensorRT "
                f"{spec['tensorrt']} needs it constant ({spec['restrictions'][op]})",
            )

    return rule


def _maxpool_indices(node, constants, spec):
    if len(node.output) > 1 and node.output[1]:
        yield Problem(
            "error", _name(node), node.op_type, "the Indices output is unsupported by TensorRT"
        )


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _resize_modes(node, constants, spec):
    checks = (
        ("mode", "nearest", RESIZE_MODES),
        ("coordinate_transformation_mode", "half_pixel", RESIZE_COORDINATE_MODES),
        ("nearest_mode", "round_prefer_floor", RESIZE_NEAREST_MODES),
    )
    for name, default, allowed in checks:
        value = _attr(node, name, default)
        if value not in allowed:
            yield Problem(
                "error",
                _name(node),
                node.op_type,
                f"{name}={value!r} unsupported (TensorRT: {', '.join(allowed)})",
            )
    if _attr(node, "antialias", 0):
        yield Problem("error", _name(node), node.op_type, "antialiasing is unsupported")


RULES: dict[str, Rule] = {
    "Conv": _input_constant(1, "the weights"),
    "ConvTranspose": _input_constant(1, "the weights"),
    "TopK": _input_constant(1, "K"),
    "Slice": _input_constant(3, "axes"),
    "Squeeze": _input_constant(1, "axes"),
    "Unsqueeze": _input_constant(1, "axes"),
    "MaxPool": _maxpool_indices,
    "Resize": _resize_modes,
}


# --- graph walks --------------------------------------------------------------------------------


def _walk(graph: onnx.GraphProto, constants: set) -> Iterator[tuple[onnx.NodeProto, set]]:
    """Every node with the names known constant in its scope, subgraphs (If/Loop/Scan) too."""
    constants = constants | {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:
        yield node, constants
        for a in node.attribute:
            subgraphs = list(a.graphs) + ([a.g] if a.HasField("g") else [])
            for sub in subgraphs:
                yield from _walk(sub, constants)


def _tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    for t in graph.initializer:
        yield t.name, t
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    yield node.output[0], a.t
        for a in node.attribute:
            for sub in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                yield from _tensors(sub)


def _check_opset(model: onnx.ModelProto, spec: dict) -> tuple[int, list[Problem]]:
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
    if not spec["opset_min"] <= opset <= spec["opset_max"]:
        problems.append(
            Problem(
                "error",
                "",
                "opset",
                f"opset {opset} is outside TensorRT {spec['tensorrt']}'s range "
                f"{spec['opset_min']}-{spec['opset_max']}: export with --opset {min(13, spec['opset_max'])}",
            )
        )
    return opset, problems


def _check_nodes(model: onnx.ModelProto, spec: dict) -> tuple[Counter, list[Problem]]:
    ops: Counter = Counter()
    problems = []
    for node, constants in _walk(model.graph, set()):
        ops[node.op_type] += 1
        if node.domain not in DEFAULT_DOMAINS:
            problems.append(
                Problem(
                    "error",
                    _name(node),
                    node.op_type,
                    f"custom op of domain '{node.domain}': needs a TensorRT plugin",
                )
            )
            continue
        if node.op_type not in spec["ops"]:
            problems.append(
                Problem(
                    "error",
                    _name(node),
                    node.op_type,
                    f"not supported by TensorRT {spec['tensorrt']}'s ONNX parser "
                    f"(it fails with 'No importer registered for op: {node.op_type}')",
                )
            )
            continue
        if node.op_type in spec["forbidden"]:
            problems.append(
                Problem("error", _name(node), node.op_type, spec["forbidden"][node.op_type])
            )
        rule = RULES.get(node.op_type)
        if rule is not None:
            problems.extend(rule(node, constants, spec))
    return ops, problems


def _check_inputs(model: onnx.ModelProto, spec: dict) -> list[Problem]:
    problems = []
    initializers = {t.name for t in model.graph.initializer}
    severity = "error" if spec["static_shapes"] else "warning"
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        if any(not isinstance(d, int) or d <= 0 for d in shape):
            problems.append(
                Problem(
                    severity,
                    inp.name,
                    "input",
                    f"dynamic shape {shape}: export a static 1x3xHxW input (no --dynamic-batch) "
                    "for this target"
                    if severity == "error"
                    else f"dynamic shape {shape}: the engine needs an optimization profile",
                )
            )
        elif len(shape) != 4 or shape[1] != 3:
            problems.append(Problem("warning", inp.name, "input", f"shape {shape} is not Nx3xHxW"))
    return problems


def _check_dtypes(model: onnx.ModelProto, spec: dict) -> list[Problem]:
    int64, clamped, double = [], [], []
    for name, t in _tensors(model.graph):
        if t.data_type == onnx.TensorProto.INT64:
            int64.append(name)
            values = numpy_helper.to_array(t)
            if values.size and (values.min() < INT32_MIN or values.max() > INT32_MAX):
                clamped.append(name)
        elif t.data_type == onnx.TensorProto.DOUBLE:
            double.append(name)
    problems = []
    if int64 and not spec["int64"]:
        problems.append(
            Problem(
                "warning",
                ", ".join(int64[:5]) + (f" (+{len(int64) - 5} more)" if len(int64) > 5 else ""),
                "INT64",
                f"{len(int64)} INT64 constant(s): TensorRT casts them to INT32"
                + (
                    f"; {len(clamped)} hold values beyond INT32 and get clamped (e.g. Slice ends)"
                    if clamped
                    else ""
                ),
            )
        )
    if double:
        problems.append(
            Problem(
                "warning",
                ", ".join(double[:5]),
                "DOUBLE",
                f"{len(double)} DOUBLE constant(s): cast down to FLOAT",
            )
        )
    return problems


def check_model(model: onnx.ModelProto, target: str = "nano", path: str = "<model>") -> CheckReport:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    spec = TARGETS[target]
    opset, problems = _check_opset(model, spec)
    ops, node_problems = _check_nodes(model, spec)
    problems += node_problems + _check_inputs(model, spec) + _check_dtypes(model, spec)
    return CheckReport(path, target, spec["tensorrt"], opset, dict(sorted(ops.items())), problems)


def is_engine_file(path: str | Path) -> bool:
    """A serialized TensorRT engine: its suffix, or the 'ftrt' tag at the start of the file."""
    if Path(path).suffix.lower() in (".plan", ".engine", ".trt"):
        return True
    try:
        with open(path, "rb") as f:
            return b"ftrt" in f.read(8)
    except OSError:
        return False


def check_onnx(path: str | Path | onnx.ModelProto, target: str = "nano") -> CheckReport:
    """Check an ONNX file (or a loaded model) for the target's TensorRT; see `CheckReport`."""
    if isinstance(path, onnx.ModelProto):
        return check_model(path, target)
    if is_engine_file(path):
        raise TrtCompatibilityError(
            f"{path}: is a TensorRT engine, not ONNX; check the .onnx it was built from"
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError, ...: all mean unreadable
        raise TrtCompatibilityError(f"{path}: not a readable ONNX file ({exc})") from exc
    return check_model(model, target, str(path))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("onnx", help="ONNX file to check")
    parser.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default="nano",
        help="nano = TensorRT 8.2 (JetPack 4.6), desktop = TensorRT 10",
    )
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    parser.add_argument("--strict", action="store_true", help="warnings fail too")
    return parser


def main(args: argparse.Namespace) -> int:
    if not Path(args.onnx).is_file():
        raise SystemExit(f"{args.onnx}: no such ONNX file")
    report = check_onnx(args.onnx, args.target)
    print(report.format())
    if args.json:
        from compress.io import write_json

        write_json(args.json, report.to_dict())
    failed = not report.ok or (args.strict and report.warnings)
    return 1 if failed else 0
