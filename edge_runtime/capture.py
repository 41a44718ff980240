"""Frame readers behind one interface: `read() -> BGR uint8 [H, W, 3] frame, or None at the end`,
`live`, `fps`, `stats` (frames, corrupt, dropped, reconnects, failures, gap_s), `release()`.

Files (`VideoFileSource`, `ImageSource`) deliver every frame in order, so benchmarks are
reproducible. A `LiveSource` (camera, stream) is read by its own thread that keeps only the
newest frame (a frame nobody took is counted as dropped), so the loop never works on a
backlog; a capture that fails is reopened with exponential backoff and the gap is counted.
Corrupt frames (None, empty, odd shape or dtype) are skipped and counted everywhere.
`edge_runtime.sources.open_source` picks one from a URI.
"""

import threading
import time

import cv2

from edge_runtime.errors import SourceError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def new_stats():
    return {"frames": 0, "corrupt": 0, "dropped": 0, "reconnects": 0, "failures": 0, "gap_s": 0.0}


def as_bgr(frame):
    """A usable BGR uint8 [H, W, 3] frame, or None for a corrupt one (None, empty, odd shape)."""
    if frame is None or not hasattr(frame, "ndim") or frame.size == 0 or frame.dtype != "uint8":
        return None
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim != 3:
        return None
    if frame.shape[2] == 3:
        return frame
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return None


class VideoFileSource(object):
    """Every frame of a video file, in order; `loop` starts again at the end."""

    live = False

    def __init__(self, path, loop=False):
        self.name, self.loop = path, loop
        self.stats = new_stats()
        self.cap = self._open()
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or None
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def _open(self):
        cap = cv2.VideoCapture(self.name)
        if not cap.isOpened():
            raise SourceError(
                "{}: OpenCV cannot open it as a video (not a video, or no decoder "
                "for its codec in this OpenCV build)".format(self.name)
            )
        return cap

    def read(self):
        misses = 0
        while self.cap is not None:
            ok, frame = self.cap.read()
            if ok:
                frame = as_bgr(frame)
                if frame is not None:
                    self.stats["frames"] += 1
                    return frame
            position = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES) or 0)
            if ok or (position < self.frame_count - 1 and misses < 8):
                # A frame the decoder could not give us, short of the end: skip it, count it.
                self.stats["corrupt"] += 1
                misses += 1
                continue
            if not self.loop:
                self._note_early_end()
                return None
            self.cap.release()
            self.cap = self._open()
            misses = 0
        return None

    def _note_early_end(self):
        """A file that stops short of its header's frame count is cut (a copy or download that
        did not finish): say so in the stats instead of a silent 'end'."""
        seen = self.stats["frames"] + self.stats["corrupt"]
        # Containers round their frame count: a frame or two short is not a truncation.
        if self.frame_count and seen < self.frame_count - 2:
            self.stats["ended_early"] = (
                "{}: the file ended after {} of the {} frames its header gives (truncated?)".format(
                    self.name, seen, self.frame_count
                )
            )

    def release(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageSource(object):
    """Images in name order (a folder) or one image; unreadable files are skipped and counted."""

    live = False
    fps = None

    def __init__(self, paths, name, loop=False):
        self.paths, self.name, self.loop = list(paths), name, loop
        if not self.paths:
            raise SourceError("{}: holds no images ({})".format(name, ", ".join(IMAGE_SUFFIXES)))
        self.stats = new_stats()
        self.index = 0
        self.frame_count = len(self.paths)

    def read(self):
        while True:
            if self.index >= len(self.paths):
                if not self.loop or self.stats["frames"] == 0:
                    return None
                self.index = 0
            path = self.paths[self.index]
            self.index += 1
            frame = as_bgr(cv2.imread(path, cv2.IMREAD_COLOR))
            if frame is None:
                self.stats["corrupt"] += 1
                continue
            self.stats["frames"] += 1
            return frame

    def release(self):
        self.index = len(self.paths)


class LiveSource(object):
    """A camera or stream read by its own thread; `read()` returns the newest unseen frame.

    Args:
        opener: callable -> an opened cv2.VideoCapture-like object (read/isOpened/release).
        name: shown in messages.
        backoff: (first delay, longest delay) in seconds between reopen attempts.
    """

    live = True

    def __init__(self, opener, name, fps=None, backoff=(0.25, 8.0)):
        self.opener, self.name, self.fps = opener, name, fps
        self.backoff = backoff
        self.stats = new_stats()
        self._cond = threading.Condition()
        self._frame, self._seq, self._taken = None, 0, 0
        self._stop = threading.Event()
        self._cap = self._open_or_none()
        if self._cap is None:
            raise SourceError(
                "{}: cannot open this camera/stream (is it connected, is the "
                "address right, is it used by another program?)".format(name)
            )
        self._thread = threading.Thread(
            target=self._reader, name="capture-" + str(name), daemon=True
        )
        self._thread.start()

    def _open_or_none(self):
        try:
            cap = self.opener()
        except Exception:  # a driver may raise instead of returning a closed capture
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        return cap

    def _reconnect(self):
        """Reopen with exponential backoff until it works or the source is released."""
        gap_start, delay = time.time(), self.backoff[0]
        cap = None
        while not self._stop.is_set():
            cap = self._open_or_none()
            if cap is not None:
                break
            self.stats["failures"] += 1
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])
        self.stats["gap_s"] += time.time() - gap_start
        if cap is not None:
            self.stats["reconnects"] += 1
        return cap

    def _reader(self):
        cap = self._cap
        while not self._stop.is_set():
            try:
                ok, frame = cap.read()
            except Exception:
                ok, frame = False, None
            if not ok:
                cap.release()
                self.stats["failures"] += 1
                cap = self._reconnect()
                if cap is None:
                    break
                continue
            frame = as_bgr(frame)
            if frame is None:
                self.stats["corrupt"] += 1
                continue
            with self._cond:
                if self._seq > self._taken:
                    self.stats["dropped"] += 1  # nobody took the previous one: it is stale now
                self._frame = frame
                self._seq += 1
                self.stats["frames"] += 1
                self._cond.notify_all()
        if cap is not None:
            cap.release()

    @property
    def ended(self):
        """Released, or the reader thread is gone (it only stops when released)."""
        return self._stop.is_set() or not self._thread.is_alive()

    def read(self, timeout=None):
        """The newest frame not yet returned; waits for one; None once released (or timeout)."""
        with self._cond:
            deadline = None if timeout is None else time.time() + timeout
            while self._seq == self._taken and not self._stop.is_set():
                remaining = None if deadline is None else deadline - time.time()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            if self._stop.is_set():
                return None
            self._taken = self._seq
            return self._frame

    def release(self):
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
