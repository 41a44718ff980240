"""`python -m edge_runtime` as a user meets it: --help, one-line errors with exit 2, SIGINT
flushes, and the whole runtime imports and runs with torch (and onnx) made unimportable."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.edge_fixtures import make_bundle

ROOT = Path(__file__).resolve().parents[1]


def edge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("cli") / "grid.onnx")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "a.png"
    cv2.imwrite(str(path), np.full((48, 64, 3), 255, np.uint8))
    return path


def test_help_lists_the_documented_flags() -> None:
    out = edge("run", "--help")
    assert out.returncode == 0
    for flag in (
        "--model",
        "--source",
        "--show",
        "--http",
        "--record",
        "--log",
        "--stats",
        "--max-frames",
        "--backend",
        "--threads",
        "--conf",
        "--nms",
    ):
        assert flag in out.stdout
    assert edge().returncode == 2


def bad_models(folder: Path, bundle: Path) -> dict[str, tuple[Path, str]]:
    good = bundle.read_bytes()
    files = {
        "missing": (folder / "absent.onnx", "model file not found"),
        "empty": (folder / "empty.onnx", "model file is empty"),
        "text": (folder / "readme.onnx", "onnxruntime cannot load it"),
        "truncated": (folder / "cut.onnx", "onnxruntime cannot load it"),
        "no metadata": (folder / "plain.onnx", "no 'nanoprune' metadata"),
        "wrong type": (folder / "model.pt", "unknown model type '.pt'"),
        "engine on ort": (folder / "m.plan", "is a TensorRT engine: onnxruntime cannot run it"),
    }
    files["empty"][0].write_bytes(b"")
    files["text"][0].write_text("this is not a model\n")
    files["truncated"][0].write_bytes(good[: len(good) * 2 // 3])
    make_bundle(files["no metadata"][0], with_meta=False)
    files["wrong type"][0].write_bytes(b"PK\x03\x04")
    files["engine on ort"][0].write_bytes(b"ftrt")
    return files


def test_bad_model_files_give_one_clear_line(tmp_path: Path, bundle: Path, image: Path) -> None:
    for case, (path, message) in bad_models(tmp_path, bundle).items():
        extra = ["--backend", "ort"] if case == "engine on ort" else []
        out = edge("run", "--model", str(path), "--source", str(image), *extra)
        assert out.returncode == 2, case
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            case,
            out.stderr,
        )
        assert path.name in lines[0] and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "source, message",
    [
        ("/no/such/clip.mp4", "no such file or folder"),
        ("ftp://example/stream", "unknown source scheme 'ftp'"),
        ("/dev/video97", "cannot open this camera|no such camera"),
        ("csi://0", "needs OpenCV built with GStreamer|cannot open this camera"),
    ],
)
def test_bad_uris_give_one_clear_line(bundle: Path, source: str, message: str) -> None:
    out = edge("run", "--model", str(bundle), "--source", source)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + source), out.stderr
    import re

    assert re.search(message, lines[0])


def test_bad_flags_fail_before_work(bundle: Path, image: Path) -> None:
    out = edge("run", "--model", str(bundle), "--source", str(image), "--http", "localhost:port")
    assert out.returncode == 2 and "expected HOST:PORT" in out.stderr
    out = edge("run", "--model", str(bundle), "--source", str(image), "--conf", "3")
    assert out.returncode == 2 and "--conf must be within [0, 1]" in out.stderr


def test_sigint_stops_cleanly_and_flushes(tmp_path: Path, bundle: Path, image: Path) -> None:
    stats, log, video = tmp_path / "s.json", tmp_path / "d.jsonl", tmp_path / "v.avi"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_runtime",
            "run",
            "--model",
            str(bundle),
            "--source",
            str(image),
            "--loop",
            "--stats",
            str(stats),
            "--log",
            str(log),
            "--record",
            str(video),
            "--bench-frames",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "source" in proc.stdout.readline()  # the loop is starting
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(stats.read_text())
    assert result["stopped_by"] == "signal SIGINT" and result["frames"] > 0
    assert result["model_only"] is None  # skipped: the user asked to stop
    # The file outputs run behind a bounded queue: what they could not keep up with is counted.
    written = result["output_thread"]["written"]
    assert written + result["output_thread"]["dropped"] == result["frames"]
    assert len(log.read_text().splitlines()) == written > 0
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == written


BLOCKER = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "compress", "onnx"):
            raise ImportError("blocked on the device: " + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, edge_runtime
names = sorted(m.name for m in pkgutil.iter_modules(edge_runtime.__path__, "edge_runtime."))
for name in names:
    importlib.import_module(name)
from edge_runtime.detector import BundleDetector
import numpy as np
det = BundleDetector(sys.argv[1])
boxes, scores, classes = det.detect(np.full((64, 64, 3), 255, np.uint8))
assert len(boxes) > 0
assert not any(m.split(".")[0] in ("torch", "compress", "onnx") for m in sys.modules)
print(len(names))
"""


def test_every_module_imports_and_runs_without_torch(bundle: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(bundle)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 10  # every module of the package was imported


def test_vermin_says_python_3_6() -> None:
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed")
    out = subprocess.run(
        [vermin, "-q", "--no-tips", "--violations", "-t=3.6-", "edge_runtime"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_info_reports_the_bundle_and_the_device(bundle: Path) -> None:
    out = edge("info", "--model", str(bundle))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    meta = report["meta"]
    assert meta["classes"] == ["person", "red"] and meta["input_shape"] == [1, 3, 64, 64]
    from edge_runtime.sources import gstreamer_support

    assert report["device"]["gstreamer"] is gstreamer_support() and report["device"]["onnxruntime"]


def test_show_without_a_display_warns_and_runs_headless(bundle: Path, image: Path) -> None:
    from edge_runtime.outputs import display_available

    if display_available():
        pytest.skip("a display is available here")
    out = edge(
        "run",
        "--model",
        str(bundle),
        "--source",
        str(image),
        "--show",
        "--loop",
        "--max-frames",
        "2",
        "--bench-frames",
        "0",
    )
    assert out.returncode == 0, out.stderr
    assert "--show ignored: no display" in out.stderr and "2 frames" in out.stdout
