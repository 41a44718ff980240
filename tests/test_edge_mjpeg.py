"""The MJPEG page answers on localhost, its JSON endpoint reports the loop, the stream is JPEG."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.detector import BundleDetector
from edge_runtime.errors import EdgeError
from edge_runtime.mjpeg import BOUNDARY, MjpegServer
from edge_runtime.pipeline import run_loop
from edge_runtime.sources import open_source
from tests.edge_fixtures import make_bundle


def get(url: str, timeout: float = 5.0) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.headers["Content-Type"], r.read()


def read_stream(url: str, parts: int, timeout: float = 10.0) -> tuple[str, bytes]:
    with urllib.request.urlopen(url + "stream.mjpg", timeout=timeout) as r:
        content_type, data = r.headers["Content-Type"], b""
        while data.count(b"--" + BOUNDARY.encode()) < parts + 1:
            chunk = r.read1(65536)
            if not chunk:
                break
            data += chunk
    return content_type, data


def test_mjpeg_page_json_and_stream_while_the_loop_runs(tmp_path: Path) -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[30:90, 50:110] = 255
    cv2.imwrite(str(tmp_path / "a.png"), frame)
    det = BundleDetector(make_bundle(tmp_path / "g.onnx"))
    server = MjpegServer("127.0.0.1", 0, title="grid")
    assert server.host == "127.0.0.1" and server.port > 0
    stop = threading.Event()
    loop = threading.Thread(
        target=run_loop,
        args=(det, open_source(tmp_path / "a.png", loop=True), [server]),
        kwargs={"stop_event": stop, "bench_frames": 0, "on_result": lambda r: time.sleep(0.01)},
    )
    loop.start()
    try:
        content_type, page = get(server.url)
        assert content_type.startswith("text/html")
        assert (
            b'src="/stream.mjpg"' in page
            and b"/stats.json" in page
            and b"http" not in page.lower().replace(b"http-equiv", b"")
        )
        content_type, data = read_stream(server.url, parts=3)
        assert content_type == "multipart/x-mixed-replace; boundary=" + BOUNDARY
        jpegs = [p.split(b"\r\n\r\n", 1)[1] for p in data.split(b"--" + BOUNDARY.encode())[1:3]]
        assert all(j.startswith(b"\xff\xd8") for j in jpegs)  # JPEG SOI
        image = cv2.imdecode(np.frombuffer(jpegs[0].rstrip(b"\r\n"), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (120, 160, 3)
        _, body = get(server.url + "stats.json")
        status = json.loads(body)
        assert status["model"] == "grid" and status["people"] >= 1 and status["frame"] >= 1
        assert set(status["stages_ms"]) >= {"capture", "preprocess", "inference", "postprocess"}
        with pytest.raises(urllib.error.HTTPError):
            get(server.url + "nothing")
    finally:
        stop.set()
        loop.join(timeout=10)
    assert not loop.is_alive()
    with pytest.raises(OSError):  # closed by the loop: nothing listens any more
        get(server.url, timeout=1)


def test_a_busy_port_is_a_clear_error() -> None:
    first = MjpegServer("127.0.0.1", 0)
    try:
        with pytest.raises(EdgeError, match=f"--http 127.0.0.1:{first.port}: cannot listen"):
            MjpegServer("127.0.0.1", first.port)
    finally:
        first.close()
