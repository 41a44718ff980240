"""TensorRT backend: a serialized engine + its metadata JSON, or an ONNX bundle built on first run.

TensorRT 8.2 (Jetson Nano, JetPack 4.6) has the bindings API (`num_bindings`,
`get_binding_shape`, `execute_async_v2`); TensorRT 10 the name-based one (`num_io_tensors`,
`set_tensor_address`, `execute_async_v3`). We ask the engine which it has (`hasattr`), never
compare version strings. Buffers are page-locked host arrays + device memory from pycuda, or
from cuda-python when pycuda is absent; the CUDA context is pushed around every call because
the loop's inference thread is not the thread that loaded the engine (edge_runtime.cuda_memory).

An engine only runs on the GPU model and TensorRT version that built it: the metadata JSON
written by `export.trt` says which; a mismatch rebuilds from the ONNX bundle when it lies next
to the engine, and otherwise stops with one line saying what to do.
"""

import json
import os

import numpy as np

from edge_runtime.cuda_memory import open_memory
from edge_runtime.errors import ModelError
from export.bundle import METADATA_KEY, BundleError, from_props

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "nanoprune", "engines")


def engine_metadata_path(engine_path):
    """`m.fp16.engine` -> `m.fp16.json` (export.trt.builder.metadata_path's rule)."""
    return os.path.splitext(str(engine_path))[0] + ".json"


def read_engine_record(engine_path):
    path = engine_metadata_path(engine_path)
    if not os.path.exists(path):
        raise ModelError(
            "{}: its metadata {} is missing; build engines with `python -m export engine m.onnx` "
            "(which writes both) or pass the .onnx bundle".format(engine_path, path)
        )
    try:
        with open(path) as f:
            record = json.load(f)
    except ValueError as exc:
        raise ModelError("{}: not JSON: {}".format(path, exc)) from exc
    if "bundle" not in record:
        raise ModelError("{}: no 'bundle' metadata (not written by export.trt)".format(path))
    return record


class TensorSpec(object):
    __slots__ = ("name", "shape", "dtype", "is_input")

    def __init__(self, name, shape, dtype, is_input):
        self.name, self.shape, self.dtype, self.is_input = name, tuple(shape), dtype, is_input


def bindings_io(trt, engine):
    """TensorRT 8.x: I/O by binding index."""
    return [
        TensorSpec(
            engine.get_binding_name(i),
            engine.get_binding_shape(i),
            np.dtype(trt.nptype(engine.get_binding_dtype(i))),
            bool(engine.binding_is_input(i)),
        )
        for i in range(engine.num_bindings)
    ]


def named_io(trt, engine):
    """TensorRT 10: I/O by tensor name."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        specs.append(
            TensorSpec(
                name,
                engine.get_tensor_shape(name),
                np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
            )
        )
    return specs


def engine_io(trt, engine):
    return named_io(trt, engine) if hasattr(engine, "num_io_tensors") else bindings_io(trt, engine)


class TrtBackend(object):
    """TensorRT engine runner with the same interface as OrtBackend.

    Args:
        model_path: .plan/.engine/.trt (with its metadata JSON beside) or an ONNX bundle.
        cache_dir: where engines built from an ONNX are cached (default ~/.cache/nanoprune/engines
            or NANOPRUNE_ENGINE_CACHE).
        precision, workspace_mib: for a build (FP16 and 256 MiB suit the Nano).
        trt, memory: stand-ins for the tensorrt module and the buffer allocator (tests).
    """

    name = "trt"

    def __init__(
        self,
        model_path,
        cache_dir=None,
        precision="fp16",
        workspace_mib=256,
        rebuild=False,
        trt=None,
        memory=None,
        log=print,
        **unused,
    ):
        self.trt = trt or _import_tensorrt()
        self.log = log
        self.memory = memory or open_memory()
        self.threads = None
        # The same GPU name export.trt keys its cache with (NANOPRUNE_GPU_NAME overrides both).
        self.gpu_name = os.environ.get("NANOPRUNE_GPU_NAME") or self.memory.gpu_name
        self.trt_version = str(getattr(self.trt, "__version__", "unknown"))
        self.cache_dir = cache_dir or os.environ.get("NANOPRUNE_ENGINE_CACHE") or DEFAULT_CACHE_DIR
        self.build_args = {"precision": precision, "workspace_mib": workspace_mib}
        try:
            if model_path.lower().endswith(".onnx"):
                engine_path = self._build(model_path, rebuild)
            else:
                engine_path = self._usable_engine(model_path)
            self.model_path = engine_path
            self.record = read_engine_record(engine_path)
            try:
                self.meta = from_props(
                    {METADATA_KEY: json.dumps(self.record["bundle"])}, source=engine_path
                )
            except BundleError as exc:
                raise ModelError(str(exc)) from exc
            self._load(engine_path)
        finally:
            self.memory.pop()

    # -- engine file -------------------------------------------------------------------------
    def _build(self, onnx_path, rebuild=False):
        from export.trt.cache import get_or_build_engine

        try:
            return get_or_build_engine(
                onnx_path,
                self.cache_dir,
                gpu=self.gpu_name,
                trt=self.trt,
                rebuild=rebuild,
                log=self.log,
                **self.build_args,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(
                "{}: cannot build a TensorRT engine: {}".format(onnx_path, exc)
            ) from exc

    def _usable_engine(self, engine_path):
        """The engine itself when it was built here; else a rebuild from the ONNX beside it."""
        record = read_engine_record(engine_path)
        here = (
            ("gpu_name", "GPU", self.gpu_name),
            ("tensorrt_version", "TensorRT", self.trt_version),
        )
        stale = [
            "{} {!r} (this device: {!r})".format(label, record.get(key), value)
            for key, label, value in here
            if record.get(key) != value
        ]
        if not stale:
            return engine_path
        onnx_path = os.path.join(
            os.path.dirname(os.path.abspath(engine_path)), record.get("onnx") or ""
        )
        if record.get("onnx") and os.path.isfile(onnx_path):
            self.log(
                "{} was built for {}: rebuilding from {}".format(
                    engine_path, ", ".join(stale), onnx_path
                )
            )
            return self._build(onnx_path, rebuild=False)
        raise ModelError(
            "{} was built for {}; engines do not move between GPUs or TensorRT versions: build it "
            "on this device with `python -m export engine model.onnx`, or pass the .onnx".format(
                engine_path, ", ".join(stale)
            )
        )

    def _load(self, engine_path):
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with open(engine_path, "rb") as f:
            data = f.read()
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ModelError(
                "{}: TensorRT {} cannot deserialize it (truncated, or built by another TensorRT "
                "version or GPU); rebuild it from the .onnx on this device".format(
                    engine_path, getattr(trt, "__version__", "?")
                )
            )
        self.context = self.engine.create_execution_context()
        self.specs = engine_io(trt, self.engine)
        inputs = [s for s in self.specs if s.is_input]
        if len(inputs) != 1:
            raise ModelError("{}: expected one input, found {}".format(engine_path, len(inputs)))
        self.input_spec = inputs[0]
        self.input_shape = tuple(int(d) for d in self.meta["input_shape"])
        if tuple(int(d) for d in self.input_spec.shape) != self.input_shape:
            raise ModelError(
                "{}: engine input {} differs from the metadata's {}".format(
                    engine_path, self.input_spec.shape, list(self.input_shape)
                )
            )
        self.output_names = [s.name for s in self.specs if not s.is_input]
        self.host, self.dev = {}, {}
        for s in self.specs:
            self.host[s.name] = self.memory.host(s.shape, s.dtype)
            self.dev[s.name] = self.memory.device(self.host[s.name].nbytes)
        if hasattr(self.context, "set_tensor_address"):
            for s in self.specs:
                self.context.set_tensor_address(s.name, self.memory.address(self.dev[s.name]))
        self.bindings = [self.memory.address(self.dev[s.name]) for s in self.specs]

    # -- inference ---------------------------------------------------------------------------
    def infer(self, blob):
        name = self.input_spec.name
        np.copyto(self.host[name], blob.reshape(self.host[name].shape), casting="same_kind")
        self.memory.push()
        try:
            self.memory.to_device(self.dev[name], self.host[name])
            if hasattr(self.context, "execute_async_v3"):
                ok = self.context.execute_async_v3(self.memory.stream_handle)
            else:
                ok = self.context.execute_async_v2(self.bindings, self.memory.stream_handle)
            for out in self.output_names:
                self.memory.to_host(self.host[out], self.dev[out])
            self.memory.synchronize()
        finally:
            self.memory.pop()
        if ok is False:
            raise RuntimeError("TensorRT execution failed on {}".format(self.model_path))
        return {out: self.host[out].copy() for out in self.output_names}

    def describe(self):
        return {
            "backend": self.name,
            "model": os.path.abspath(self.model_path),
            "providers": ["TensorRT"],
            "threads": None,
            "tensorrt": self.trt_version,
            "gpu": self.gpu_name,
            "precision": self.record.get("precision"),
            "api": "name-based (10)"
            if hasattr(self.engine, "num_io_tensors")
            else "bindings (8.x)",
        }

    def close(self):
        self.memory.push()
        try:
            self.context = self.engine = self.runtime = None
            self.host, self.dev = {}, {}
        finally:
            self.memory.pop()
        self.memory.close()


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise ModelError(
            "TensorRT's Python package is not importable: on a Jetson it comes with JetPack "
            "(python3-libnvinfer; in Docker use --runtime nvidia), on a desktop "
            "`pip install 'tensorrt>=8,<11'`; or run the .onnx with --backend ort"
        ) from None
    return tensorrt
