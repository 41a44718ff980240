"""Read a bundle's metadata from an ONNX file on the device, where `onnx` may be absent.

With the `onnx` package it is a plain `onnx.load`; without it a small protobuf wire-format
walk picks `ModelProto.metadata_props` (field 14, entries of key = 1 / value = 2) and skips
everything else, so the weights are never decoded. Torch-free, Python 3.6.
"""

from export import bundle

_METADATA_PROPS = 14
_KEY, _VALUE = 1, 2


def _varint(buf, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """(field number, wire type, value) of one protobuf message; value is bytes for type 2."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError("unsupported protobuf wire type {}".format(wire))
        if pos > len(buf):
            raise ValueError("truncated message")
        yield number, wire, value


def read_props_wire(data):
    """ONNX file bytes -> {key: value} of metadata_props, without the onnx package."""
    buf = memoryview(data)
    props = {}
    for number, wire, value in _fields(buf):
        if number != _METADATA_PROPS or wire != 2:
            continue
        entry = dict((n, bytes(v).decode("utf-8")) for n, w, v in _fields(value) if w == 2)
        props[entry.get(_KEY, "")] = entry.get(_VALUE, "")
    return props


def read_props(path):
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except OSError:
            raise
        except Exception as exc:  # protobuf's DecodeError and kin: the bytes are not ONNX
            raise bundle.BundleError(
                "{}: not a readable ONNX file ({})".format(path, str(exc).strip())
            ) from exc
        return dict((p.key, p.value) for p in model.metadata_props)
    with open(str(path), "rb") as f:
        data = f.read()
    try:
        return read_props_wire(data)
    except ValueError as exc:
        raise bundle.BundleError("{}: not a readable ONNX file ({})".format(path, exc)) from exc


def read_bundle_meta(path):
    """The nanoprune bundle metadata of an ONNX file (BundleError when it has none)."""
    return bundle.from_props(read_props(path), source=str(path))
