"""The shared test stand-ins (tests/train_support.py, tests/edge_fixtures.py) behave like the
real things they stand in for, so tests built on them assert something."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from tests.edge_fixtures import GridDetector, make_bundle
from tests.train_support import Rectangles, TinyDetector


def test_tiny_detector_is_a_detector():
    det = TinyDetector()
    img, t = Rectangles(2)[0]
    raw = det(img[None])
    loss, parts = det.loss(raw, [t])
    assert loss.ndim == 0 and set(parts) == {"obj", "box"}
    boxes, scores = det.decode(raw)
    assert boxes.shape == (1, 64, 4) and scores.shape == (1, 64, 1)


def test_grid_bundle_exports(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "g.onnx")
    proto = onnx.load(str(path))
    assert {p.key for p in proto.metadata_props} == {"nanoprune"}
    with torch.no_grad():
        out = GridDetector()(torch.ones(1, 3, 64, 64))
    assert out[0].shape == (1, 64, 4) and out[1].shape == (1, 64, 2)
    assert np.all(out[1][0, :, 0].numpy() > 0.99)  # white image: every cell is "bright"
