"""The Jetson container's entrypoint under the device's Python, outside Docker (ort backend)."""

import json
import os

from tests.device.helpers import ROOT, run_module, write_video


def test_entrypoint_runs_the_loop_on_a_video(bundle, tmp_path):
    model = bundle("grid.onnx")
    video = write_video(tmp_path / "clip.avi", frames=6)
    reports = tmp_path / "reports"
    env = {
        "NANOPRUNE_MODEL": model,
        "NANOPRUNE_SOURCE": video,
        "NANOPRUNE_BACKEND": "ort",
        "NANOPRUNE_HTTP": "",
        "NANOPRUNE_REPORTS": str(reports),
        "NANOPRUNE_THREADS": "1",
    }
    proc = run_module(os.path.join(ROOT, "docker", "entrypoint.py"), env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    (stats_file,) = reports.glob("loop-stats-*.json")
    stats = json.loads(stats_file.read_text())
    assert stats["frames"] == 6 and stats["stopped_by"] == "end"


def test_entrypoint_missing_model_says_so(tmp_path):
    env = {"NANOPRUNE_MODEL": str(tmp_path / "none.onnx"), "NANOPRUNE_HTTP": ""}
    proc = run_module(os.path.join(ROOT, "docker", "entrypoint.py"), env=env, cwd="/")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "none.onnx" in proc.stderr + proc.stdout
