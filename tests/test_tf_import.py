"""The imported TF SSDLite-MobileNetV2 pedestrian graph gives the graph's own detections.

Reference: every detection TensorFlow's graph returns on each coco128 train2017 image
(assets README), images decoded by cv2.imread BGR->RGB. With TF's own resize
(`tf_resize_bilinear`) the imported model matches box for box; TensorFlow itself is compared
when it is installed.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from compress.models.ssd_tf_graph import Graph, GraphError
from compress.models.tf_import import get_args_parser, import_frozen_graph, main, tf_resize_bilinear
from tests.conftest import need

PB = "tf/pedestrian_ssdlite_frozen_inference_graph.pb"
REF = "tf/reference_detections_coco128_train2017.json"
DATA = {
    "format": "yolo",
    "root": "coco128",
    "split": "train2017",
    "names": "darknet/coco.names",
    "classes": ["person"],
}


@pytest.fixture(scope="module")
def imported(assets):
    (pb,) = need(assets, PB)
    return import_frozen_graph(pb)


def _tf_input(path, size=(300, 300)) -> tuple[torch.Tensor, tuple[int, int]]:
    rgb = cv2.imread(str(path))[:, :, ::-1]
    x = torch.from_numpy(tf_resize_bilinear(rgb, size) / 255.0).permute(2, 0, 1).float()
    return x, rgb.shape[:2]


@pytest.fixture(scope="module")
def coco128_run(assets, imported):
    """Our detections on every coco128 image, with the graph's preprocessing and NMS (0.6,
    100 per image, scores > 1e-8), in original pixels, keyed by file name."""
    need(assets, REF, "coco128/images/train2017", "darknet/coco.names")
    from compress.data.build import load_records
    from compress.data.dataset import DetectionDataset

    records, _ = load_records(DATA)
    ours = {}
    for i in range(0, len(records), 16):
        batch = records[i : i + 16]
        inputs = [_tf_input(r.path) for r in batch]
        dets = imported.detect(
            torch.stack([x for x, _ in inputs]),
            score_threshold=1e-8,
            nms_iou=0.6,
            max_detections=100,
        )
        for rec, (_, (h, w)), d in zip(batch, inputs, dets):
            scale = torch.tensor([w / 300, h / 300, w / 300, h / 300])
            # TF clips to the image after its NMS (the variant leaves boxes unclipped for NMS)
            boxes = torch.minimum((d["boxes"] * scale).clamp(min=0), torch.tensor([w, h, w, h]))
            ours[rec.path.name] = boxes.numpy(), d["scores"].numpy()
    reference = json.loads((assets / REF).read_text())["images"]
    return DetectionDataset(records, ["person"]), ours, reference


def test_graph_reader_parses_constants_and_names_bad_files(assets, tmp_path):
    (pb,) = need(assets, PB)
    graph = Graph.load(pb)
    assert graph.const("Preprocessor/sub/y") == pytest.approx(1.0)
    w = graph.const("FeatureExtractor/MobilenetV2/Conv/weights")
    assert w.shape == (3, 3, 3, 32) and w.dtype == np.float32
    bad = tmp_path / "broken.pb"
    bad.write_bytes(b"\x0a\xff\xff\xff\xff\x0f not a graph")
    with pytest.raises(GraphError, match="broken.pb"):
        Graph.load(bad)
    with pytest.raises(GraphError, match="not found"):
        Graph.load(tmp_path / "absent.pb")


@pytest.mark.assets
def test_import_reads_the_graph_settings(imported):
    rep = imported.import_report
    assert rep["input_size"] == [300, 300] and rep["anchors"] == 1917 and rep["columns"] == 2
    assert rep["score"] == "sigmoid" and rep["nms_iou"] == pytest.approx(0.6)
    assert imported.family == "ssd" and imported.variant == "ssdlite_mobilenet_v2_tf"
    assert imported.resize_mode == "stretch" and imported.class_names == ["person"]


@pytest.mark.assets
def test_detections_match_tensorflow_reference_box_for_box(coco128_run):
    _, ours, reference = coco128_run
    threshold, compared = 0.3, 0
    for name, entry in reference.items():
        ref = [d for d in entry["detections"] if d["score"] >= threshold]
        boxes, scores = ours[name]
        mine = scores >= threshold
        # a detection right at the threshold may fall on either side of it
        near = np.abs(scores - threshold) < 2e-3
        assert abs(int(mine.sum()) - len(ref)) <= int(near.sum()), name
        for d in ref:
            dist = np.abs(boxes - np.asarray(d["box_xyxy_pixels"])).max(1)
            j = int(dist.argmin())
            assert dist[j] < 1.0, f"{name}: no box within 1 px of TF's {d}"
            assert scores[j] == pytest.approx(d["score"], abs=2e-3), name
            compared += 1
    assert compared >= 30  # the person images give dozens of confident boxes


@pytest.mark.assets
def test_person_ap50_of_imported_model_equals_tensorflow(coco128_run):
    from compress.evaluate import coco_evaluate

    dataset, ours, reference = coco128_run
    ids = {r.path.name: r.image_id for r in dataset.records}
    gt = dataset.to_coco()

    def results(items):
        return [
            {
                "image_id": ids[name],
                "category_id": 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(s),
            }
            for name, dets in items
            for (x1, y1, x2, y2), s in dets
            if name in ids and x2 > x1 and y2 > y1
        ]

    ref_ap = coco_evaluate(
        gt,
        results(
            (n, [(d["box_xyxy_pixels"], d["score"]) for d in e["detections"]])
            for n, e in reference.items()
        ),
    )
    our_ap = coco_evaluate(
        gt, results((n, zip(b.tolist(), s.tolist())) for n, (b, s) in ours.items())
    )
    print(
        f"TF reference AP50 {ref_ap['AP50']:.4f} AP50_95 {ref_ap['AP50_95']:.4f} | imported {our_ap['AP50']:.4f} {our_ap['AP50_95']:.4f}"
    )
    assert ref_ap["AP50"] == pytest.approx(
        0.376, abs=0.005
    )  # the README's figure: same ground truth
    assert our_ap["AP50"] == pytest.approx(ref_ap["AP50"], abs=0.005)
    assert our_ap["AP50_95"] == pytest.approx(ref_ap["AP50_95"], abs=0.005)


@pytest.mark.assets
def test_matches_tensorflow_itself_when_installed(assets, imported):
    tf = pytest.importorskip(
        "tensorflow",
        reason="TensorFlow not installed: compared with the recorded reference instead",
    )
    (pb,) = need(assets, PB)
    (img,) = need(assets, "images/person.jpg")
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb.read_bytes())
    rgb = cv2.imread(str(img))[:, :, ::-1]
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        tf.import_graph_def(graph_def, name="")
        boxes, scores = sess.run(
            ["detection_boxes:0", "detection_scores:0"], {"image_tensor:0": rgb[None]}
        )
    x, (h, w) = _tf_input(img)
    d = imported.detect(x[None], score_threshold=0.3, nms_iou=0.6, max_detections=100)[0]
    keep = scores[0] >= 0.3
    tf_boxes = boxes[0][keep][:, [1, 0, 3, 2]] * np.array([w, h, w, h])
    ours = np.clip(
        d["boxes"].numpy() * np.array([w / 300, h / 300, w / 300, h / 300]), 0, [w, h, w, h]
    )
    assert len(ours) == keep.sum()
    np.testing.assert_allclose(ours, tf_boxes, atol=1.0)


def test_tf_resize_matches_tf1_legacy_bilinear():
    img = np.arange(4 * 6 * 1, dtype=np.float32).reshape(4, 6, 1)
    out = tf_resize_bilinear(img, (2, 3))
    # legacy TF samples source pixels dest * in/out: rows 0, 2 and columns 0, 2, 4 exactly
    np.testing.assert_array_equal(out[..., 0], img[[0, 2]][:, [0, 2, 4], 0])
    up = tf_resize_bilinear(np.array([[0.0, 10.0]], np.float32)[..., None], (1, 4))
    np.testing.assert_allclose(up[0, :, 0], [0.0, 5.0, 10.0, 10.0])  # no half-pixel offset


@pytest.mark.assets
def test_import_cli_writes_a_loadable_model_folder(assets, tmp_path, imported):
    need(assets, PB)
    from compress.io import read_json
    from compress.models.load import load_detector_dir

    assert main(get_args_parser().parse_args([PB, "--out", str(tmp_path / "run")])) == 0
    report = read_json(tmp_path / "run" / "report.json")
    assert report["inputs"]["tf_graph"]["sha256"].startswith("7a23982e")
    assert report["graph"]["tensors_mapped"] > 300
    det = load_detector_dir(tmp_path / "run" / "model").eval()
    x = torch.rand(1, 3, 300, 300)
    with torch.no_grad():
        for a, b in zip(det(x), imported(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.assets
def test_imported_model_exports_to_onnx_with_parity(tmp_path, imported):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "ssdlite_tf.onnx"
    x = torch.rand(1, 3, 300, 300)
    module = imported.export_module().eval()
    torch.onnx.export(
        module,
        (x,),
        str(path),
        opset_version=13,
        dynamo=False,
        input_names=["images"],
        output_names=["boxes", "scores"],
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = module(x)
    assert boxes.shape == (1, 1917, 4) and scores.shape == (1, 1917, 1)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-3)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4)


@pytest.mark.assets
def test_graph_anchor_settings_are_tf_ssd_anchor_generator_defaults(assets):
    from compress.models.ssd_tf_mobilenet import ssd_anchor_settings
    from compress.models.tf_import import anchor_settings

    (pb,) = need(assets, PB)
    got = anchor_settings(Graph.load(pb))
    scales, ratios = ssd_anchor_settings()
    np.testing.assert_allclose(np.concatenate(got["scales"]), np.concatenate(scales), atol=1e-6)
    np.testing.assert_allclose(np.concatenate(got["ratios"]), np.concatenate(ratios), atol=1e-4)


def _const(graph_def, name, array):
    node = graph_def.node.add(name=name, op="Const")
    entry = node.attr.add(key="value")
    entry.value.tensor.dtype = 1
    for size in array.shape:
        entry.value.tensor.tensor_shape.dim.add(size=size)
    entry.value.tensor.tensor_content = np.ascontiguousarray(array, np.float32).tobytes()


def test_folded_bn_graph_layer_maps_to_an_identity_batchnorm_with_the_bias():
    """A conv -> BiasAdd layer (BN folded by TF's graph tools) imports exactly: synthetic
    GraphDef built with the same message classes the reader uses."""
    from compress.models.ssd_tf_graph import graph_def_class
    from compress.models.ssd_tf_mobilenet import ConvBNAct
    from compress.models.tf_import import _load_conv_bn

    rng = np.random.default_rng(0)
    w, b = (
        rng.standard_normal((3, 3, 4, 8)).astype(np.float32),
        rng.standard_normal(8).astype(np.float32),
    )
    gd = graph_def_class()()
    _const(gd, "L/weights", w)
    _const(gd, "L/biases", b)
    gd.node.add(name="L/Conv2D", op="Conv2D", input=["x", "L/weights"])
    gd.node.add(name="L/BiasAdd", op="BiasAdd", input=["L/Conv2D", "L/biases"])
    graph = Graph(graph_def_class().FromString(gd.SerializeToString()), "synthetic.pb")
    layer = ConvBNAct(4, 8, 3, 1, (6, 6), act=False).eval()
    _load_conv_bn(graph, "L", layer.conv, layer.bn)
    x = torch.rand(1, 4, 6, 6)
    expected = torch.nn.functional.conv2d(
        x, torch.from_numpy(w.transpose(3, 2, 0, 1)), torch.from_numpy(b), padding=1
    )
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(GraphError, match="synthetic.pb.*'M'"):
        _load_conv_bn(graph, "M", layer.conv, layer.bn)
