"""export's TensorRT side on the device: metadata without onnx, preprocessing, engine cache,
and the engine verb's answers where TensorRT is absent."""

import numpy as np
import pytest

from export.trt.cache import cache_key, engine_path_for, key_digest
from export.trt.onnx_meta import read_bundle_meta, read_props_wire
from export.trt.preprocess import letterbox, preprocess
from tests.device.helpers import run_module


def test_metadata_reads_without_the_onnx_package(bundle):
    meta = read_bundle_meta(bundle("trt-m.onnx"))
    assert list(meta["classes"]) == ["person", "rider"]
    with open(bundle("plain.onnx"), "rb") as f:
        assert "nanoprune" not in " ".join(read_props_wire(f.read()))


def test_preprocess_letterboxes_to_the_bundle_input(bundle):
    meta = read_bundle_meta(bundle("grid.onnx"))
    frame = np.full((120, 160, 3), 200, np.uint8)
    blob, _, pad = preprocess(frame, meta)
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    boxed, ratio, pad = letterbox(frame, 64, 64)
    assert ratio == (0.4, 0.4) and pad == (0, 8)
    assert boxed.shape[:2] == (64, 64) and (boxed[0] == 114).all()  # pad rows above


def test_engine_cache_names_change_with_every_part_of_the_key(tmp_path, bundle):
    onnx_path = bundle("trt-m.onnx")
    base = cache_key("NVIDIA Tegra X1", "8.2.1", "fp16", "ab" * 32)
    names = {engine_path_for(str(tmp_path), onnx_path, base)}
    for changed in (
        cache_key("Orin", "8.2.1", "fp16", "ab" * 32),
        cache_key("NVIDIA Tegra X1", "10.3.0", "fp16", "ab" * 32),
        cache_key("NVIDIA Tegra X1", "8.2.1", "fp32", "ab" * 32),
        cache_key("NVIDIA Tegra X1", "8.2.1", "fp16", "cd" * 32),
    ):
        names.add(engine_path_for(str(tmp_path), onnx_path, changed))
        assert key_digest(changed) != key_digest(base)
    assert len(names) == 5


def test_engine_verb_prints_trtexec_and_says_when_tensorrt_is_absent(bundle):
    onnx_path = bundle("trt-m.onnx")
    proc = run_module("-m", "export", "engine", onnx_path, "--fp16", "--print-trtexec")
    assert proc.returncode == 0, proc.stderr
    assert "trtexec --onnx=" in proc.stdout and "--fp16" in proc.stdout
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        proc = run_module("-m", "export", "engine", onnx_path)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert "tensorrt" in proc.stderr.lower()
    else:
        pytest.skip("TensorRT is installed: the missing-library answer is not reachable")
