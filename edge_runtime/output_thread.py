"""File outputs (recording, detection log) in their own thread, behind a bounded queue.

Encoding a video frame or a JSON line costs about as much as a fast model's inference; in the
loop's thread it halved the loop's FPS. Here the loop only hands each result over: when the
writer falls behind and its queue is full, the frame is dropped for the file outputs and
counted (stats `outputs.dropped`), so the loop keeps the model's pace at any model speed.
The window (which must live in the main thread) and the MJPEG server, which keeps only the
newest frame, stay in the loop's thread.
"""

import copy
import queue
import threading

from edge_runtime.outputs import draw

_END = object()
DEFAULT_DEPTH = 16  # frames: a few hundred ms of burst at 30 FPS, ~45 MB of 720p frames


def status_text(result):
    return "people {}  {:.1f} FPS".format(result.people, result.fps)


class OutputThread(object):
    """One writer thread for the outputs marked `off_loop`; it draws for them itself."""

    needs_image = False  # the loop need not draw on its behalf

    def __init__(self, outputs, class_names, depth=DEFAULT_DEPTH, decorate=None):
        self.outputs, self.names = list(outputs), list(class_names)
        # decorate(result, image): more overlays on the drawn frame (track IDs, lines, zones)
        self.decorate = decorate
        self.draws = any(getattr(o, "needs_image", True) for o in self.outputs)
        self.queue = queue.Queue(maxsize=max(1, int(depth)))
        self.written = self.dropped = 0
        self.error = None
        self.thread = threading.Thread(target=self._run, name="outputs", daemon=True)
        self.thread.start()

    def write(self, result):
        if self.error is not None:
            raise self.error  # the loop stops on a writer's error, as it would in its thread
        try:
            # A shallow copy: the loop clears its own result's frame once every output had it.
            self.queue.put_nowait(copy.copy(result))
        except queue.Full:
            self.dropped += 1

    def _run(self):
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if self.error is not None:
                continue  # keep emptying the queue so close() never blocks
            try:
                if self.draws and item.annotated is None:
                    item.annotated = draw(
                        item.frame, item.boxes, item.scores, item.classes, self.names,
                        status_text(item),
                    )  # fmt: skip
                    if self.decorate is not None:
                        self.decorate(item, item.annotated)
                for out in self.outputs:
                    out.write(item)
                self.written += 1
            except Exception as exc:  # raised to the loop on its next write, or by close()
                self.error = exc

    def stats(self):
        return {
            "written": self.written,
            "dropped": self.dropped,
            "queue_depth": self.queue.maxsize,
            "outputs": [o.__class__.__name__ for o in self.outputs],
        }

    def close(self):
        """Write what is queued, then close every output (all of them, even after an error)."""
        self.queue.put(_END)
        self.thread.join()
        first = self.error
        for out in self.outputs:
            try:
                out.close()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


def off_loop(outputs, class_names, depth=DEFAULT_DEPTH, decorate=None):
    """The outputs with those marked `off_loop = True` moved behind one OutputThread."""
    outputs = list(outputs)
    moved = [o for o in outputs if getattr(o, "off_loop", False)]
    if not moved:
        return outputs, None
    writer = OutputThread(moved, class_names, depth, decorate)
    return [o for o in outputs if o not in moved] + [writer], writer
