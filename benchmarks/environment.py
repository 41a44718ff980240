# ruff: noqa: UP021
"""Where a benchmark ran: CPU, cores, GPU, library versions, Jetson power mode and clocks.

Device-side (Python 3.6, no torch, no `compress`). Every figure in a benchmark JSON carries
this record, so `python -m benchmarks compare` can warn when two runs are not comparable
(another device, thread count or power mode gives another speed, not a better model).
"""

import os
import platform
import re
import socket
import subprocess
import sys

from edge_runtime import device
from edge_runtime.device import parse_jetson_clocks, parse_nvpmodel  # noqa: F401

# The fields that change a measured speed: compare warns when any of them differ.
COMPARABLE_KEYS = ("device", "cpu_model", "gpu", "power_mode", "backend", "threads")


def _run(cmd, timeout=10):
    """stdout of a command, or None when it is absent, fails or hangs (never raises)."""
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,  # not text=: Python 3.6 on the Nano
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip()


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def cpu_model():
    """'AMD EPYC', 'Cortex-A57', ...: lscpu first, then /proc/cpuinfo, then platform."""
    text = _run(["lscpu"])
    if text:
        m = re.search(r"^Model name:\s*(.+)$", text, re.M)
        if m and m.group(1).strip() not in ("-", ""):
            return m.group(1).strip()
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def usable_cores():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def gpus():
    """Desktop GPUs via nvidia-smi: [{"name", "driver", "memory_mb"}]; [] when none."""
    text = _run(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader,nounits",
        ]
    )
    out = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            out.append({"name": parts[0], "driver": parts[1], "memory_mb": parts[2]})
    return out


def jetson():
    """L4T release, board model, power mode and clocks; None when not on a Jetson.

    In the container the host's `nvpmodel -q` / `jetson_clocks --show` and board model come
    through NANOPRUNE_DEVICE_FACTS (edge_runtime.device)."""
    return device.facts()


def _version(module_name):
    try:
        module = __import__(module_name)
    except Exception:  # an absent or broken library is a fact to record, not an error
        return None
    return getattr(module, "__version__", "unknown")


def library_versions():
    versions = {
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "opencv": _version("cv2"),
        "onnxruntime": _version("onnxruntime"),
        "tensorrt": _version("tensorrt"),
    }
    try:
        import onnxruntime

        versions["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:
        versions["onnxruntime_providers"] = None
    return versions


def collect(backend=None, threads=None):
    """The environment record written into every benchmark JSON."""
    board = jetson()
    gpu_list = gpus()
    cpu = cpu_model()
    if board:
        device = board.get("model") or "Jetson"
    elif gpu_list:
        device = gpu_list[0]["name"]
    else:
        device = cpu
    power = (board or {}).get("power_mode") or {}
    return {
        "device": device,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_usable": usable_cores(),
        "gpu": [g["name"] for g in gpu_list] or None,
        "gpu_details": gpu_list or None,
        "jetson": board,
        "power_mode": power.get("name"),
        "backend": backend,
        "threads": threads,
        "libraries": library_versions(),
        "argv": list(sys.argv),
    }
