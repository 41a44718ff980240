"""The device tests: what the Nano runs (edge_runtime, export.trt, the device benchmarks, the
container entrypoint), held to Python 3.6, numpy 1.19, OpenCV 4 and onnxruntime 1.10 with no
torch and no onnx. `make test-py36` runs them under a real CPython 3.6 with
`--confcutdir tests/device`, so the host conftest (3.10+ syntax, compress) is never read.

Bundles come from NANOPRUNE_DEVICE_BUNDLES (written on the host by tests/device/make_bundles.py);
under the host's own pytest they are written on the fly.
"""

import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLES_ENV = "NANOPRUNE_DEVICE_BUNDLES"


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    folder = os.environ.get(BUNDLES_ENV)
    if folder:
        return folder
    try:
        from tests.device.make_bundles import write_all
    except (ImportError, SyntaxError):
        pytest.skip("no {} folder and no torch/onnx to write the bundles".format(BUNDLES_ENV))
    return str(write_all(tmp_path_factory.mktemp("device-bundles")))


@pytest.fixture
def bundle(bundle_dir, tmp_path):
    """bundle("grid.onnx") -> a private copy (tests may damage or cache next to it)."""

    def copy(name):
        src = os.path.join(bundle_dir, name)
        if not os.path.exists(src):
            pytest.skip("bundle {} absent from {}".format(name, bundle_dir))
        dst = str(tmp_path / name)
        shutil.copyfile(src, dst)
        return dst

    return copy
