"""Where results go: a window, a video file, a JSON-lines log (the MJPEG server is in mjpeg.py).

Every output has `write(result)` and `close()`; `result` is a `pipeline.Result` (index,
timestamp, frame, annotated, boxes, scores, classes, timings). `close()` flushes.
"""

import json
import os
import sys

import cv2

from edge_runtime.errors import EdgeError

# One colour per class index (BGR), cycling.
PALETTE = ((0, 200, 0), (0, 140, 255), (255, 80, 0), (200, 0, 200), (0, 220, 220), (128, 128, 255))


def draw(frame, boxes, scores, classes, class_names, status_text=None):
    """A copy of `frame` with boxes, labels and an optional status line."""
    image = frame.copy()
    for (x1, y1, x2, y2), score, cls in zip(boxes.astype(int), scores, classes):
        color = PALETTE[int(cls) % len(PALETTE)]
        cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
        name = class_names[int(cls)] if int(cls) < len(class_names) else str(int(cls))
        cv2.putText(
            image,
            "{} {:.2f}".format(name, score),
            (x1, max(y1 - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            color,
            1,
            cv2.LINE_AA,
        )
    if status_text:
        cv2.putText(
            image, status_text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA
        )
        cv2.putText(
            image,
            status_text,
            (8, 20),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return image


def display_available():
    """A window can open: a display is set and this OpenCV has a GUI backend."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("NONE", "NO", "")
    return True


class WindowOutput(object):
    """cv2.imshow; 'q' or Esc asks the loop to stop."""

    needs_image = True

    def __init__(self, title="nanoprune", on_quit=None):
        self.title, self.on_quit = title, on_quit
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

    def write(self, result):
        cv2.imshow(self.title, result.annotated)
        key = cv2.waitKey(1) & 0xFF
        if key in (27, ord("q")) and self.on_quit is not None:
            self.on_quit()

    def close(self):
        cv2.destroyWindow(self.title)


# file suffix -> FourCC that OpenCV's own builds can write
FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "XVID", ".mov": "mp4v"}


class VideoRecorder(object):
    """cv2.VideoWriter into a temp file beside `path`, renamed into place on close.

    realtime: for live sources, where the loop may run slower than the camera: each frame is
    written as many times as its capture time asks for, so the video plays at real speed.
    """

    needs_image = True
    off_loop = True  # written by edge_runtime.output_thread, off the loop's thread

    def __init__(self, path, fps=None, realtime=False):
        self.realtime, self.t0 = realtime, None
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in FOURCC:
            raise EdgeError(
                "--record {}: unsupported suffix; use one of {}".format(
                    path, ", ".join(sorted(FOURCC))
                )
            )
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            os.makedirs(folder)
        self.path, self.fps, self.fourcc = path, fps or 25.0, FOURCC[suffix]
        self.tmp = os.path.join(folder, "." + os.path.basename(path) + ".part" + suffix)
        self.writer, self.frames = None, 0

    def write(self, result):
        image = result.annotated
        if self.writer is None:
            h, w = image.shape[:2]
            self.writer = cv2.VideoWriter(
                self.tmp, cv2.VideoWriter_fourcc(*self.fourcc), float(self.fps), (w, h)
            )
            if not self.writer.isOpened():
                raise EdgeError(
                    "--record {}: OpenCV cannot write {} video here".format(self.path, self.fourcc)
                )
        copies = 1
        if self.realtime:
            if self.t0 is None:
                self.t0 = result.timestamp
            due = int(round((result.timestamp - self.t0) * self.fps)) + 1  # frames by now
            copies = max(1, due - self.frames)
        for _ in range(copies):
            self.writer.write(image)
        self.frames += copies

    def close(self):
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.tmp, self.path)


class DetectionLog(object):
    """One JSON line per frame: frame index, capture timestamp, boxes (xyxy px), scores, classes;
    with tracking also track ids and events (cross/enter/leave)."""

    needs_image = False
    off_loop = True

    def __init__(self, path, class_names):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            os.makedirs(folder)
        self.names = list(class_names)
        self.file = open(path, "w")

    def write(self, result):
        record = {
            "frame": result.index,
            "t": round(result.timestamp, 6),
            "boxes": [[round(float(v), 2) for v in box] for box in result.boxes],
            "scores": [round(float(s), 5) for s in result.scores],
            "classes": [int(c) for c in result.classes],
            "labels": [self.names[int(c)] for c in result.classes],
        }
        if result.track_ids is not None:  # tracking on: IDs per box (-1: none) and events
            record["ids"] = [int(i) for i in result.track_ids]
            record["events"] = result.events
        self.file.write(json.dumps(record) + "\n")

    def close(self):
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
