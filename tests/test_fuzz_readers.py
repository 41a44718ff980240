"""Bounded fuzzing (hypothesis) of every reader a user's file reaches: any input gives a result
or the reader's one clear error (naming the file), never another exception or a hang."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from compress.data.readers import parse_voc_annotation, parse_yolo_label, read_coco  # noqa: E402
from compress.data.records import DataError  # noqa: E402
from compress.models.darknet_cfg import CfgError, parse_cfg  # noqa: E402
from compress.models.darknet_weights import WeightsError, load_weights  # noqa: E402
from compress.models.yolo import YOLO  # noqa: E402
from export.bundle import BundleError  # noqa: E402
from export.trt.onnx_meta import read_bundle_meta, read_props_wire  # noqa: E402
from tests.train_support import TINY_YOLO_CFG  # noqa: E402

# A few seconds each on 2 shared cores; the temp folder is reused across examples.
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

WORDS = st.sampled_from(
    ["0", "1", "-1", "3", "16", "1e9", "-0.5", "nan", "inf", "x", "", "1,2", "leaky", "linear",
     "mish", "2,,3", " ", "999999999999999999999", "0x10", "１"]
)  # fmt: skip
SECTIONS = st.sampled_from(
    ["net", "convolutional", "maxpool", "route", "shortcut", "upsample", "yolo", "dropout", ""]
)
KEYS = st.sampled_from(
    ["filters", "size", "stride", "pad", "padding", "groups", "batch_normalize", "activation",
     "layers", "from", "mask", "anchors", "classes", "num", "width", "height", "scale_x_y"]
)  # fmt: skip


@st.composite
def cfg_texts(draw) -> str:
    """Darknet-shaped text: known and unknown sections, keys and values, plus stray lines."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        lines.append(f"[{draw(SECTIONS)}]")
        for _ in range(draw(st.integers(0, 6))):
            lines.append(f"{draw(KEYS)}={draw(WORDS)}")
        if draw(st.booleans()):
            lines.append(draw(st.text(max_size=12)))
    return "\n".join(lines)


def _small(cfg: str) -> bool:
    """Only build models whose every number is small (a fuzzer's filters=1e9 would just eat
    memory, which is not the reader's failure)."""
    return "999999" not in cfg and "1e9" not in cfg


@FUZZ
@given(text=st.one_of(cfg_texts(), st.text(max_size=200)), mutate=st.booleans())
def test_cfg_reader_and_builder(text: str, mutate: bool) -> None:
    if mutate:  # real cfg with one of its lines replaced by fuzz
        lines = TINY_YOLO_CFG.splitlines()
        lines[len(text) % len(lines)] = text.splitlines()[0] if text.splitlines() else ""
        text = "\n".join(lines)
    if "\n" not in text and not text.lstrip().startswith("["):
        text += "\n"  # a string without either is read as a path
    try:
        blocks = parse_cfg(text)
    except CfgError:
        return
    assert blocks and all("type" in b for b in blocks)
    if _small(text):
        try:
            YOLO.from_cfg(text, 64, ["person"])
        except CfgError as exc:
            assert str(exc)


@pytest.fixture(scope="module")
def tiny_model():
    return YOLO.from_cfg(TINY_YOLO_CFG, 64, ["person"])


@FUZZ
@given(data=st.binary(max_size=400), keep=st.integers(0, 12000))
def test_weights_reader(tmp_path, tiny_model, data: bytes, keep: int) -> None:
    from compress.models.darknet_weights import weights_bytes

    path = tmp_path / "w.weights"
    good = weights_bytes(tiny_model)
    path.write_bytes(data if len(data) % 2 else good[:keep] + data)
    try:
        load_weights(tiny_model, path)
    except WeightsError as exc:
        assert "w.weights" in str(exc)


@FUZZ
@given(
    text=st.one_of(
        st.binary(max_size=200),
        st.lists(st.lists(WORDS, max_size=7).map(" ".join), max_size=6).map(
            lambda rows: "\n".join(rows).encode()
        ),
    )
)
def test_yolo_label_reader(tmp_path, text: bytes) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(text)
    try:
        cls, boxes = parse_yolo_label(path, 80)
    except DataError as exc:
        assert "a.txt" in str(exc)
        return
    assert len(cls) == len(boxes) and boxes.shape[1:] == (4,)
    assert np.isfinite(boxes).all()


VOC_TAGS = st.sampled_from(
    ["annotation", "size", "width", "height", "object", "name", "bndbox", "xmin", "ymin", "xmax",
     "ymax", "difficult"]
)  # fmt: skip


@st.composite
def xml_texts(draw, depth: int = 0) -> str:
    tag = draw(VOC_TAGS)
    if depth > 2 or draw(st.booleans()):
        body = draw(st.one_of(WORDS, st.just("person"), st.text(max_size=6)))
        body = body.replace("<", "").replace("&", "")
    else:
        body = "".join(draw(st.lists(xml_texts(depth + 1), max_size=4)))
    return f"<{tag}>{body}</{tag}>"


@FUZZ
@given(xml=st.one_of(xml_texts(), st.binary(max_size=120)))
@example(xml="<size><width>person</width></size>")  # once a ValueError traceback
def test_voc_reader(tmp_path, xml) -> None:
    path = tmp_path / "a.xml"
    path.write_bytes(xml if isinstance(xml, bytes) else f"<annotation>{xml}</annotation>".encode())
    try:
        w, h, boxes, labels, difficult = parse_voc_annotation(path, ["person"])
    except DataError as exc:
        assert "a.xml" in str(exc)
        return
    assert len(boxes) == len(labels) == len(difficult)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10) | st.floats(allow_nan=False) | WORDS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(WORDS, children, max_size=3),
    max_leaves=10,
)


@st.composite
def coco_docs(draw) -> object:
    image = st.fixed_dictionaries(
        {"id": JSONISH | st.integers(1, 3), "file_name": st.just("a.jpg") | JSONISH,
         "width": st.integers(1, 64) | JSONISH, "height": st.integers(1, 64) | JSONISH}
    )  # fmt: skip
    ann = st.fixed_dictionaries(
        {"image_id": st.integers(1, 3) | JSONISH, "category_id": st.just(1) | JSONISH,
         "bbox": st.lists(st.floats(-5, 80) | JSONISH, max_size=5) | JSONISH}
    )  # fmt: skip
    doc = {
        "images": draw(st.lists(image, max_size=3) | JSONISH),
        "annotations": draw(st.lists(ann | JSONISH, max_size=4) | JSONISH),
        "categories": draw(
            st.just([{"id": 1, "name": "person"}]) | st.lists(JSONISH, max_size=2) | JSONISH
        ),
    }
    return doc if draw(st.integers(0, 9)) else draw(JSONISH)


@FUZZ
@given(doc=coco_docs())
def test_coco_reader(tmp_path, doc) -> None:
    import cv2

    (tmp_path / "val").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "val" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    cfg = {"format": "coco", "root": str(tmp_path), "split": "val", "annotations": "ann.json"}
    try:
        records, _ = read_coco(cfg)
    except DataError as exc:
        assert "ann.json" in str(exc)
        return
    for r in records:
        assert r.boxes.shape[1:] == (4,) and len(r.boxes) == len(r.labels)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


@FUZZ
@given(
    parts=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 7), st.binary(max_size=30)), max_size=6
    ),
    tail=st.binary(max_size=40),
)
def test_onnx_metadata_reader(tmp_path, parts, tail) -> None:
    """Wire-format-shaped bytes (fields, lengths that lie, nested metadata entries) and noise."""
    data = b""
    for number, wire, payload in parts:
        data += _varint(number << 3 | wire)
        data += _varint(len(payload)) + payload if wire == 2 else payload[:8]
    data += tail
    try:
        props = read_props_wire(data)
    except ValueError:
        props = None
    assert props is None or all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    try:
        read_bundle_meta(path)
    except BundleError as exc:
        assert "m.onnx" in str(exc)


@pytest.fixture(scope="module")
def mjpeg_server():
    from edge_runtime.mjpeg import MjpegServer

    server = MjpegServer("127.0.0.1", 0, title="fuzz")
    yield server
    server.close()


REQUEST_LINES = st.one_of(
    st.binary(max_size=300),
    st.tuples(
        st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"get", b""]),
        st.sampled_from([b"/", b"/stream.mjpg", b"/stats.json", b"/../etc/passwd", b"/%ff", b""])
        | st.binary(max_size=40),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9", b""]),
        st.lists(st.binary(max_size=30), max_size=4),
    ).map(lambda t: b" ".join(t[:3]) + b"\r\n" + b"\r\n".join(t[3]) + b"\r\n\r\n"),
)


@FUZZ
@given(request=REQUEST_LINES)
def test_mjpeg_http_handler(mjpeg_server, capfd, request: bytes) -> None:
    with socket.create_connection((mjpeg_server.host, mjpeg_server.port), timeout=5) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(3)
        try:
            sock.recv(256)  # an answer, an HTTP/0.9 bare body, or a closed connection
        except ConnectionResetError:
            pass
        except TimeoutError:
            # Silence is a hang, except on the stream: it waits for the loop's next frame
            # (and an HTTP/0.9 request gets no headers before it).
            assert b"/stream.mjpg" in request
    with urllib.request.urlopen(mjpeg_server.url + "stats.json", timeout=5) as r:
        assert r.status == 200  # still serving
    assert "Traceback" not in capfd.readouterr().err


def test_fuzz_files_are_not_left_behind(tmp_path: Path) -> None:
    assert list(tmp_path.iterdir()) == []
