"""TensorRT backend against stand-ins for TensorRT 8.2 (bindings) and 10 (named tensors).

The stand-in engine runs the real ONNX graph with onnxruntime, so both API paths must give
exactly the detections of the onnxruntime backend. Real TensorRT runs only on a GPU box.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime.detector import BundleDetector
from edge_runtime.errors import ModelError
from tests.edge_fixtures import make_bundle


class FakeMemory:
    gpu_name = "Fake GPU"
    stream_handle = 7

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}
        self.depth = 1  # like pycuda make_context(): current once created

    def host(self, shape, dtype):
        return np.empty(shape, dtype)

    def device(self, nbytes):
        self.buffers[len(self.buffers) + 1000] = np.zeros(nbytes, np.uint8)
        return len(self.buffers) + 999

    def address(self, dev):
        return dev

    def to_device(self, dev, host):
        assert self.depth == 1, "CUDA context not pushed"
        self.buffers[dev][:] = host.reshape(-1).view(np.uint8)

    def to_host(self, host, dev):
        host.reshape(-1).view(np.uint8)[:] = self.buffers[dev]

    def synchronize(self):
        pass

    def push(self):
        self.depth += 1

    def pop(self):
        self.depth -= 1

    def close(self):
        self.buffers.clear()


class FakeEngine:
    def __init__(self, onnx_path: Path, memory: FakeMemory) -> None:
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.memory = memory
        i = self.session.get_inputs()[0]
        self.io = [(i.name, tuple(i.shape), True)]
        self.io += [(o.name, tuple(o.shape), False) for o in self.session.get_outputs()]

    def run(self, addresses: dict[str, int]) -> bool:
        (name, shape, _), outs = self.io[0], self.io[1:]
        x = self.memory.buffers[addresses[name]].view(np.float32).reshape(shape)
        values = self.session.run([o[0] for o in outs], {name: x})
        for (out, _, _), v in zip(outs, values):
            self.memory.buffers[addresses[out]][:] = v.astype(np.float32).reshape(-1).view(np.uint8)
        return True


class Engine8(FakeEngine):
    """TensorRT 8.2: bindings by index."""

    @property
    def num_bindings(self):
        return len(self.io)

    def get_binding_name(self, i):
        return self.io[i][0]

    def get_binding_shape(self, i):
        return self.io[i][1]

    def get_binding_dtype(self, i):
        return np.float32

    def binding_is_input(self, i):
        return self.io[i][2]

    def create_execution_context(self):
        engine = self

        class Context:
            def execute_async_v2(self, bindings, stream_handle):
                return engine.run({n: b for (n, _, _), b in zip(engine.io, bindings)})

        return Context()


class Engine10(FakeEngine):
    """TensorRT 10: tensors by name."""

    @property
    def num_io_tensors(self):
        return len(self.io)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def get_tensor_shape(self, name):
        return dict((n, s) for n, s, _ in self.io)[name]

    def get_tensor_dtype(self, name):
        return np.float32

    def get_tensor_mode(self, name):
        return "in" if dict((n, i) for n, _, i in self.io)[name] else "out"

    def create_execution_context(self):
        engine, addresses = self, {}

        class Context:
            def set_tensor_address(self, name, ptr):
                addresses[name] = ptr

            def execute_async_v3(self, stream_handle):
                return engine.run(addresses)

        return Context()


def fake_trt(engine_cls, onnx_path: Path, memory: FakeMemory, version: str):
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return engine_cls(onnx_path, memory) if data == b"FAKE-ENGINE" else None

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class TensorIOMode:
        INPUT = "in"

    trt = type("tensorrt", (), {})()
    trt.__version__, trt.Runtime, trt.Logger, trt.TensorIOMode = (
        version,
        Runtime,
        Logger,
        TensorIOMode,
    )
    trt.nptype = lambda dtype: dtype
    return trt


def write_engine(
    folder: Path, onnx_path: Path, gpu="Fake GPU", trt_version="8.2.1", data=b"FAKE-ENGINE"
):
    from export.trt.onnx_meta import read_bundle_meta

    engine = folder / "grid.fp16.engine"
    engine.write_bytes(data)
    record = {
        "bundle": read_bundle_meta(str(onnx_path)),
        "onnx": onnx_path.name,
        "gpu_name": gpu,
        "tensorrt_version": trt_version,
        "precision": "fp16",
    }
    (folder / "grid.fp16.json").write_text(json.dumps(record))
    return engine


@pytest.mark.parametrize("engine_cls, version", [(Engine8, "8.2.1"), (Engine10, "10.3.0")])
def test_both_tensorrt_apis_equal_onnxruntime(tmp_path: Path, engine_cls, version: str) -> None:
    onnx_path = make_bundle(tmp_path / "grid.onnx")
    memory = FakeMemory()
    engine = write_engine(tmp_path, onnx_path, trt_version=version)
    det = BundleDetector(
        engine, trt=fake_trt(engine_cls, onnx_path, memory, version), memory=memory
    )
    ref = BundleDetector(onnx_path)
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[30:90, 40:100] = 255
    frame[0:30, 0:40, 2] = 255
    got, want = det.detect(frame), ref.detect(frame)
    assert len(want[0]) > 0
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert memory.depth == 0  # every push popped, so another thread can use the context
    assert det.describe()["api"] == (
        "name-based (10)" if engine_cls is Engine10 else "bindings (8.x)"
    )


def test_engine_from_another_gpu_is_refused_without_its_onnx(tmp_path: Path) -> None:
    onnx_path = make_bundle(tmp_path / "grid.onnx")
    engine = write_engine(tmp_path, onnx_path, gpu="NVIDIA Tegra X1")
    onnx_path.unlink()
    memory = FakeMemory()
    with pytest.raises(
        ModelError, match=r"built for GPU 'NVIDIA Tegra X1' \(this device: 'Fake GPU'\)"
    ):
        BundleDetector(engine, trt=fake_trt(Engine8, onnx_path, memory, "8.2.1"), memory=memory)


def test_engine_from_another_tensorrt_is_rebuilt_from_its_onnx(tmp_path: Path, monkeypatch) -> None:
    import export.trt.cache

    onnx_path = make_bundle(tmp_path / "grid.onnx")
    old = write_engine(tmp_path, onnx_path, trt_version="8.0.1")
    fresh_dir = tmp_path / "cache"
    fresh_dir.mkdir()
    calls = []

    def fake_build(onnx, cache_dir, gpu=None, trt=None, rebuild=False, log=print, **kw):
        calls.append((Path(onnx).name, gpu, kw))
        return str(write_engine(fresh_dir, Path(onnx)))

    monkeypatch.setattr(export.trt.cache, "get_or_build_engine", fake_build)
    memory = FakeMemory()
    det = BundleDetector(
        old, trt=fake_trt(Engine8, onnx_path, memory, "8.2.1"), memory=memory, log=lambda m: None
    )
    assert calls == [("grid.onnx", "Fake GPU", {"precision": "fp16", "workspace_mib": 256})]
    assert det.backend.model_path.startswith(str(fresh_dir))


def test_corrupt_engine_and_missing_metadata(tmp_path: Path) -> None:
    onnx_path = make_bundle(tmp_path / "grid.onnx")
    engine = write_engine(tmp_path, onnx_path, data=b"truncated")
    memory = FakeMemory()
    trt = fake_trt(Engine8, onnx_path, memory, "8.2.1")
    with pytest.raises(ModelError, match="cannot deserialize"):
        BundleDetector(engine, trt=trt, memory=memory)
    (tmp_path / "grid.fp16.json").unlink()
    with pytest.raises(ModelError, match="metadata .* is missing"):
        BundleDetector(engine, trt=trt, memory=memory)


def test_real_tensorrt_or_skip(tmp_path: Path) -> None:
    # PathFinder looks at the installed packages only, not at stand-ins other tests may have
    # left in sys.modules.
    from importlib.machinery import PathFinder

    missing = [m for m in ("tensorrt",) if PathFinder.find_spec(m) is None]
    if missing or (PathFinder.find_spec("pycuda") is None and PathFinder.find_spec("cuda") is None):
        pytest.skip(
            "TensorRT + pycuda/cuda-python not installed here (a Jetson or GPU desktop test)"
        )
    det = BundleDetector(
        make_bundle(tmp_path / "grid.onnx"), backend="trt", cache_dir=tmp_path / "engines"
    )
    boxes, scores, classes = det.detect(np.full((64, 64, 3), 255, np.uint8))
    assert len(boxes) > 0 and set(classes.tolist()) == {0}
    again = BundleDetector(tmp_path / "grid.onnx", backend="trt", cache_dir=tmp_path / "engines")
    assert again.backend.model_path == det.backend.model_path  # the cached engine, not a rebuild
