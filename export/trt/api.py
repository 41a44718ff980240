"""What differs between the TensorRT 8.2 (Jetson Nano) and 10 Python APIs, in one place.

Every branch asks the object whether it has the newer attribute (`hasattr`), never compares
version strings: as text "10.0" < "8.2", which is how peers ended up on the pre-7 path.
Torch-free, Python 3.6.
"""

import os
import subprocess

from edge_runtime.user_errors import UserError

MIB = 1 << 20
# Major versions the builder runs on: 8 (the Nano's 8.2) to 10. TensorRT 11 removed the FP16
# and INT8 builder flags, the INT8 calibrator base and platform_has_fast_*.
SUPPORTED_MAJORS = (8, 9, 10)


class TensorRTUnavailable(UserError, RuntimeError):
    """TensorRT is missing here or is a version the builder does not support."""


def major_version(version):
    """'10.3.0.26' -> 10 (a number: as text '10' < '8')."""
    head = str(version).split(".")[0]
    return int(head) if head.isdigit() else None


def check_version(trt):
    """Raise one clear line when this TensorRT is not one the builder supports."""
    version = getattr(trt, "__version__", "unknown")
    if major_version(version) not in SUPPORTED_MAJORS:
        raise TensorRTUnavailable(
            "TensorRT {} is not supported: the engine builder needs TensorRT 8.x (the Nano's "
            "8.2.1) to 10.x (TensorRT 11 removed the FP16/INT8 builder flags); on a desktop "
            "`pip install 'tensorrt>=8,<11'`".format(version)
        )
    return trt


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT's Python package is not importable here ({}). On a Jetson it comes with "
            "JetPack (python3-libnvinfer; in a container use --runtime nvidia with an l4t "
            "image); on a desktop `pip install 'tensorrt>=8,<11'`.".format(exc)
        ) from exc
    return check_version(tensorrt)


def create_network(trt, builder):
    """An explicit-batch network: 8.x needs the EXPLICIT_BATCH flag, 10 has only that mode."""
    flags = 0
    flag_enum = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if flag_enum is not None and hasattr(flag_enum, "EXPLICIT_BATCH"):
        flags = 1 << int(flag_enum.EXPLICIT_BATCH)
    return builder.create_network(flags)


def set_workspace(trt, config, nbytes):
    """Workspace limit: `set_memory_pool_limit` (8.4+, only way on 10), else the 8.2 field."""
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(nbytes))
        return "set_memory_pool_limit"
    config.max_workspace_size = int(nbytes)
    return "max_workspace_size"


def platform_has_fast_int8(builder):
    """None when this TensorRT no longer says (the attribute is deprecated after 10)."""
    return getattr(builder, "platform_has_fast_int8", None)


def platform_has_fast_fp16(builder):
    return getattr(builder, "platform_has_fast_fp16", None)


def _probe_pycuda():
    import pycuda.driver as cuda

    cuda.init()
    return cuda.Device(0).name()


def _probe_cuda_python():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise RuntimeError("cudaGetDeviceProperties failed: {}".format(err))
    name = props.name
    return name.decode("utf-8", "replace").rstrip("\x00") if isinstance(name, bytes) else str(name)


def _probe_nvidia_smi():
    out = subprocess.check_output(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"], timeout=20
    )
    return out.decode("utf-8").strip().splitlines()[0]


def _probe_jetson_model():
    # Jetsons have no nvidia-smi; the device tree names the module ("NVIDIA Jetson Nano ...").
    with open("/proc/device-tree/model", "rb") as f:
        return f.read().decode("utf-8", "replace").rstrip("\x00").strip()


# Tried in order; the first that answers names the GPU in the engine cache key.
GPU_NAME_PROBES = (
    ("pycuda", _probe_pycuda),
    ("cuda-python", _probe_cuda_python),
    ("jetson-device-tree", _probe_jetson_model),
    ("nvidia-smi", _probe_nvidia_smi),
)


def gpu_name():
    """The GPU's name for the cache key; NANOPRUNE_GPU_NAME overrides (e.g. in CI)."""
    forced = os.environ.get("NANOPRUNE_GPU_NAME")
    if forced:
        return forced
    errors = []
    for label, probe in GPU_NAME_PROBES:
        try:
            name = probe()
        except Exception as exc:  # each probe may be absent on this machine: try the next
            errors.append("{}: {}".format(label, exc))
            continue
        if name:
            return name
    raise RuntimeError("cannot name the GPU (" + "; ".join(errors) + "); set NANOPRUNE_GPU_NAME")
