"""Write the ONNX bundles the device tests read, on the host (torch + onnx), as export does.

    python -m tests.device.make_bundles DIR

The Nano has neither torch nor onnx, so its tests cannot build models; they read these files
(the Makefile's test-py36 leg writes them with the host venv, then runs Python 3.6 on them).
"""

from __future__ import annotations

import sys
from pathlib import Path

# name -> how it is made; tests ask for a bundle by name.
BUNDLES = {
    "grid.onnx": lambda p: _edge().make_bundle(p),
    "grid-bgr-stretch.onnx": lambda p: _edge().make_bundle(p, resize="stretch", color="BGR"),
    "plain.onnx": lambda p: _edge().make_bundle(p, with_meta=False),
    "tiny-base.onnx": lambda p: _latency().make_bundle(p, width=16, depth=2, size=64, name="base"),
    "tiny-pruned.onnx": lambda p: _latency().make_bundle(
        p, width=8, depth=1, size=64, name="pruned"
    ),
    "trt-m.onnx": lambda p: _trt().make_bundle(p, classes=("person", "rider")),
}


def _edge():
    from tests import edge_fixtures

    return edge_fixtures


def _latency():
    from tests import test_bench_latency

    return test_bench_latency


def _trt():
    from tests import test_trt_builder

    return test_trt_builder


def write_all(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in BUNDLES.items():
        if not (folder / name).exists():
            make(folder / name)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.device.make_bundles DIR")
    print(f"device test bundles: {write_all(Path(sys.argv[1]))}")
