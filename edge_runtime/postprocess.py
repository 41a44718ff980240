"""Network outputs -> (boxes, scores, classes) in frame pixels: score pre-filter + class-wise NMS.

Same rule as the host's `Detector.postprocess` (torchvision batched_nms): every (box, class)
pair scoring >= the threshold is a candidate, NMS runs per class, at most `max_detections`
are kept, best first. Vectorized numpy: one IoU row per kept box, no per-pair Python loop.
"""

import numpy as np


def nms(boxes, scores, iou_threshold):
    """Indices of kept boxes, by decreasing score; suppress IoU > iou_threshold."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes, scores, classes, iou_threshold):
    """NMS per class in one pass: shift each class's boxes apart so they never overlap."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    offsets = classes.astype(boxes.dtype) * (float(boxes.max()) + 1.0)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def select(boxes, scores, score_threshold, iou_threshold, max_detections=300):
    """boxes [N, 4], scores [N, C] (one image) -> kept boxes [n, 4], scores [n], classes [n]."""
    rows, cols = np.nonzero(scores >= score_threshold)
    cand_boxes = boxes[rows].astype(np.float32)
    cand_scores = scores[rows, cols].astype(np.float32)
    keep = batched_nms(cand_boxes, cand_scores, cols, iou_threshold)[:max_detections]
    return cand_boxes[keep], cand_scores[keep], cols[keep].astype(np.int64)


class Postprocessor(object):
    """Built once from the metadata; call per frame: (outputs dict, Geometry) -> detections."""

    def __init__(self, meta, score_threshold=None, nms_iou=None, max_detections=300):
        outs = meta["outputs"]
        if outs.get("kind", "boxes_scores") != "boxes_scores":
            raise ValueError("unsupported output kind {!r}".format(outs.get("kind")))
        self.boxes_name, self.scores_name = outs["boxes"], outs["scores"]
        self.score_threshold = float(
            meta["score_threshold"] if score_threshold is None else score_threshold
        )
        self.nms_iou = float(meta["nms_iou"] if nms_iou is None else nms_iou)
        self.max_detections = int(max_detections)
        self.num_classes = len(meta["classes"])

    def __call__(self, outputs, geometry):
        boxes = np.asarray(outputs[self.boxes_name]).reshape(-1, 4)
        scores = np.asarray(outputs[self.scores_name]).reshape(boxes.shape[0], -1)
        kept_boxes, kept_scores, classes = select(
            boxes, scores, self.score_threshold, self.nms_iou, self.max_detections
        )
        return geometry.to_frame(kept_boxes), kept_scores, classes
