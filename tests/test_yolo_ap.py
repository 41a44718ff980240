"""THE CHECK: the real YOLOv3-tiny COCO weights give Darknet's person AP on coco128.

Reference (assets README, OpenCV 4 DNN on the same files): 416x416 stretch, RGB in [0, 1],
score = objectness x person probability, single-class NMS IoU 0.45, pycocotools on all 128
coco128/train2017 images: AP50 / AP50:95 = 0.229 / 0.112 (scores >= 0.001) and 0.183 / 0.099
(scores >= 0.2, what OpenCV's YOLO layer keeps).
"""

from __future__ import annotations

import pytest

from compress.models.load import load_detector
from tests.conftest import need

TINY = {
    "family": "yolo",
    "cfg": "darknet/yolov3-tiny.cfg",
    "weights": "darknet/yolov3-tiny.weights",
    "names": "darknet/coco.names",
    "classes": ["person"],
    "input_size": 416,
}
DATA = {
    "format": "yolo",
    "root": "coco128",
    "split": "train2017",
    "names": "darknet/coco.names",
    "classes": ["person"],
}


@pytest.fixture(scope="module")
def coco128(assets):
    need(
        assets,
        "darknet/yolov3-tiny.weights",
        "darknet/yolov3-tiny.cfg",
        "darknet/coco.names",
        "coco128/labels/train2017",
    )
    from compress.data.build import load_records
    from compress.data.dataset import DetectionDataset

    records, problems = load_records(DATA)
    return DetectionDataset(records, ["person"])


@pytest.mark.assets
@pytest.mark.slow  # 128 images through YOLOv3-tiny at 416: about a minute on 2 cores
def test_yolov3_tiny_person_ap_matches_darknet_reference(coco128):
    from compress.evaluate import coco_evaluate, predict

    det = load_detector({**TINY, "resize": "stretch"})
    assert len(coco128) == 128 and coco128.num_boxes == 254
    results = predict(det, coco128, batch_size=8, score_threshold=0.001, nms_iou=0.45)
    gt = coco128.to_coco()
    low = coco_evaluate(gt, results)
    high = coco_evaluate(gt, [r for r in results if r["score"] >= 0.2])
    print(
        f"stretch: AP50 {low['AP50']:.4f} AP50_95 {low['AP50_95']:.4f} | >=0.2: {high['AP50']:.4f} {high['AP50_95']:.4f}"
    )
    assert low["AP50"] == pytest.approx(0.229, abs=0.01)
    assert low["AP50_95"] == pytest.approx(0.112, abs=0.01)
    assert high["AP50"] == pytest.approx(0.183, abs=0.01)
    assert high["AP50_95"] == pytest.approx(0.099, abs=0.01)
