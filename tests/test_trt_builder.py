"""TensorRT engine builder and cache, against stand-ins for the TensorRT 8.2 and 10 APIs.

The stand-ins record what the builder asked for; the real TensorRT build runs only where
`tensorrt` imports and a GPU is present (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_runtime import files
from export import bundle
from export.trt import calibrator as calib_mod
from export.trt.builder import EngineBuildError, build_engine, metadata_path, trtexec_command
from export.trt.cache import cache_key, engine_path_for, get_or_build_engine, key_digest
from export.trt.cli import get_args_parser
from export.trt.cli import main as engine_main

H, W = 48, 64


def make_bundle(path, dynamic=False, classes=("person",), tag=""):
    """A small valid bundle: images -> (boxes, scores) through a 1x1 conv and sigmoid."""
    batch = "batch" if dynamic else 1
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, H, W])
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, H * W, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, H * W, 1])
    weight = helper.make_tensor(
        "w", TensorProto.FLOAT, [5, 3, 1, 1], np.linspace(-1, 1, 15).tolist()
    )
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 5, H * W])
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], name="head"),
        helper.make_node("Reshape", ["c", "shape"], ["r"], name="flat"),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1], name="nhwc"),
        helper.make_node("Split", ["t"], ["b", "s"], axis=2, split=[4, 1], name="split"),
        helper.make_node("Relu", ["b"], ["boxes"], name="box_act"),
        helper.make_node("Sigmoid", ["s"], ["scores"], name="score_act"),
    ]
    graph = helper.make_graph(nodes, "g" + tag, [x], [boxes, scores], [weight, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    meta = bundle.make_meta(name="tiny" + tag, family="yolo", input_name="images",
                            input_shape=[1, 3, H, W], classes=list(classes))  # fmt: skip
    helper.set_model_props(model, bundle.to_props(meta))
    path.write_bytes(model.SerializeToString())
    return path


# --- stand-ins for the tensorrt module ----------------------------------------------------------


class _Enum:
    def __init__(self, **values):
        self.__dict__.update(values)


class FakeTensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class FakeNetwork:
    def __init__(self, flags):
        self.flags = flags
        self.inputs = []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class FakeParser:
    def __init__(self, network, logger):
        self.network, self.errors = network, []

    def parse(self, data):
        model = onnx.load_from_string(data)
        for op in {n.op_type for n in model.graph.node}:
            if op == "NonZero":
                self.errors.append(f"No importer registered for op: {op}")
        dims = model.graph.input[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
        self.network.inputs.append(FakeTensor(model.graph.input[0].name, shape))
        return not self.errors

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]


class FakeTimingCache:
    def __init__(self, data):
        self.data = data

    def serialize(self):
        return self.data + b"+timings"


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (lo, opt, hi)


class Config82:
    """8.2: `max_workspace_size`, no memory pools."""

    def __init__(self):
        self.flags, self.profiles = set(), []
        self.max_workspace_size = 1 << 30
        self.int8_calibrator = None
        self.timing_cache = None
        self.default_device_type, self.DLA_core = None, -1

    def set_flag(self, flag):
        self.flags.add(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, data):
        return FakeTimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache


class Config10(Config82):
    """10: memory pools; `max_workspace_size` is gone."""

    def __init__(self):
        super().__init__()
        del self.max_workspace_size
        self.pools = {}

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size


class FakeBuilder:
    fast_int8 = True
    config_cls = Config82
    dla_cores = 0
    builds = 0

    def __init__(self, logger):
        self.platform_has_fast_int8 = self.fast_int8
        self.platform_has_fast_fp16 = True
        self.num_DLA_cores = self.dla_cores

    def create_network(self, flags):
        self.network = FakeNetwork(flags)
        return self.network

    def create_builder_config(self):
        self.config = self.config_cls()
        return self.config

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        type(self).builds += 1
        calibrated = []
        if config.int8_calibrator is not None:  # what TensorRT does: pull batches, save table
            cal = config.int8_calibrator
            assert cal.get_batch_size() == 1 and cal.read_calibration_cache() is None
            while (ptrs := cal.get_batch(["images"])) is not None:
                calibrated.append(ptrs)
            cal.write_calibration_cache(b"calibration-table")
        state = {
            "flags": network.flags,
            "precision": sorted(config.flags),
            "calibrated": len(calibrated),
        }
        return json.dumps(state).encode()


def fake_trt(api: str, fast_int8: bool = True, version: str | None = None, dla_cores: int = 0):
    """A tensorrt-like module: api "8.2" (EXPLICIT_BATCH flag, max_workspace_size) or "10"."""
    builder = type("Builder", (FakeBuilder,), {
        "fast_int8": fast_int8, "config_cls": Config82 if api == "8.2" else Config10,
        "dla_cores": dla_cores, "builds": 0,
    })  # fmt: skip
    trt = types.SimpleNamespace(
        __version__=version or ("8.2.1.8" if api == "8.2" else "10.0.1.6"),
        Logger=type(
            "Logger", (), {"VERBOSE": 0, "WARNING": 2, "__init__": lambda self, level: None}
        ),
        Builder=builder,
        OnnxParser=FakeParser,
        BuilderFlag=_Enum(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK"),
        DeviceType=_Enum(GPU="GPU", DLA="DLA"),
        IInt8EntropyCalibrator2=type(
            "IInt8EntropyCalibrator2", (), {"__init__": lambda self: None}
        ),
        NetworkDefinitionCreationFlag=_Enum(EXPLICIT_BATCH=0)
        if api == "8.2"
        else _Enum(STRONGLY_TYPED=1),
    )
    if api != "8.2":
        trt.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
    return trt


def quiet(*_args):
    pass


# --- builder ---------------------------------------------------------------------------------


def test_trt82_api_explicit_batch_and_max_workspace(tmp_path):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    trt = fake_trt("8.2")
    engine = tmp_path / "m.fp16.engine"
    record = build_engine(
        onnx_path, engine, precision="fp16", gpu="NVIDIA Tegra X1", trt=trt, log=quiet
    )
    built = json.loads(engine.read_bytes())
    assert built["flags"] == 1 << 0  # 1 << EXPLICIT_BATCH
    assert built["precision"] == ["FP16"]
    assert record["workspace_api"] == "max_workspace_size" and record["workspace_mib"] == 256
    assert "--workspace=256" in record["trtexec"] and "--fp16" in record["trtexec"]
    side = json.loads((tmp_path / "m.fp16.json").read_text())
    assert side["bundle"]["classes"] == ["person"] and side["bundle"]["input_shape"] == [1, 3, H, W]
    assert side["tensorrt_version"] == "8.2.1.8" and side["gpu_name"] == "NVIDIA Tegra X1"
    assert side["onnx_sha256"] == files.sha256_file(str(onnx_path))
    assert side["engine_sha256"] == files.sha256_file(str(engine))


def test_trt10_api_memory_pool_and_no_batch_flag(tmp_path):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    trt = fake_trt("10")
    captured = {}

    class Spy(trt.Builder):
        def create_builder_config(self):
            captured["config"] = super().create_builder_config()
            return captured["config"]

    trt.Builder = Spy
    record = build_engine(
        onnx_path, tmp_path / "m.engine", workspace_mib=512, gpu="RTX", trt=trt, log=quiet
    )
    assert captured["config"].pools == {"WORKSPACE": 512 << 20}
    assert json.loads((tmp_path / "m.engine").read_bytes())["flags"] == 0
    assert record["workspace_api"] == "set_memory_pool_limit"
    assert "--memPoolSize=workspace:512" in record["trtexec"]


def test_version_strings_are_never_compared():
    """A '10.x' TensorRT whose objects look like 8.2 takes the 8.2 path, and vice versa."""
    from export.trt import api

    cfg82, cfg10 = Config82(), Config10()
    assert api.set_workspace(fake_trt("10", version="8.2.1"), cfg10, 1) == "set_memory_pool_limit"
    assert api.set_workspace(fake_trt("8.2", version="10.3.0"), cfg82, 1) == "max_workspace_size"


def test_int8_is_refused_on_the_nano(tmp_path):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    images = tmp_path / "calib"
    images.mkdir()
    trt = fake_trt("8.2", fast_int8=False)
    with pytest.raises(EngineBuildError, match="INT8 refused.*Nano"):
        build_engine(onnx_path, tmp_path / "m.engine", precision="int8", calib_images=str(images),
                     gpu="NVIDIA Tegra X1", trt=trt, log=quiet)  # fmt: skip
    assert not (tmp_path / "m.engine").exists()


def test_int8_calibrates_on_preprocessed_images(tmp_path, monkeypatch):
    import cv2

    onnx_path = make_bundle(tmp_path / "m.onnx")
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.full((120, 200, 3), 40 * i, np.uint8))
    uploads = []

    class HostBuffer:
        def __init__(self, nbytes):
            self.ptr = 1234

        def upload(self, array):
            uploads.append(array.copy())

    monkeypatch.setattr(calib_mod, "BUFFER_BACKENDS", (("host", HostBuffer),))
    engine = tmp_path / "m.int8.engine"
    record = build_engine(onnx_path, engine, precision="int8", calib_images=str(folder), gpu="RTX",
                          trt=fake_trt("10"), log=quiet)  # fmt: skip
    assert json.loads(engine.read_bytes())["calibrated"] == 3
    assert sorted(json.loads(engine.read_bytes())["precision"]) == ["FP16", "INT8"]
    assert [u.shape for u in uploads] == [(1, 3, H, W)] * 3 and uploads[0].dtype == np.float32
    assert (tmp_path / "m.int8.calib").read_bytes() == b"calibration-table"
    assert record["calibration_cache"].endswith("m.int8.calib")
    assert "--int8" in record["trtexec"] and "--calib=" in record["trtexec"]


def test_int8_without_calibration_data_is_an_error(tmp_path):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    with pytest.raises(EngineBuildError, match="calib-images"):
        build_engine(
            onnx_path,
            tmp_path / "m.engine",
            precision="int8",
            gpu="RTX",
            trt=fake_trt("10"),
            log=quiet,
        )


def test_parser_errors_name_the_op(tmp_path):
    path = make_bundle(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("NonZero", ["scores"], ["nz"], name="nz"))
    path.write_bytes(model.SerializeToString())
    with pytest.raises(EngineBuildError, match="(?s)NonZero.*python -m export check"):
        build_engine(path, tmp_path / "m.engine", gpu="x", trt=fake_trt("8.2"), log=quiet)


def test_dla_refused_without_cores_and_set_with_them(tmp_path):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    with pytest.raises(EngineBuildError, match="0 DLA core"):
        build_engine(
            onnx_path, tmp_path / "a.engine", dla_core=0, gpu="x", trt=fake_trt("8.2"), log=quiet
        )
    record = build_engine(onnx_path, tmp_path / "b.engine", dla_core=1, gpu="Xavier",
                          trt=fake_trt("8.2", dla_cores=2), log=quiet)  # fmt: skip
    assert record["dla_core"] == 1 and "--useDLACore=1 --allowGPUFallback" in record["trtexec"]


def test_dynamic_batch_gets_an_optimization_profile(tmp_path):
    onnx_path = make_bundle(tmp_path / "d.onnx", dynamic=True)
    trt = fake_trt("10")
    seen = {}

    class Spy(trt.Builder):
        def build_serialized_network(self, network, config):
            seen["profiles"] = config.profiles
            return super().build_serialized_network(network, config)

    trt.Builder = Spy
    build_engine(onnx_path, tmp_path / "d.engine", max_batch=4, gpu="x", trt=trt, log=quiet)
    (profile,) = seen["profiles"]
    assert profile.shapes["images"] == ((1, 3, H, W), (1, 3, H, W), (4, 3, H, W))


def test_build_failure_is_reported_and_writes_nothing(tmp_path):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    trt = fake_trt("8.2")
    trt.Builder.build_serialized_network = lambda self, n, c: None
    with pytest.raises(EngineBuildError, match="workspace"):
        build_engine(onnx_path, tmp_path / "m.engine", gpu="x", trt=trt, log=quiet)
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.json").exists()


def test_trtexec_command_for_both_versions():
    old = trtexec_command("a b.onnx", "a.engine", "fp16", 256)
    assert old.startswith("trtexec '--onnx=a b.onnx' --saveEngine=a.engine --fp16 --workspace=256")
    new = trtexec_command(
        "m.onnx", "m.engine", "fp32", 128, timing_cache="t.cache", memory_pool_api=True
    )
    assert (
        "--fp16" not in new
        and "--memPoolSize=workspace:128" in new
        and "--timingCacheFile=t.cache" in new
    )


# --- cache -------------------------------------------------------------------------------------


def test_cache_key_changes_with_each_field():
    base = cache_key("NVIDIA Tegra X1", "8.2.1.8", "fp16", "ab" * 32)
    variants = [
        cache_key("Orin", "8.2.1.8", "fp16", "ab" * 32),
        cache_key("NVIDIA Tegra X1", "8.2.1.9", "fp16", "ab" * 32),
        cache_key("NVIDIA Tegra X1", "8.2.1.8", "fp32", "ab" * 32),
        cache_key("NVIDIA Tegra X1", "8.2.1.8", "fp16", "cd" * 32),
        cache_key("NVIDIA Tegra X1", "8.2.1.8", "fp16", "ab" * 32, dla_core=0),
    ]
    digests = {key_digest(k) for k in variants}
    assert key_digest(base) not in digests and len(digests) == len(variants)
    assert key_digest(base) == key_digest(
        cache_key("NVIDIA Tegra X1", "8.2.1.8", "fp16", "ab" * 32)
    )
    path = engine_path_for("/c", "/x/yolo.onnx", base)
    assert path.startswith("/c/yolo.fp16.") and path.endswith(".engine")


def test_get_or_build_engine_reuses_and_rebuilds(tmp_path):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    cache = tmp_path / "engines"
    trt = fake_trt("8.2")
    first = get_or_build_engine(onnx_path, cache, gpu="NVIDIA Tegra X1", trt=trt, log=quiet)
    assert trt.Builder.builds == 1
    assert get_or_build_engine(onnx_path, cache, gpu="NVIDIA Tegra X1", trt=trt, log=quiet) == first
    assert trt.Builder.builds == 1  # hit: nothing built
    assert (
        json.loads(open(metadata_path(first)).read())["cache_key"]["gpu_name"] == "NVIDIA Tegra X1"
    )
    timing = list(cache.glob("timing-*.cache"))
    assert len(timing) == 1 and timing[0].read_bytes() == b"+timings"

    other_gpu = get_or_build_engine(onnx_path, cache, gpu="Orin", trt=trt, log=quiet)
    upgraded = get_or_build_engine(
        onnx_path, cache, gpu="NVIDIA Tegra X1", trt=fake_trt("8.2", version="8.2.3"), log=quiet
    )
    fp32 = get_or_build_engine(
        onnx_path, cache, precision="fp32", gpu="NVIDIA Tegra X1", trt=trt, log=quiet
    )
    assert len({first, other_gpu, upgraded, fp32}) == 4
    make_bundle(onnx_path, classes=("person", "rider"))  # a new export of the same file name
    new_model = get_or_build_engine(onnx_path, cache, gpu="NVIDIA Tegra X1", trt=trt, log=quiet)
    assert new_model != first

    (tmp_path / "engines" / first.split("/")[-1]).write_bytes(b"truncated")  # damaged on disk
    messages = []
    assert (
        get_or_build_engine(onnx_path, cache, gpu="NVIDIA Tegra X1", trt=trt, log=messages.append)
        == new_model
    )
    make_bundle(onnx_path)  # back to the first model: its engine file was damaged -> rebuilt
    builds = trt.Builder.builds
    get_or_build_engine(onnx_path, cache, gpu="NVIDIA Tegra X1", trt=trt, log=messages.append)
    assert trt.Builder.builds == builds + 1 and any("engine file changed" in m for m in messages)


def test_missing_onnx_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        get_or_build_engine(
            tmp_path / "nope.onnx", tmp_path, gpu="x", trt=fake_trt("8.2"), log=quiet
        )


# --- command line ------------------------------------------------------------------------------


def test_engine_cli_prints_trtexec_without_tensorrt(tmp_path, capsys):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    assert (
        engine_main(get_args_parser().parse_args([str(onnx_path), "--fp16", "--print-trtexec"]))
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("trtexec --onnx=") and "--fp16" in out and "--workspace=256" in out


def test_engine_cli_rejects_calibration_without_int8(tmp_path):
    onnx_path = make_bundle(tmp_path / "m.onnx")
    with pytest.raises(SystemExit, match="only apply to --int8"):
        engine_main(get_args_parser().parse_args([str(onnx_path), "--calib-images", str(tmp_path)]))


def test_engine_cli_without_tensorrt_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as on a machine without it
    monkeypatch.setenv("NANOPRUNE_GPU_NAME", "test-gpu")
    onnx_path = make_bundle(tmp_path / "m.onnx")
    assert engine_main(get_args_parser().parse_args([str(onnx_path)])) == 1
    assert "tensorrt>=8,<11" in capsys.readouterr().err


# --- real TensorRT -----------------------------------------------------------------------------


def test_real_tensorrt_builds_and_caches(tmp_path):
    trt = pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed here (the device or a GPU desktop has it)"
    )
    from export.trt import api

    try:
        gpu = api.gpu_name()
    except RuntimeError as exc:
        pytest.skip(f"no GPU to build on: {exc}")
    onnx_path = make_bundle(tmp_path / "m.onnx")
    path = get_or_build_engine(onnx_path, tmp_path / "engines", precision="fp16", gpu=gpu, trt=trt)
    record = json.loads(open(metadata_path(path)).read())
    assert record["tensorrt_version"] == trt.__version__ and record["engine_bytes"] > 0
    assert (
        get_or_build_engine(onnx_path, tmp_path / "engines", precision="fp16", gpu=gpu, trt=trt)
        == path
    )


def test_device_side_imports_no_torch_and_no_compress():
    """What the Nano imports (builder, cache, CLI, verb registry) must load without torch."""
    import subprocess
    import sys

    code = (
        "import sys, export.trt.cache, export.trt.cli, export.trt.calibrator, export.__main__\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'compress', 'onnx'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
