"""Read a TensorFlow frozen GraphDef (.pb) without TensorFlow.

TensorFlow's protobuf schema is declared here as a descriptor, with the field numbers of
`tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto`, and
turned into message classes by the `protobuf` runtime that onnx already needs. Only the
fields an importer reads are declared; protobuf skips the others on the wire, so this parses
any frozen graph. Enum fields (DataType) are declared as int32, which is wire-identical.
Chosen over installing `tensorflow` (~600 MB) or `tensorboard` (pulls grpcio, werkzeug, ...)
for two hundred lines of schema.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from edge_runtime.user_errors import UserError

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_KIND = {
    "bytes": _F.TYPE_BYTES,
    "string": _F.TYPE_STRING,
    "int64": _F.TYPE_INT64,
    "int32": _F.TYPE_INT32,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
}

# message -> [(field name, number, type or ".tfsub.Message", repeated)]
_SCHEMA: dict[str, list[tuple[str, int, str, bool]]] = {
    "Dim": [("size", 1, "int64", False), ("name", 2, "string", False)],
    "TensorShapeProto": [("dim", 2, ".tfsub.Dim", True), ("unknown_rank", 3, "bool", False)],
    "TensorProto": [
        ("dtype", 1, "int32", False),
        ("tensor_shape", 2, ".tfsub.TensorShapeProto", False),
        ("tensor_content", 4, "bytes", False),
        ("float_val", 5, "float", True),
        ("double_val", 6, "double", True),
        ("int_val", 7, "int32", True),
        ("string_val", 8, "bytes", True),
        ("int64_val", 10, "int64", True),
        ("bool_val", 11, "bool", True),
        ("half_val", 13, "int32", True),
    ],
    "ListValue": [
        ("s", 2, "bytes", True),
        ("i", 3, "int64", True),
        ("f", 4, "float", True),
        ("b", 5, "bool", True),
        ("type", 6, "int32", True),
        ("shape", 7, ".tfsub.TensorShapeProto", True),
        ("tensor", 8, ".tfsub.TensorProto", True),
    ],
    "AttrValue": [
        ("list", 1, ".tfsub.ListValue", False),
        ("s", 2, "bytes", False),
        ("i", 3, "int64", False),
        ("f", 4, "float", False),
        ("b", 5, "bool", False),
        ("type", 6, "int32", False),
        ("shape", 7, ".tfsub.TensorShapeProto", False),
        ("tensor", 8, ".tfsub.TensorProto", False),
        ("placeholder", 9, "string", False),
    ],
    "AttrEntry": [("key", 1, "string", False), ("value", 2, ".tfsub.AttrValue", False)],
    "NodeDef": [
        ("name", 1, "string", False),
        ("op", 2, "string", False),
        ("input", 3, "string", True),
        ("device", 4, "string", False),
        ("attr", 5, ".tfsub.AttrEntry", True),  # map<string, AttrValue> on the wire
    ],
    "GraphDef": [("node", 1, ".tfsub.NodeDef", True)],
}
_ONEOF = {"AttrValue": {"list", "s", "i", "f", "b", "type", "shape", "tensor", "placeholder"}}

# TensorFlow DataType enum values -> numpy dtypes (types.proto)
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}
_VALUE_FIELD = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    9: "int64_val",
    10: "bool_val",
}


class GraphError(UserError, ValueError):
    pass


@cache
def graph_def_class() -> type:
    """The GraphDef message class, built once from the schema above."""
    fdp = descriptor_pb2.FileDescriptorProto(name="tfsub.proto", package="tfsub", syntax="proto3")
    for msg_name, fields in _SCHEMA.items():
        msg = fdp.message_type.add(name=msg_name)
        if msg_name in _ONEOF:
            msg.oneof_decl.add(name="value")
        for name, number, kind, repeated in fields:
            f = msg.field.add(name=name, number=number, label=_REP if repeated else _OPT)
            if kind.startswith("."):
                f.type, f.type_name = _F.TYPE_MESSAGE, kind
            else:
                f.type = _KIND[kind]
            if msg_name in _ONEOF and name in _ONEOF[msg_name]:
                f.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tfsub.GraphDef"))


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A TensorProto (packed content or repeated values, possibly one broadcast value)."""
    if tensor.dtype not in DTYPES:
        raise GraphError(f"tensor dtype {tensor.dtype} is not supported by the importer")
    dtype = DTYPES[tensor.dtype]
    shape = [d.size for d in tensor.tensor_shape.dim]
    count = int(np.prod(shape)) if shape else 1
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
    if tensor.dtype == 19:
        values = np.array(tensor.half_val, dtype=np.uint16).view(np.float16)
    else:
        values = np.array(getattr(tensor, _VALUE_FIELD[tensor.dtype]), dtype=dtype)
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1:  # TF stores a constant fill as one value
        return np.full(shape, values[0], dtype=dtype)
    if values.size == 0:
        return np.zeros(shape, dtype=dtype)
    raise GraphError(f"tensor holds {values.size} values for shape {shape}")


class Graph:
    """Nodes of a frozen graph by name, with constants as numpy arrays."""

    def __init__(self, graph_def: Any, source: str = "<graph>") -> None:
        self.source = source
        self.nodes: dict[str, Any] = {n.name: n for n in graph_def.node}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Graph:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise GraphError(f"frozen graph not found: {path}") from None
        graph_def = graph_def_class()()
        try:
            graph_def.ParseFromString(data)
        except Exception as exc:  # protobuf raises DecodeError or RuntimeError by backend
            raise GraphError(f"{path}: not a TensorFlow GraphDef ({exc})") from None
        if not graph_def.node:
            raise GraphError(f"{path}: the GraphDef holds no nodes")
        return cls(graph_def, str(path))

    def attr(self, node_name: str, key: str) -> Any:
        for entry in self.node(node_name).attr:
            if entry.key == key:
                return entry.value
        raise GraphError(f"{self.source}: node {node_name!r} has no attribute {key!r}")

    def node(self, name: str) -> Any:
        name = name.lstrip("^").split(":")[0]
        if name not in self.nodes:
            raise GraphError(f"{self.source}: no node named {name!r}")
        return self.nodes[name]

    def const(self, name: str) -> np.ndarray:
        """The value of a Const node, following Identity nodes (frozen variables' reads)."""
        node = self.node(name)
        while node.op == "Identity":
            node = self.node(node.input[0])
        if node.op != "Const":
            raise GraphError(f"{self.source}: {name!r} is a {node.op}, not a constant")
        return tensor_to_numpy(self.attr(node.name, "value").tensor)

    def has(self, name: str) -> bool:
        return name in self.nodes
