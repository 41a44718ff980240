"""YOLO model: build, Darknet-exact layers, decode, export, loss, specialization, model folders."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compress.models.darknet_cfg import parse_cfg
from compress.models.load import load_detector, load_detector_dir, save_detector
from compress.models.person import head_channels, specialize
from compress.models.yolo import YOLO, EdgePadMaxPool
from tests.conftest import need

TINY = """
[net]
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

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=0,1,2
anchors=6,8, 14,12, 24,30
classes=2
num=3

[route]
layers=-4

[upsample]
stride=2

[route]
layers=-1,0

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=0,1,2
anchors=6,8, 14,12, 24,30
classes=2
num=3
"""
NAMES = ["person", "car"]


def tiny(seed: int = 0) -> YOLO:
    torch.manual_seed(seed)
    model = YOLO.from_cfg(TINY, 64, NAMES)
    with torch.no_grad():  # non-trivial BN statistics, so eval mode is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def test_heads_shapes_and_odd_sizes_follow_darknet():
    model = tiny()
    raw = model(torch.rand(2, 3, 64, 64))
    assert [tuple(r.shape) for r in raw] == [(2, 21, 16, 16), (2, 21, 32, 32)]
    boxes, scores = model.decode(raw)
    assert boxes.shape == (2, 3 * (256 + 1024), 4) and scores.shape == (2, 3 * (256 + 1024), 2)
    model.set_input_size(40)
    assert [tuple(r.shape[-2:]) for r in model(torch.rand(1, 3, 40, 40))] == [(10, 10), (20, 20)]
    with pytest.raises(ValueError, match="set_input_size"):
        model.decode(model(torch.rand(1, 3, 64, 64)))


@pytest.mark.parametrize("size, stride", [(2, 1), (2, 2), (3, 2), (5, 1)])
def test_maxpool_pads_like_darknet(size, stride):
    x = torch.randn(2, 4, 13, 13) - 3.0  # all negative: a zero pad would show
    padding = size - 1
    before = padding // 2
    ref = F.max_pool2d(
        F.pad(x, (before, padding - before, before, padding - before), value=-float("inf")),
        size,
        stride,
    )
    out = EdgePadMaxPool(size, stride, padding)(x)
    assert torch.equal(out, ref)
    assert out.shape[-1] == (13 + padding - size) // stride + 1


def test_decode_matches_the_darknet_formula():
    model = tiny()
    raw = model(torch.rand(1, 3, 64, 64))
    boxes, scores = model.decode(raw)
    p = raw[0][0].view(3, 7, 16, 16)  # anchors, 5 + C, y, x
    a, y, x = 2, 3, 5
    t = p[a, :, y, x]
    cx = (x + torch.sigmoid(t[0])) / 16 * 64
    cy = (y + torch.sigmoid(t[1])) / 16 * 64
    w, h = torch.exp(t[2]) * 24, torch.exp(t[3]) * 30
    row = a * 256 + y * 16 + x
    assert torch.allclose(
        boxes[0, row], torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), atol=1e-5
    )
    assert torch.allclose(scores[0, row], torch.sigmoid(t[4]) * torch.sigmoid(t[5:]), atol=1e-7)


@pytest.mark.parametrize(
    "name, heads", [("yolov3.cfg", 3), ("yolov3-spp.cfg", 3), ("yolov3-tiny.cfg", 2)]
)
def test_darknet53_family_builds_and_runs(assets, name, heads):
    (cfg,) = need(assets, f"darknet/{name}")
    model = YOLO.from_cfg(cfg, 128).eval()
    with torch.no_grad():
        raw = model(torch.rand(1, 3, 128, 128))
        boxes, scores = model.decode(raw)
    assert len(raw) == heads and all(r.shape[1] == 255 for r in raw)
    grids = sorted(r.shape[-1] for r in raw)
    assert grids == ([4, 8, 16] if heads == 3 else [4, 8])
    assert boxes.shape[1] == 3 * sum(g * g for g in grids) and scores.shape[-1] == 80
    assert torch.isfinite(boxes).all()


def test_route_groups_take_one_chunk():
    cfg = TINY.replace("[route]\nlayers=-4", "[route]\nlayers=-4\ngroups=2\ngroup_id=1")
    model = YOLO.from_cfg(cfg.replace("[route]\nlayers=-1,0", "[route]\nlayers=-1,0"), 64, NAMES)
    assert model.module_list[6].groups == 2
    assert model.module_list[9].conv.in_channels == 8 + 8  # 16 / 2 routed, then + layer 0


def test_channels_last_and_bf16_autocast_train_step():
    # what the trainer does on CUDA (AMP + channels-last); bf16 autocast is the CPU stand-in
    model = tiny().train().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64).to(memory_format=torch.channels_last)
    targets = [
        {"boxes": torch.tensor([[8.0, 10.0, 30.0, 40.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model.loss(model(x), targets)
    loss.backward()
    assert torch.isfinite(loss) and model.module_list[0].conv.weight.grad is not None


def test_onnx_export_opset13_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = tiny()
    path = tmp_path / "tiny.onnx"
    x = torch.rand(1, 3, 64, 64)
    torch.onnx.export(
        model.export_module().eval(),
        (x,),
        str(path),
        opset_version=13,
        dynamo=False,
        input_names=["images"],
        output_names=["boxes", "scores"],
    )
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"NonZero", "NonMaxSuppression", "Loop", "If"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = model.export_module().eval()(x)
    assert boxes.shape == (1, 3840, 4) and scores.shape == (1, 3840, 2)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-3)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-5)


def test_loss_decreases_when_overfitting_one_batch():
    model = tiny().train()
    model.init_head_bias()
    x = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[8.0, 10.0, 30.0, 40.0]]), "labels": torch.tensor([0])},
        {
            "boxes": torch.tensor([[40.0, 4.0, 52.0, 14.0], [4.0, 40.0, 20.0, 60.0]]),
            "labels": torch.tensor([1, 0]),
        },
    ]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss, parts = model.loss(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert parts["matches"] == 3 and set(parts) >= {"box", "obj", "cls"}
    assert all(np.isfinite(losses)) and losses[-1] < 0.3 * losses[0]
    # an image without boxes still gives a finite loss with gradients
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    loss, parts = model.loss(model(x), empty)
    loss.backward()
    assert torch.isfinite(loss) and parts["box"] == 0.0
    with pytest.raises(ValueError, match="targets for a batch of 2"):
        model.loss(model(x), empty[:1])


def test_specialize_keeps_person_outputs_and_shrinks_heads():
    model = tiny()
    person = specialize(model, ("person",))
    assert person.class_names == ["person"] and head_channels(person) == [18, 18]
    assert [b["classes"] for b in person.blocks if b["type"] == "yolo"] == [1, 1]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        b0, s0 = model.decode(model(x))
        b1, s1 = person.decode(person(x))
    # the same rows of the same conv: equal up to summation order in the narrower GEMM
    torch.testing.assert_close(b1, b0, rtol=0, atol=1e-5)
    torch.testing.assert_close(s1[..., 0], s0[..., 0], rtol=0, atol=1e-6)
    cfg = parse_cfg(person.to_cfg())
    assert [b["filters"] for b in cfg if b["type"] == "convolutional"][-1] == 18
    car_only = specialize(model, "car")
    with torch.no_grad():
        _, s2 = car_only.decode(car_only(x))
    torch.testing.assert_close(s2[..., 0], s0[..., 1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\['bicycle'\] are not in"):
        specialize(model, ("bicycle",))


def test_model_folder_round_trip_and_tamper_check(tmp_path):
    model = specialize(tiny(), ["person"])
    model.resize_mode, model.default_score_threshold = "stretch", 0.3
    folder = save_detector(model, tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    assert (
        meta["family"] == "yolo"
        and meta["cfg"] == "model.cfg"
        and meta["weights"] == "model.weights"
    )
    assert (
        meta["classes"] == ["person"]
        and meta["input_size"] == [64, 64]
        and meta["resize"] == "stretch"
    )
    again = load_detector_dir(folder).eval()
    assert again.resize_mode == "stretch" and again.default_score_threshold == 0.3
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), again(x)):
            assert torch.equal(a, b)
    (folder / "model.cfg").write_text((folder / "model.cfg").read_text() + "\n")
    with pytest.raises(ValueError, match="model.cfg: sha256 differs"):
        load_detector_dir(folder)
    with pytest.raises(FileNotFoundError, match="no model.json"):
        load_detector_dir(tmp_path)


def test_load_detector_from_recipe_section(tmp_path):
    cfg = tmp_path / "t.cfg"
    cfg.write_text(TINY)
    names = tmp_path / "t.names"
    names.write_text("person\ncar\n")
    det = load_detector(
        {
            "family": "yolo",
            "cfg": str(cfg),
            "names": str(names),
            "classes": ["person"],
            "input_size": [64, 64],
            "resize": "letterbox",
            "pad_value": 114,
        }
    )
    assert det.class_names == ["person"] and det.input_size == (64, 64) and det.pad_value == 114
    with pytest.raises(ValueError, match="unknown model family 'rcnn'"):
        load_detector({"family": "rcnn"})
    with pytest.raises(FileNotFoundError, match="missing.cfg"):
        load_detector({"family": "yolo", "cfg": str(tmp_path / "missing.cfg")})
    with pytest.raises(ValueError, match="resize='crop'"):
        load_detector({"family": "yolo", "cfg": str(cfg), "resize": "crop"})


# ---- the real weights, and OpenCV 4's Darknet reader as the referee ------------------------


def _opencv_boxes(folder, image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy input pixels) and the first class score of every anchor, OpenCV's order."""
    net = cv2.dnn.readNetFromDarknet(str(folder / "model.cfg"), str(folder / "model.weights"))
    net.setInput(cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    cx, cy, w, h = (rows[:, k] * size for k in range(4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), rows[:, 5]


def _ours_in_opencv_order(model: YOLO, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = model.input_size[0]
    x = torch.from_numpy(
        cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)
    )
    with torch.no_grad():
        raw = model(x)
    boxes, scores = [], []
    for layer, r in zip(model.yolo_layers, raw):
        b, s = layer.decode_split(layer.split(r))  # [1, A, H, W, k] -> OpenCV rows are (y, x, a)
        boxes.append(b[0].permute(1, 2, 0, 3).reshape(-1, 4))
        scores.append(s[0].permute(1, 2, 0, 3).reshape(-1, s.shape[-1])[:, 0])
    return torch.cat(boxes).numpy(), torch.cat(scores).numpy()


def _narrow(model: YOLO, layer: int, keep: int) -> YOLO:
    """A width change the way a pruner makes it: keep the first `keep` filters of `layer`."""
    blocks = [dict(b) for b in model.blocks]
    blocks[layer]["filters"] = keep
    new = YOLO.from_blocks(model.net, blocks, model.input_size, model.class_names)
    state = model.state_dict()
    for key, value in state.items():
        if key.startswith(f"module_list.{layer}."):
            state[key] = value[:keep] if value.dim() else value
        elif key == f"module_list.{layer + 1}.conv.weight":
            state[key] = value[:, :keep]
    new.load_state_dict(state)
    return new.eval()


@pytest.mark.assets
@pytest.mark.skipif(
    not hasattr(cv2.dnn, "readNetFromDarknet"),
    reason="this OpenCV has no Darknet reader (OpenCV 5)",
)
def test_opencv_reads_our_specialized_and_narrowed_models(assets, tmp_path):
    need(
        assets,
        "darknet/yolov3-tiny.cfg",
        "darknet/yolov3-tiny.weights",
        "darknet/coco.names",
        "images/person.jpg",
    )
    image = cv2.imread(str(assets / "images/person.jpg"))
    coco = load_detector(
        {
            "family": "yolo",
            "cfg": "darknet/yolov3-tiny.cfg",
            "weights": "darknet/yolov3-tiny.weights",
            "names": "darknet/coco.names",
            "input_size": 416,
        }
    ).eval()
    person = specialize(coco, ["person"]).eval()
    # layer 12 is the 1024-wide conv; 1024 -> 384 as channel pruning would leave it
    for name, model in {"person": person, "narrow": _narrow(person, 12, 384)}.items():
        folder = save_detector(model, tmp_path / name)
        cv_boxes, cv_scores = _opencv_boxes(folder, image, 416)
        boxes, scores = _ours_in_opencv_order(model, image)
        assert cv_boxes.shape == boxes.shape == (3 * (13 * 13 + 26 * 26), 4)
        np.testing.assert_allclose(boxes, cv_boxes, atol=0.05 * 416 / 100, rtol=1e-3)
        kept = cv_scores > 0  # OpenCV zeroes scores under its 0.2 threshold
        assert kept.sum() >= 1 and (scores[~kept] <= 0.2 + 1e-4).all()
        np.testing.assert_allclose(scores[kept], cv_scores[kept], atol=1e-4)
    # the person model finds the person in person.jpg, as Darknet does
    x = torch.from_numpy(
        cv2.dnn.blobFromImage(image, 1 / 255.0, (416, 416), swapRB=True, crop=False)
    )
    (det,) = person.detect(x, score_threshold=0.5)
    assert len(det["scores"]) >= 1


@pytest.mark.assets
def test_recipe_with_person_class_specializes_real_weights(assets):
    need(assets, "darknet/yolov3-tiny.cfg", "darknet/yolov3-tiny.weights", "darknet/coco.names")
    det = load_detector(
        {
            "family": "yolo",
            "cfg": "darknet/yolov3-tiny.cfg",
            "weights": "darknet/yolov3-tiny.weights",
            "names": "darknet/coco.names",
            "classes": ["person"],
            "input_size": 416,
        }
    )
    assert det.class_names == ["person"] and head_channels(det) == [18, 18]
    assert det.weights_header == (0, 2, 0, 32013312)


RESIDUAL = TINY.replace(
    "[maxpool]\nsize=2\nstride=2\n",
    """[convolutional]
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

[maxpool]
size=2
stride=2
""",
    1,
).replace("layers=-1,0", "layers=-1,3")


@pytest.mark.skipif(
    not hasattr(cv2.dnn, "readNetFromDarknet"),
    reason="this OpenCV has no Darknet reader (OpenCV 5)",
)
def test_opencv_reads_a_layer_pruned_model(tmp_path):
    from compress.models.darknet_cfg import drop_blocks

    torch.manual_seed(3)
    full = YOLO.from_cfg(RESIDUAL, 64, NAMES).eval()
    assert [b["type"] for b in full.blocks[:4]] == [
        "convolutional",
        "convolutional",
        "convolutional",
        "shortcut",
    ]
    # remove the residual unit (layers 1-3): the route that read the shortcut now reads layer 0
    blocks = drop_blocks(full.blocks, {1, 2, 3})
    pruned = YOLO.from_blocks(full.net, blocks, 64, NAMES).eval()
    state = {
        k: v
        for k, v in full.state_dict().items()
        if not k.startswith(("module_list.1.", "module_list.2."))
    }
    renumber = {i: i - 3 for i in range(4, len(full.blocks))}
    pruned.load_state_dict({_shift(k, renumber): v for k, v in state.items()})
    image = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    for name, model in {"full": full, "pruned": pruned}.items():
        folder = save_detector(model, tmp_path / name)
        cv_boxes, cv_scores = _opencv_boxes(folder, image, 64)
        boxes, scores = _ours_in_opencv_order(model, image)
        np.testing.assert_allclose(boxes, cv_boxes, atol=1e-2, rtol=1e-3)
        kept = cv_scores > 0
        assert kept.sum() >= 1
        np.testing.assert_allclose(scores[kept], cv_scores[kept], atol=1e-4)


def _shift(key: str, renumber: dict[int, int]) -> str:
    parts = key.split(".")
    parts[1] = str(renumber.get(int(parts[1]), int(parts[1])))
    return ".".join(parts)
