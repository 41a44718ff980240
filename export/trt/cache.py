"""An engine cache keyed by (GPU name, TensorRT version, precision, ONNX sha256).

An engine only runs on the GPU model and TensorRT version that built it, so the edge runtime
asks for one with `get_or_build_engine(onnx, cache_dir, "fp16")`: a hit returns the cached
file at once, any change of key (a new model, a JetPack upgrade, another board) builds anew.
The key's digest is part of the file name, so engines for several boards can share a folder.
Torch-free, Python 3.6.
"""

import hashlib
import json
import os
import re

from edge_runtime import files
from export.trt import api
from export.trt.builder import DEFAULT_WORKSPACE_MIB, build_engine, metadata_path

KEY_FIELDS = ("gpu_name", "tensorrt_version", "precision", "onnx_sha256", "dla_core")


def cache_key(gpu_name, tensorrt_version, precision, onnx_sha256, dla_core=None):
    """The fields an engine depends on (a DLA engine differs from a GPU one, too)."""
    return {
        "gpu_name": str(gpu_name),
        "tensorrt_version": str(tensorrt_version),
        "precision": str(precision),
        "onnx_sha256": str(onnx_sha256),
        "dla_core": None if dla_core is None else int(dla_core),
    }


def key_digest(key):
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "x"


def engine_path_for(cache_dir, onnx_path, key):
    stem = os.path.splitext(os.path.basename(str(onnx_path)))[0]
    name = "{}.{}.{}.engine".format(stem, key["precision"], key_digest(key))
    return os.path.join(str(cache_dir), name)


def timing_cache_path_for(cache_dir, key):
    """One timing cache per (GPU, TensorRT): layer timings are shared by all models there."""
    return os.path.join(
        str(cache_dir),
        "timing-{}-trt{}.cache".format(_slug(key["gpu_name"]), _slug(key["tensorrt_version"])),
    )


def lookup(engine_path, key):
    """Why the cached engine cannot be used (a string), or None when it can."""
    meta_path = metadata_path(engine_path)
    if not os.path.exists(engine_path) or not os.path.exists(meta_path):
        return "not built yet"
    try:
        with open(meta_path) as f:
            record = json.load(f)
    except ValueError as exc:
        return "metadata unreadable ({})".format(exc)
    stale = [k for k in KEY_FIELDS if record.get(k) != key[k]]
    if stale:
        return "built for another " + ", ".join(stale)
    if record.get("engine_sha256") != files.sha256_file(engine_path):
        return "engine file changed since it was built"
    return None


def get_or_build_engine(
    onnx_path,
    cache_dir,
    precision="fp16",
    workspace_mib=DEFAULT_WORKSPACE_MIB,
    dla_core=None,
    calib_images=None,
    rebuild=False,
    timing_cache=True,
    gpu=None,
    trt=None,
    verbose=False,
    log=print,
):
    """The path of an engine for `onnx_path` on this GPU and TensorRT, built when needed.

    Args:
        cache_dir: folder of engines + metadata JSONs (+ the timing cache).
        rebuild: build even when a matching engine is cached.
        timing_cache: True = a per-(GPU, TensorRT) timing cache in cache_dir; a path; or False.
    """
    if not os.path.isfile(str(onnx_path)):
        raise FileNotFoundError("{}: no such ONNX model".format(onnx_path))
    trt = trt or api.import_tensorrt()
    gpu = gpu or api.gpu_name()
    key = cache_key(
        gpu,
        getattr(trt, "__version__", "unknown"),
        precision,
        files.sha256_file(str(onnx_path)),
        dla_core,
    )
    engine_path = engine_path_for(cache_dir, onnx_path, key)
    reason = "rebuild asked for" if rebuild else lookup(engine_path, key)
    if reason is None:
        log("engine cache hit: {}".format(engine_path))
        return engine_path
    log("engine cache miss for {} ({}): building".format(onnx_path, reason))
    if timing_cache is True:
        timing_cache = timing_cache_path_for(cache_dir, key)
    build_engine(
        onnx_path,
        engine_path,
        precision=precision,
        workspace_mib=workspace_mib,
        timing_cache=timing_cache or None,
        dla_core=dla_core,
        calib_images=calib_images,
        gpu=gpu,
        extra_record={"cache_key": key},
        trt=trt,
        verbose=verbose,
        log=log,
    )
    return engine_path
