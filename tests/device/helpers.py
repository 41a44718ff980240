"""Helpers of the device tests (Python 3.6 syntax)."""

import os
import subprocess
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_video(path, frames=8, size=(160, 120), fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.RandomState(0)
    for _ in range(frames):
        writer.write(rng.randint(0, 256, (size[1], size[0], 3)).astype(np.uint8))
    writer.release()
    return str(path)


def run_module(*args, **kwargs):
    """`python -m ...` in this interpreter from the repository root; a CompletedProcess."""
    env = dict(os.environ)
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        [sys.executable] + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        cwd=kwargs.pop("cwd", ROOT),
        env=env,
        timeout=kwargs.pop("timeout", 120),
    )


def one_error_line(proc):
    """The single stderr line of a failed command (asserts there is exactly one, no traceback)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]
