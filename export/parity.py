"""onnxruntime vs PyTorch on the same preprocessed images: the export must not change results.

Images go through `export.trt.preprocess` (letterbox/stretch, colour order, normalization per
the bundle metadata), the code the device runs, then through the PyTorch export module and
through onnxruntime. Parity holds when the raw outputs differ by at most `atol` and the
detections after class-wise NMS are the same (count, classes, boxes). Scores are
probabilities and compare as they are; boxes are in input pixels (up to ~500 at 416, where
one float32 step is 3e-5 and two conv libraries summing in another order differ by a few
steps), so they compare in units of the input size: `|diff| / max(H, W) <= atol`, i.e. 0.04 px
at 416 for the default 1e-4. Otherwise `ParityError` says by how much and on which image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.models.base import postprocess
from compress.paths import assets_root
from edge_runtime.user_errors import UserError
from export.trt.preprocess import IMAGE_SUFFIXES, list_images, preprocess, read_image

DEFAULT_ATOL = 1e-4


class ParityError(UserError, RuntimeError):
    """The ONNX model's outputs differ from PyTorch's beyond the tolerance; `.report` holds
    the per-image figures."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


def synthetic_images(
    n: int = 2, seed: int = 0, size: tuple[int, int] = (480, 640)
) -> list[tuple[str, np.ndarray]]:
    """Deterministic BGR frames (smooth gradients + blobs + noise) for when no photo is at hand;
    4:3 so the letterbox pads them."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1) * 255.0
        for _ in range(6):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 120)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            base[mask] = rng.uniform(0, 255, size=3)
        frame = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        out.append((f"synthetic-{seed}-{i}", frame))
    return out


def sample_images(n: int = 2) -> list[tuple[str, np.ndarray]]:
    """n frames: the real sample photos under $NANOPRUNE_ASSETS/images first (person.jpg, ...),
    topped up with synthetic frames when there are fewer (or none)."""
    folder = assets_root() / "images"
    real = []
    if folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
        real = [(Path(p).name, read_image(p)) for p in list_images(folder, n)]
    return real + synthetic_images(n - len(real)) if len(real) < n else real


def load_images(
    spec: None | int | str | Path | Iterable, limit: int | None = None
) -> list[tuple[str, np.ndarray]]:
    """(name, BGR frame) pairs from: a folder, an image path, a list of paths, arrays or
    (name, array) pairs, or None/an int (that many sample images, `sample_images`)."""
    if spec is None or isinstance(spec, int):
        return sample_images(spec or limit or 2)
    if isinstance(spec, (str, Path)):
        p = Path(spec)
        paths = list_images(p, limit) if p.is_dir() else [str(p)]
        return [(Path(x).name, read_image(x)) for x in paths]
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, np.ndarray):
            out.append((f"array-{i}", item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], np.ndarray):
            out.append((str(item[0]), item[1]))
        else:
            if not str(item).lower().endswith(IMAGE_SUFFIXES):
                raise ValueError(f"{item}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            out.append((Path(item).name, read_image(item)))
    return out[:limit] if limit else out


def ort_session(model: bytes | str | Path, threads: int | None = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def _detections(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, iou: float
) -> dict[str, np.ndarray]:
    det = postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), threshold, iou)
    return {k: v.numpy() for k, v in det.items()}


def _same_detections(a: dict, b: dict, atol: float) -> str | None:
    """None when identical, else what differs."""
    if len(a["labels"]) != len(b["labels"]):
        return f"{len(a['labels'])} detections in PyTorch vs {len(b['labels'])} in onnxruntime"
    if not np.array_equal(a["labels"], b["labels"]):
        return "detected classes differ"
    if len(a["boxes"]) and not np.allclose(a["boxes"], b["boxes"], rtol=0, atol=atol):
        return f"boxes differ by {np.abs(a['boxes'] - b['boxes']).max():.3g} px"
    return None


def check_parity(
    module: nn.Module,
    onnx_model: bytes | str | Path,
    meta: dict,
    images: Sequence[tuple[str, np.ndarray]],
    atol: float = DEFAULT_ATOL,
    score_threshold: float | None = None,
    nms_iou: float | None = None,
    threads: int | None = 1,
) -> dict:
    """Compare `module(x)` (boxes, scores) with the ONNX model on each image; raise
    `ParityError` when it breaks, else return the figures (max diffs, detection counts)."""
    if not images:
        raise ValueError("parity needs at least one image")
    session = ort_session(onnx_model, threads)
    names = [o.name for o in session.get_outputs()]
    out = meta.get("outputs", {})
    wanted = [out.get("boxes", "boxes"), out.get("scores", "scores")]
    if any(w not in names for w in wanted):
        raise ParityError(f"ONNX outputs are {names}, the bundle metadata promises {wanted}")
    threshold = meta["score_threshold"] if score_threshold is None else score_threshold
    iou = meta["nms_iou"] if nms_iou is None else nms_iou
    module = module.eval()
    size = float(max(meta["input_shape"][2:]))
    per_image, failures = [], []
    for name, frame in images:
        x, _, _ = preprocess(frame, meta)
        with torch.no_grad():
            tb, ts = (t.float().numpy() for t in module(torch.from_numpy(x)))
        ob, os_ = session.run(wanted, {meta["input_name"]: x})
        if tb.shape != ob.shape or ts.shape != os_.shape:
            raise ParityError(
                f"{name}: shapes differ: PyTorch {tb.shape}/{ts.shape}, ONNX {ob.shape}/{os_.shape}"
            )
        db_px = float(np.abs(tb - ob).max(initial=0.0))
        db, ds = db_px / size, float(np.abs(ts - os_).max(initial=0.0))
        dt, do = (
            _detections(tb[0], ts[0], threshold, iou),
            _detections(ob[0], os_[0], threshold, iou),
        )
        mismatch = _same_detections(dt, do, atol * size)
        per_image.append(
            {
                "image": name,
                "max_abs_diff_boxes": db,
                "max_abs_diff_boxes_px": db_px,
                "max_abs_diff_scores": ds,
                "detections": int(len(dt["labels"])),
            }
        )
        if db > atol or ds > atol:
            failures.append(
                f"{name}: max |diff| boxes {db_px:.3g} px ({db:.3g} of the input size), scores {ds:.3g} > {atol:g}"
            )
        if mismatch:
            failures.append(f"{name}: detections differ after NMS: {mismatch}")
    report = {
        "atol": atol,
        "score_threshold": threshold,
        "nms_iou": iou,
        "images": per_image,
        "max_abs_diff_boxes": max(r["max_abs_diff_boxes"] for r in per_image),
        "max_abs_diff_boxes_px": max(r["max_abs_diff_boxes_px"] for r in per_image),
        "max_abs_diff_scores": max(r["max_abs_diff_scores"] for r in per_image),
        "box_units": "fraction of max(H, W); *_px in input pixels",
        "identical_detections": not any("detections differ" in f for f in failures),
        "passed": not failures,
    }
    if failures:
        raise ParityError("ONNX export does not match PyTorch:\n  " + "\n  ".join(failures), report)
    return report
