"""Darknet cfg and weights I/O: parsing quirks, round trips, clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from compress.models.darknet_cfg import CfgError, drop_blocks, parse_cfg, split_net, write_cfg
from compress.models.darknet_weights import (
    WeightsError,
    load_weights,
    read_header,
    save_weights,
    weights_bytes,
)
from compress.models.yolo import YOLO
from tests.conftest import need

SMALL = """
[net]
# a comment
; another comment
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=8
size=1
stride=1
pad=1
activation=leaky    # inline comment

[shortcut]
from=-2
activation=linear

[route]
layers = -1, 0

[convolutional]
size=1
stride=1
pad=1
filters=12
activation=linear

[yolo]
mask = 0,1
anchors = 8,8, 24,24
classes=1
num=2
"""


def test_parse_types_comments_and_sections():
    blocks = parse_cfg(SMALL)
    net, layers = split_net(blocks)
    assert net["width"] == 64 and [b["type"] for b in layers] == [
        "convolutional",
        "convolutional",
        "shortcut",
        "route",
        "convolutional",
        "yolo",
    ]
    assert layers[1]["activation"] == "leaky"  # inline comment stripped
    assert layers[2]["from"] == [-2] and layers[3]["layers"] == [-1, 0]
    assert layers[5]["anchors"] == [8, 8, 24, 24] and layers[5]["mask"] == [0, 1]
    assert blocks[1].line == 9 and "<cfg text>:9" in blocks[1].where()


def test_repeated_key_keeps_first_value_like_darknet():
    text = "[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=8\nfilters=16\nsize=1\n"
    with pytest.warns(UserWarning, match="filters repeats"):
        blocks = parse_cfg(text)
    assert blocks[1]["filters"] == 8 and blocks[1].repeated == ["filters"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("width=3\n[net]\n", ":1: 'width=3' comes before any"),
        ("[net]\nwidth 3\n", ":2: expected key=value"),
        ("[net\nwidth=3\n", ":1: bad section header"),
        ("", "no [sections]"),
    ],
)
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(CfgError, match=message.replace("[", r"\[")):
        parse_cfg(text or "\n")


def test_build_errors_name_file_line_and_layer(tmp_path):
    bad = SMALL.replace("from=-2", "from=-9")
    path = tmp_path / "bad.cfg"
    path.write_text(bad)
    with pytest.raises(CfgError, match=r"bad\.cfg:\d+ \[shortcut\].*outside"):
        YOLO.from_cfg(path)
    with pytest.raises(CfgError, match=r"\[mystery\] unsupported"):
        YOLO.from_cfg(SMALL.replace("[route]", "[mystery]"))
    with pytest.raises(CfgError, match=r"has 12 channels.*needs 16"):
        YOLO.from_cfg(SMALL.replace("classes=1", "classes=3"))


@pytest.mark.parametrize("name", ["yolov3-tiny.cfg", "yolov3.cfg", "yolov3-spp.cfg"])
def test_cfg_round_trip(assets, name):
    (path,) = need(assets, f"darknet/{name}")
    blocks = parse_cfg(path)
    again = parse_cfg(write_cfg(blocks))
    assert again == blocks
    model = YOLO.from_cfg(path, 128)
    assert parse_cfg(model.to_cfg())[1:] == blocks[1:]


def test_to_cfg_writes_the_modules_real_widths():
    model = YOLO.from_cfg(SMALL)
    # what an in-place pruner (Torch-Pruning) does: replace the conv with a narrower one
    model.module_list[0].conv = torch.nn.Conv2d(3, 6, 3, 2, 1, bias=False)
    assert parse_cfg(model.to_cfg())[1]["filters"] == 6


def test_weights_round_trip_small_and_header(tmp_path):
    torch.manual_seed(0)
    model = YOLO.from_cfg(SMALL)
    path = save_weights(model, tmp_path / "a.weights")
    data = path.read_bytes()
    assert read_header(data) == ((0, 2, 0, 0), 20)
    other = YOLO.from_cfg(SMALL)
    load_weights(other, path)
    assert weights_bytes(other) == data
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


def test_old_header_with_int32_seen(tmp_path):
    model = YOLO.from_cfg(SMALL)
    path = save_weights(model, tmp_path / "old.weights", header=(0, 1, 0, 77))
    assert read_header(path.read_bytes()) == ((0, 1, 0, 77), 16)
    load_weights(YOLO.from_cfg(SMALL), path)


def test_truncated_and_mismatched_weights_say_expected_and_found(tmp_path):
    model = YOLO.from_cfg(SMALL)
    data = weights_bytes(model)
    need_floats = (len(data) - 20) // 4
    (tmp_path / "cut.weights").write_bytes(data[:-40])
    with pytest.raises(
        WeightsError, match=rf"cut\.weights.*need {need_floats} floats.*holds {need_floats - 10}"
    ):
        load_weights(YOLO.from_cfg(SMALL), tmp_path / "cut.weights")
    (tmp_path / "odd.weights").write_bytes(data + b"\0\0")
    with pytest.raises(WeightsError, match="not a whole number"):
        load_weights(YOLO.from_cfg(SMALL), tmp_path / "odd.weights")
    wider = YOLO.from_cfg(SMALL.replace("filters=8", "filters=16"))
    with pytest.raises(WeightsError, match="mismatch"):
        load_weights(wider, tmp_path / "cut.weights")
    with pytest.raises(FileNotFoundError, match="nowhere.weights"):
        load_weights(model, tmp_path / "nowhere.weights")


def test_non_strict_loads_a_backbone_prefix(tmp_path):
    torch.manual_seed(1)
    model = YOLO.from_cfg(SMALL)
    first = model.module_list[0]
    n = sum(
        t.numel()
        for t in (
            first.bn.bias,
            first.bn.weight,
            first.bn.running_mean,
            first.bn.running_var,
            first.conv.weight,
        )
    )
    (tmp_path / "prefix.weights").write_bytes(weights_bytes(model)[: 20 + 4 * n])
    other = YOLO.from_cfg(SMALL)
    load_weights(other, tmp_path / "prefix.weights", strict=False)
    assert torch.equal(other.module_list[0].conv.weight, first.conv.weight)


@pytest.mark.assets
def test_real_yolov3_tiny_weights_round_trip_byte_for_byte(assets, tmp_path):
    cfg, weights = need(assets, "darknet/yolov3-tiny.cfg", "darknet/yolov3-tiny.weights")
    model = YOLO.from_cfg(cfg)
    load_weights(model, weights)
    assert model.weights_header == (0, 2, 0, 32013312)
    out = save_weights(model, tmp_path / "copy.weights")
    assert out.read_bytes() == weights.read_bytes()


def test_drop_blocks_renumbers_routes_and_shortcuts():
    net, blocks = split_net(parse_cfg(YOLOV3_LIKE))
    # drop the second residual unit (layers 4, 5, 6); the route to 6 moves to 3
    new = drop_blocks(blocks, {4, 5, 6})
    assert len(new) == len(blocks) - 3
    route = next(b for b in new if b["type"] == "route")
    assert route["layers"] == [-1, 3]
    model = YOLO(net, new, 32)
    assert model(torch.rand(1, 3, 32, 32))[0].shape == (1, 12, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        YOLO(net, blocks, 32)
    with pytest.raises(CfgError, match="out of range"):
        drop_blocks(blocks, {99})


YOLOV3_LIKE = """
[net]
width=32
height=32
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=4
size=1
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[shortcut]
from=-3
activation=linear
[convolutional]
batch_normalize=1
filters=4
size=1
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[shortcut]
from=-3
activation=linear
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[route]
layers=-1,6
[convolutional]
size=1
stride=1
pad=1
filters=12
activation=linear
[yolo]
mask=0,1
anchors=4,4,12,12
classes=1
"""


def test_parsed_blocks_survive_deepcopy_and_pickle():
    import copy
    import pickle

    model = YOLO.from_cfg(SMALL)
    clone = copy.deepcopy(model)
    assert clone.blocks == model.blocks and clone.blocks[0].where() == model.blocks[0].where()
    assert pickle.loads(pickle.dumps(model.blocks)) == model.blocks
    x = torch.rand(1, 3, 64, 64)
    model.eval(), clone.eval()
    assert torch.equal(model(x)[0], clone(x)[0])
