"""Inference backends behind one small interface, picked by file suffix or by name.

A backend loads one model bundle and offers:
    .meta          the bundle metadata (export.bundle format)
    .input_shape   (1, 3, H, W)
    .infer(blob)   float32 [1, 3, H, W] -> {output name: numpy array}
    .describe()    {backend, providers/device, threads, versions} for stats and benchmarks
    .close()

`open_backend(path, backend="auto")`: ".onnx" -> onnxruntime, ".plan"/".engine"/".trt" ->
TensorRT; `backend="trt"` with an ONNX builds (or reuses) a cached engine through export.trt.
"""

import os

from edge_runtime.errors import ModelError
from export.bundle import BundleError, from_props

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")

DEFAULT_ORT_TRT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "nanoprune", "ort-trt")

# onnxruntime execution providers, best first; only those this build offers are used.
ORT_PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


def check_model_file(path):
    """The file exists, is a file and is not empty; else one clear ModelError."""
    if not os.path.exists(path):
        raise ModelError("model file not found: {}".format(path))
    if not os.path.isfile(path):
        raise ModelError("model path is not a file: {}".format(path))
    if os.path.getsize(path) == 0:
        raise ModelError("model file is empty: {}".format(path))


def first_line(exc, limit=200):
    text = str(exc).strip().splitlines()
    text = text[0] if text else exc.__class__.__name__
    return text if len(text) <= limit else text[:limit] + "..."


def ort_providers(
    available, wanted=None, cache_dir=None, precision="fp16", workspace_mib=256, **unused
):
    """onnxruntime's providers argument: the wanted (or best available) providers, the
    TensorRT one with FP16, a Nano-sized workspace and an engine cache, so that a restart does
    not rebuild the engine for minutes."""
    names = list(wanted or [p for p in ORT_PROVIDER_PREFERENCE if p in available])
    result = []
    for name in names:
        if name == "TensorrtExecutionProvider":
            cache = cache_dir or os.environ.get("NANOPRUNE_ENGINE_CACHE") or DEFAULT_ORT_TRT_CACHE
            options = {
                "trt_fp16_enable": precision == "fp16",
                "trt_max_workspace_size": int(workspace_mib) << 20,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
            }
            result.append((name, options))
        else:
            result.append(name)
    return result


class OrtBackend(object):
    """onnxruntime: CPU everywhere; CUDA / TensorRT execution providers when the build has them."""

    name = "ort"

    def __init__(self, model_path, threads=None, providers=None, spin=False, **trt_options):
        check_model_file(model_path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(
                "onnxruntime is not installed: `pip install onnxruntime` (or the Jetson wheel "
                "from the Jetson Zoo), or run a TensorRT engine with --backend trt"
            ) from None
        self.model_path = model_path
        self.threads = threads
        opts = ort.SessionOptions()
        # One model, one frame at a time: parallelism inside ops only, a fixed thread count
        # so that timings are comparable between runs.
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        # Worker threads that spin while idle steal the core the capture/pre/post threads of
        # the loop need; sleeping costs well under a millisecond per frame.
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "0" if spin is False else "1"
        )
        wanted = ort_providers(ort.get_available_providers(), providers, **trt_options)
        try:
            self.session = ort.InferenceSession(model_path, sess_options=opts, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own pybind types
            raise ModelError(
                "{}: onnxruntime cannot load it (not an ONNX model, or truncated): {}".format(
                    model_path, first_line(exc)
                )
            ) from exc
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.meta = from_props(props, source=model_path)
        except BundleError as exc:
            raise ModelError(str(exc)) from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError("{}: expected one input, found {}".format(model_path, len(inputs)))
        self.input_name = inputs[0].name
        if self.input_name != self.meta["input_name"]:
            raise ModelError(
                "{}: metadata names input {!r} but the graph's input is {!r}".format(
                    model_path, self.meta["input_name"], self.input_name
                )
            )
        self.input_shape = tuple(int(d) for d in self.meta["input_shape"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        outs = self.meta["outputs"]
        missing = [n for n in (outs["boxes"], outs["scores"]) if n not in self.output_names]
        if missing:
            raise ModelError(
                "{}: metadata names outputs {} that the graph lacks (graph has {})".format(
                    model_path, missing, self.output_names
                )
            )
        self.providers = self.session.get_providers()
        self.version = ort.__version__

    def infer(self, blob):
        values = self.session.run(self.output_names, {self.input_name: blob})
        return dict(zip(self.output_names, values))

    def describe(self):
        return {
            "backend": self.name,
            "model": os.path.abspath(self.model_path),
            "providers": list(self.providers),
            "threads": self.threads,
            "onnxruntime": self.version,
        }

    def close(self):
        self.session = None


def _trt_backend(model_path, threads=None, **options):
    # Imported on demand: the module itself is light, TensorRT and pycuda load in __init__.
    from edge_runtime.trt_backend import TrtBackend

    return TrtBackend(model_path, **options)


# backend name -> factory(model_path, threads=None, **options)
BACKENDS = {
    "ort": OrtBackend,
    "trt": _trt_backend,
}


def backend_for_path(model_path):
    """The default backend for a file: by suffix."""
    suffix = os.path.splitext(model_path)[1].lower()
    if suffix in ONNX_SUFFIXES:
        return "ort"
    if suffix in ENGINE_SUFFIXES:
        return "trt"
    raise ModelError(
        "{}: unknown model type {!r}; expected an ONNX bundle ({}) or a TensorRT engine ({})".format(
            model_path,
            suffix or "(no suffix)",
            ", ".join(ONNX_SUFFIXES),
            ", ".join(ENGINE_SUFFIXES),
        )
    )


def open_backend(model_path, backend="auto", threads=None, **options):
    """Load `model_path` on `backend` ("auto", "ort" or "trt")."""
    model_path = str(model_path)
    check_model_file(model_path)
    name = backend_for_path(model_path) if backend in (None, "auto") else backend
    if name not in BACKENDS:
        raise ModelError(
            "unknown backend {!r}; choose one of: auto, {}".format(
                name, ", ".join(sorted(BACKENDS))
            )
        )
    if name == "ort" and os.path.splitext(model_path)[1].lower() in ENGINE_SUFFIXES:
        raise ModelError(
            "{} is a TensorRT engine: onnxruntime cannot run it; use --backend trt or the .onnx".format(
                model_path
            )
        )
    return BACKENDS[name](model_path, threads=threads, **options)
