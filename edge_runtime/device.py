"""Which Jetson this is and how it is clocked: board model, L4T release, power mode, clocks.

Inside a container `/proc/device-tree/model` is masked and `nvpmodel` / `jetson_clocks` are
absent or lack root, so `docker/run-jetson.sh` captures them on the host into a folder the
container reads (NANOPRUNE_DEVICE_FACTS): `model`, `nvpmodel` (`nvpmodel -q`) and
`jetson_clocks` (`jetson_clocks --show`), as dusty-nv/jetson-containers' run.sh passes the
model through /tmp/nv_jetson_model. Host facts win; otherwise the device is asked directly.
Python 3.6, no torch.
"""

import os
import re
import subprocess

FACTS_ENV = "NANOPRUNE_DEVICE_FACTS"
MODEL_FILES = ("/proc/device-tree/model", "/tmp/nv_jetson_model")
RELEASE_FILE = "/etc/nv_tegra_release"


def _read(path):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except (IOError, OSError):
        return None
    return text or None


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
    return proc.stdout.strip() if proc.returncode == 0 else None


def host_fact(name, facts_dir=None):
    """A fact the host wrote for the container, or None."""
    folder = facts_dir or os.environ.get(FACTS_ENV)
    return _read(os.path.join(folder, name)) if folder else None


def parse_nvpmodel(text):
    """`nvpmodel -q` output ('NV Power Mode: MAXN\\n0') -> {"name": "MAXN", "id": 0}."""
    if not text:
        return None
    m = re.search(r"Power Mode:\s*(\S+)", text)
    ids = re.findall(r"^\s*(\d+)\s*$", text, re.M)
    if not m and not ids:
        return None
    return {"name": m.group(1) if m else None, "id": int(ids[-1]) if ids else None}


def parse_jetson_clocks(text):
    """`jetson_clocks --show` -> {"cpu": [...lines], "gpu": line, "emc": line}."""
    if not text or not re.search(r"^(cpu\d+:|GPU |EMC )", text, re.M):
        return None
    out = {"cpu": [line.strip() for line in text.splitlines() if re.match(r"\s*cpu\d+:", line)]}
    for key in ("GPU", "EMC"):
        m = re.search(r"^{}\s.*$".format(key), text, re.M)
        if m:
            out[key.lower()] = m.group(0).strip()
    return out


def board_model(facts_dir=None):
    model = host_fact("model", facts_dir)
    for path in MODEL_FILES:
        model = model or _read(path)
    return model


def facts(facts_dir=None):
    """{"model", "l4t", "power_mode", "clocks", "source"}; None when this is no Jetson."""
    release = _read(RELEASE_FILE)
    model = board_model(facts_dir)
    if not release and not (model and "jetson" in model.lower()):
        return None
    nvp = host_fact("nvpmodel", facts_dir)
    clocks = host_fact("jetson_clocks", facts_dir)
    source = "host" if (nvp or clocks) else "container"
    nvp = nvp or _run(["nvpmodel", "-q"])
    # `jetson_clocks --show` needs root; without it the record says so instead of guessing.
    clocks = clocks or _run(["jetson_clocks", "--show"])
    clocks = clocks or _run(["sudo", "-n", "jetson_clocks", "--show"])
    return {
        "model": model,
        "l4t": release.splitlines()[0] if release else None,
        "power_mode": parse_nvpmodel(nvp),
        "clocks": parse_jetson_clocks(clocks) or "unavailable (run as root)",
        "source": source,
    }
