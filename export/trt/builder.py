"""ONNX bundle -> serialized TensorRT engine + its metadata JSON (torch-free, Python 3.6).

Runs where the engine will run (engines do not move between GPUs or TensorRT versions):

    from export.trt.builder import build_engine
    record = build_engine("m.onnx", "m.fp16.engine", precision="fp16", workspace_mib=256)

FP16 everywhere; INT8 (entropy calibration over an image folder) only where the builder says
`platform_has_fast_int8`, which the Nano's Maxwell GPU does not. The workspace defaults to
256 MiB because a Nano build runs out of memory with TensorRT's 1 GiB default unless swap is on.
"""

import os
import shlex
import time

from edge_runtime import files
from edge_runtime.user_errors import UserError
from export.trt import api
from export.trt.calibrator import CalibrationImages, make_entropy_calibrator
from export.trt.onnx_meta import read_bundle_meta

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MIB = 256


class EngineBuildError(UserError, RuntimeError):
    """The engine cannot be built as asked; the message says why and what to do."""


def metadata_path(engine_path):
    """Where the metadata JSON of an engine lives: next to it, same stem."""
    return os.path.splitext(str(engine_path))[0] + ".json"


def trtexec_command(
    onnx_path,
    engine_path,
    precision="fp16",
    workspace_mib=DEFAULT_WORKSPACE_MIB,
    timing_cache=None,
    dla_core=None,
    calib_cache=None,
    memory_pool_api=False,
):
    """The `trtexec` line that builds (and times) the same engine, for users who check by hand.

    `memory_pool_api`: TensorRT 8.4+ trtexec takes --memPoolSize, 8.2 only --workspace.
    """
    args = ["trtexec", "--onnx=" + str(onnx_path), "--saveEngine=" + str(engine_path)]
    if precision in ("fp16", "int8"):
        args.append("--fp16")
    if precision == "int8":
        args.append("--int8")
        if calib_cache:
            args.append("--calib=" + str(calib_cache))
    if memory_pool_api:
        args.append("--memPoolSize=workspace:{}".format(int(workspace_mib)))
    else:
        args.append("--workspace={}".format(int(workspace_mib)))
    if timing_cache:
        args.append("--timingCacheFile=" + str(timing_cache))
    if dla_core is not None:
        args += ["--useDLACore={}".format(int(dla_core)), "--allowGPUFallback"]
    args.append("--avgRuns=100")
    return " ".join(shlex.quote(a) for a in args)


def _parse_onnx(trt, builder, logger, onnx_path):
    network = api.create_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    with open(str(onnx_path), "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            "{}: TensorRT's ONNX parser refused the model:\n  {}\nRun `python -m export check {} "
            "--target nano` on the workstation to see every unsupported node.".format(
                onnx_path, "\n  ".join(errors) or "(no error given)", onnx_path
            )
        )
    # keep the parser alive with the network: it owns the weights the network points to
    return network, parser


def _set_precision(trt, builder, config, precision, gpu, calibrator_args):
    """Builder flags for the precision; returns a list of warnings for the record."""
    warnings = []
    if precision not in PRECISIONS:
        raise EngineBuildError(
            "precision must be one of {}, got {!r}".format(PRECISIONS, precision)
        )
    if precision == "int8":
        if api.platform_has_fast_int8(builder) is False:
            raise EngineBuildError(
                "INT8 refused: this GPU ({}) has no fast INT8 (platform_has_fast_int8 is False). "
                "The Jetson Nano's Maxwell GPU (sm_53) is one of them: build with --fp16 "
                "instead.".format(gpu)
            )
        images, cache, meta = calibrator_args
        if not images and not (cache and os.path.exists(cache)):
            raise EngineBuildError(
                "INT8 needs calibration: give --calib-images DIR (a few hundred frames like the "
                "deployment's) or an existing --calib-cache"
            )
        source = CalibrationImages(images, meta) if images else iter(())
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_entropy_calibrator(trt, source, cache)
    if precision in ("fp16", "int8"):
        # INT8 engines keep FP16 for the layers that have no INT8 kernel
        if api.platform_has_fast_fp16(builder) is False:
            warnings.append("this GPU has no fast FP16: the FP16 engine may be slower than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
    return warnings


def _set_dla(trt, builder, config, dla_core):
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if dla_core >= cores:
        raise EngineBuildError(
            "DLA core {} asked for, but this device has {} DLA core(s) (the Nano has none; "
            "Xavier and Orin have 1-2)".format(dla_core, cores)
        )
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(dla_core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _add_profile_if_dynamic(builder, config, network, max_batch):
    """A dynamic-batch ONNX needs an optimization profile; a static one needs none."""
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        if any(d < 0 for d in shape[1:]):
            raise EngineBuildError(
                "input {} has dynamic dims besides the batch {}: export with a static "
                "1x3xHxW input".format(tensor.name, shape)
            )
        profile = profile or builder.create_optimization_profile()
        rest = tuple(shape[1:])
        profile.set_shape(tensor.name, (1,) + rest, (1,) + rest, (int(max_batch),) + rest)
    if profile is not None:
        config.add_optimization_profile(profile)


def _load_timing_cache(config, path):
    if not path or not hasattr(config, "create_timing_cache"):
        return None
    data = b""
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: a foreign cache is refused
    return cache


def build_engine(
    onnx_path,
    engine_path,
    precision="fp16",
    workspace_mib=DEFAULT_WORKSPACE_MIB,
    timing_cache=None,
    dla_core=None,
    calib_images=None,
    calib_cache=None,
    max_batch=1,
    gpu=None,
    extra_record=None,
    trt=None,
    verbose=False,
    log=print,
):
    """Build and write `engine_path` (atomically) and its metadata JSON; return the metadata.

    Args:
        onnx_path: a nanoprune bundle (python -m export onnx); its metadata is copied.
        precision: "fp16" (default), "fp32" or "int8" (needs calib_images or calib_cache).
        workspace_mib: builder workspace limit in MiB (256 is safe on a 4 GB Nano).
        timing_cache: a file the builder's layer timings are read from and saved to, so a
            rebuild on the same GPU and TensorRT takes seconds, not minutes.
        dla_core: run on this DLA core with GPU fallback (Xavier/Orin; the Nano has no DLA).
        gpu: the GPU name written into the metadata (probed when None).
        trt: the tensorrt module (tests pass a stand-in).
    """
    trt = api.check_version(trt or api.import_tensorrt())  # also the runtime's own module
    meta = read_bundle_meta(onnx_path)
    gpu = gpu or api.gpu_name()
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    workspace_api = api.set_workspace(trt, config, int(workspace_mib) * api.MIB)
    if calib_images and not calib_cache:
        calib_cache = os.path.splitext(str(engine_path))[0] + ".calib"
    warnings = _set_precision(
        trt, builder, config, precision, gpu, (calib_images, calib_cache, meta)
    )
    if dla_core is not None:
        _set_dla(trt, builder, config, dla_core)
    _add_profile_if_dynamic(builder, config, network, max_batch)
    _load_timing_cache(config, timing_cache)
    command = trtexec_command(
        onnx_path,
        engine_path,
        precision,
        workspace_mib,
        timing_cache,
        dla_core,
        calib_cache,
        workspace_api == "set_memory_pool_limit",
    )
    log(
        "building {} engine from {} (workspace {} MiB); the same with trtexec:\n  {}".format(
            precision, onnx_path, workspace_mib, command
        )
    )

    start = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            "TensorRT could not build {} ({}); see its log above. Out of memory on a Nano: "
            "lower --workspace-mib or turn on swap.".format(onnx_path, precision)
        )
    data = bytes(serialized)
    files.atomic_write_bytes(str(engine_path), data)
    if timing_cache and hasattr(config, "get_timing_cache"):
        files.atomic_write_bytes(str(timing_cache), bytes(config.get_timing_cache().serialize()))

    record = {
        "bundle": meta,
        "onnx": os.path.basename(str(onnx_path)),
        "onnx_sha256": files.sha256_file(str(onnx_path)),
        "engine": os.path.basename(str(engine_path)),
        "engine_sha256": files.sha256_file(str(engine_path)),
        "engine_bytes": len(data),
        "tensorrt_version": str(getattr(trt, "__version__", "unknown")),
        "gpu_name": gpu,
        "precision": precision,
        "workspace_mib": int(workspace_mib),
        "workspace_api": workspace_api,
        "dla_core": dla_core,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "calibration_cache": str(calib_cache) if precision == "int8" else None,
        "build_seconds": round(time.time() - start, 2),
        "trtexec": command,
        "warnings": warnings,
    }
    record.update(extra_record or {})
    files.atomic_write_json(metadata_path(engine_path), record)
    for w in warnings:
        log("warning: " + w)
    return record
