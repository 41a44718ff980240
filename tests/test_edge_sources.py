"""Sources: live reader keeps the newest frame, reconnects with backoff, skips corrupt frames;
files in order; URIs and missing GStreamer give clear errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime import sources
from edge_runtime.errors import SourceError
from edge_runtime.sources import LiveSource, VideoFileSource, gstreamer_support, open_source
from tests.conftest import need


class FlakyCamera:
    """A capture that delivers `good` frames (with a corrupt one among them), then fails."""

    opened = 0

    def __init__(self, good: int = 5, fail_opens: int = 0) -> None:
        FlakyCamera.opened += 1
        self.good, self.n = good, 0

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return True

    def read(self):
        time.sleep(0.002)
        self.n += 1
        if self.n > self.good:
            return False, None  # unplugged
        if self.n == 2:
            return True, np.zeros((4, 4), np.float32)  # corrupt: wrong dtype
        return True, np.full((8, 8, 3), FlakyCamera.opened, np.uint8)

    def release(self) -> None:
        pass


def test_live_source_reopens_after_failure_and_counts_the_gap() -> None:
    FlakyCamera.opened = 0
    attempts = []

    def opener():
        attempts.append(time.time())
        # the first reopen attempt fails (camera still gone), later ones work
        return None if len(attempts) == 2 else FlakyCamera()

    src = LiveSource(opener, "fake://cam", backoff=(0.01, 0.05))
    values = set()
    deadline = time.time() + 5
    while len(values) < 3 and time.time() < deadline:
        frame = src.read(timeout=0.5)
        if frame is not None:
            assert frame.shape == (8, 8, 3)
            values.add(int(frame[0, 0, 0]))
    src.release()
    assert {1, 2, 3} <= values  # frames from the first, second and third opened capture
    assert src.stats["reconnects"] >= 2 and src.stats["gap_s"] > 0
    assert src.stats["corrupt"] >= 2 and src.stats["failures"] >= 3
    assert src.ended and not src._thread.is_alive()


def test_live_source_keeps_only_the_newest_frame() -> None:
    counter = {"n": 0}

    class Fast:
        def isOpened(self):  # noqa: N802
            return True

        def read(self):
            time.sleep(0.001)
            counter["n"] += 1
            return True, np.full((2, 2, 3), counter["n"] % 256, np.uint8)

        def release(self):
            pass

    src = LiveSource(Fast, "fake://fast")
    first = src.read(timeout=1)
    time.sleep(0.1)  # a slow consumer: the reader keeps overwriting
    second = src.read(timeout=1)
    src.release()
    assert first is not None and second is not None
    assert src.stats["dropped"] > 10  # stale frames thrown away, not queued
    assert src.stats["frames"] - src.stats["dropped"] <= 3


def test_live_source_that_never_opens_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="fake://dead: cannot open"):
        LiveSource(lambda: None, "fake://dead")


def test_video_file_in_order_and_looping(assets: Path) -> None:
    (video,) = need(assets, "video/vtest.avi")
    src = open_source(video, loop=True)
    assert isinstance(src, VideoFileSource) and not src.live and src.fps == 10
    assert src.frame_count == 795
    cap = cv2.VideoCapture(str(video))
    for _ in range(3):
        np.testing.assert_array_equal(src.read(), cap.read()[1])
    src.cap.set(cv2.CAP_PROP_POS_FRAMES, 794)
    assert src.read() is not None  # the last frame
    first = src.read()  # loops back to frame 0
    np.testing.assert_array_equal(first, cv2.VideoCapture(str(video)).read()[1])
    src.release()


@pytest.mark.parametrize(
    "uri, message",
    [
        ("/no/such/video.mp4", "no such file or folder"),
        ("ftp://host/x", "unknown source scheme 'ftp'"),
        ("csi://abc", "CSI sensor id must be a number|needs OpenCV built with GStreamer"),
        ("v4l2:///dev/video97", "no such camera device /dev/video97"),
        ("gst://videotestsrc ! fakesink", "must end in appsink|needs OpenCV built with GStreamer"),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(uri)


def test_not_a_video_and_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(SourceError, match="notes.mp4: OpenCV cannot open it"):
        open_source(tmp_path / "notes.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(tmp_path / "empty")


def test_missing_gstreamer_is_detected_and_named(monkeypatch) -> None:
    old = "  Video I/O:\n    FFMPEG:   YES\n    GStreamer:                   \n      base:   YES (ver 1.14.5)\n"
    new_yes = "    GStreamer:                   YES (1.16.2)\n"
    new_no = "    GStreamer:                   NO\n"
    assert gstreamer_support(old) and gstreamer_support(new_yes) and not gstreamer_support(new_no)
    monkeypatch.setattr(sources, "gstreamer_support", lambda info=None: False)
    with pytest.raises(
        SourceError, match=r"csi://0 needs OpenCV built with GStreamer.*GStreamer: NO"
    ):
        open_source("csi://0")


def test_csi_pipeline_is_the_documented_one() -> None:
    pipe = sources.csi_pipeline(1, 1920, 1080, 30, flip=2)
    assert pipe.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)")
    assert "framerate=30/1, format=NV12 ! nvvidconv flip-method=2" in pipe
    assert pipe.endswith("appsink drop=1 max-buffers=1")
    rtsp = sources.rtsp_pipeline("rtsp://cam/1", "h265")
    assert "rtph265depay ! h265parse ! nvv4l2decoder" in rtsp


def test_release_wakes_a_waiting_reader() -> None:
    class Silent:
        def isOpened(self):  # noqa: N802
            return True

        def read(self):
            time.sleep(0.05)
            return True, None  # corrupt forever: no frame ever delivered

        def release(self):
            pass

    src = LiveSource(Silent, "fake://silent")
    got = []
    t = threading.Thread(target=lambda: got.append(src.read()))
    t.start()
    time.sleep(0.1)
    src.release()
    t.join(timeout=2)
    assert not t.is_alive() and got == [None] and src.stats["corrupt"] >= 1
