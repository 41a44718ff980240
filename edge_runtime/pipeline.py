"""The loop: capture -> preprocess -> inference -> postprocess -> outputs, one thread per stage.

Bounded queues join the stages, so capture and drawing overlap inference and the accelerator
never waits on them. Files use deeper queues and never drop a frame (benchmarks are
reproducible); live sources use one-slot queues, and the source itself keeps only the newest
frame, so the loop always works on a fresh one and stale frames are dropped (and counted).

Each stage times every frame; the final stats (see `run_loop`) also hold a model-only FPS
measured in the same run on the same preprocessed frames, for the "loop >= 0.9 x model" check.
"""

import queue
import signal
import threading
import time

from edge_runtime.errors import EdgeError
from edge_runtime.output_thread import off_loop, status_text
from edge_runtime.outputs import draw
from edge_runtime.stats import STAGES, Recorder, peak_rss_mb

MODEL_ONLY_SECONDS = 3.0
END = object()  # passed down the queues once the source is exhausted or the loop stops


class Result(object):
    """One frame on its way through the loop."""

    def __init__(self, index, timestamp, frame, capture_s):
        self.index, self.timestamp, self.frame = index, timestamp, frame
        self.timings = {"capture": capture_s}
        self.t0 = time.perf_counter() - capture_s
        self.blob = self.geometry = self.outputs = None
        self.boxes = self.scores = self.classes = None
        self.annotated = None
        self.people, self.fps, self.stage_ms = 0, 0.0, {}
        # set by a tracking stage (edge_runtime.tracking) when one runs
        self.track_ids, self.events, self.counts, self.tracks = None, [], None, None


def _drain(q_in):
    while q_in.get() is not END:
        pass


def _stage(name, fn, q_in, q_out, stop, errors):
    """Run fn(result) on every item; on an error stop the loop but keep draining until END."""
    while True:
        item = q_in.get()
        if item is END:
            break
        start = time.perf_counter()
        try:
            fn(item)
        except Exception as exc:  # surfaced by run_loop after the threads are joined
            errors.append((name, exc))
            stop.set()
            _drain(q_in)
            break
        item.timings[name] = time.perf_counter() - start
        q_out.put(item)
    q_out.put(END)


def _capture(source, q_out, stop, max_frames, state):
    index = 0
    try:
        while not stop.is_set():
            if max_frames is not None and index >= max_frames:
                state["stopped_by"] = "max_frames"
                break
            start = time.perf_counter()
            frame = source.read(timeout=0.25) if source.live else source.read()
            if frame is None:
                if source.live and not stop.is_set() and not getattr(source, "ended", False):
                    continue  # nothing new yet (a reconnect may be under way)
                state.setdefault("stopped_by", "end")
                break
            q_out.put(Result(index, time.time(), frame, time.perf_counter() - start))
            index += 1
    except Exception as exc:
        state["errors"].append(("capture", exc))
        stop.set()
    finally:
        q_out.put(END)


def model_only(infer, blobs, min_seconds=MODEL_ONLY_SECONDS, warmup=2, stop=None):
    """Inference alone on stored blobs, after the loop, for `min_seconds` of timed calls (a
    count of frames is a second at 16 FPS and a few ms at 2,000: too short to be stable).

    Returns {fps, mean_ms, frames, iterations, seconds}, or None without blobs or when `stop`
    (an Event) is set meanwhile: a user who pressed Ctrl-C wants the loop's figures now."""
    if not blobs:
        return None
    for blob in blobs[:warmup]:
        infer(blob)
    times, start, now = [], time.perf_counter(), 0.0
    while now - start < min_seconds or not times:
        if stop is not None and stop.is_set():
            return None
        t = time.perf_counter()
        infer(blobs[len(times) % len(blobs)])
        now = time.perf_counter()
        times.append(now - t)
    total = sum(times)
    return {
        "fps": round(len(times) / total, 3),
        "mean_ms": round(total / len(times) * 1000.0, 3),
        "frames": len(blobs),
        "iterations": len(times),
        "seconds": round(now - start, 3),
    }


def _people_filter(class_names):
    """Which class indices count as people (all of them when no class is named 'person')."""
    idx = [i for i, n in enumerate(class_names) if n.lower() in ("person", "pedestrian", "people")]
    return set(idx) if idx else set(range(len(class_names)))


class _Signals(object):
    """SIGINT/SIGTERM set the stop event (main thread only); the old handlers come back after."""

    def __init__(self, stop, state, enabled=True):
        self.stop, self.state, self.old = stop, state, {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handle(self, signum, frame):
        self.state["stopped_by"] = "signal {}".format(signal.Signals(signum).name)
        self.stop.set()

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def run_loop(
    detector,
    source,
    outputs=(),
    max_frames=None,
    queue_size=4,
    bench_frames=16,
    bench_min_s=MODEL_ONLY_SECONDS,
    stop_event=None,
    handle_signals=True,
    on_result=None,
    tracking=None,
):
    """Run the loop until the source ends, `max_frames`, a signal or `stop_event`; return stats.

    Args:
        detector: a `BundleDetector` (its preprocess, backend.infer and postprocess are the
            stages, so results equal `detector.detect` on the same frames).
        source: from `edge_runtime.sources.open_source`.
        outputs: objects with write(result)/close() (window, MJPEG, recorder, log); closed here.
        queue_size: depth of the queues between stages for files (live sources use 1).
        bench_frames: preprocessed frames kept for the model-only FPS measured after the loop
            (0 disables it); it is skipped after SIGINT/SIGTERM.
        bench_min_s: seconds the model-only FPS is measured for.
        on_result: optional callable(result) per frame, after the outputs (tests, benchmarks).
        tracking: optional `edge_runtime.tracking.TrackingStage`, run as a "track" stage after
            postprocess (IDs, events, counts on each result; its summary in stats["counting"]).

    Returns a dict: frames, wall_s, loop_fps, model_only {fps, mean_ms, ...}, loop_vs_model,
    stages {capture|preprocess|inference|postprocess|output: {n, mean_ms, p50_ms, p90_ms,
    max_ms}} (+ track), latency (capture to output), source (frames, corrupt, dropped, reconnects,
    failures, gap_s), detections, people_max, peak_rss_mb, stopped_by, model, outputs
    (+ counting when tracking).
    """
    stop = stop_event or threading.Event()
    depth = 1 if source.live else max(1, int(queue_size))
    queues = [queue.Queue(maxsize=depth) for _ in range(5 if tracking else 4)]
    state = {"errors": []}
    recorder = Recorder(STAGES[:-1] + ("track",) + STAGES[-1:] if tracking else STAGES)
    blobs = []
    threads = _stage_threads(
        detector, source, queues, stop, state, max_frames, blobs, bench_frames, tracking
    )
    tally = {"detections": 0, "people_max": 0}
    output_names = [o.__class__.__name__ for o in outputs]
    outputs, writer = off_loop(
        outputs, detector.classes, decorate=tracking.draw if tracking else None
    )
    started = time.time()
    with _Signals(stop, state, handle_signals):
        for t in threads:
            t.start()
        try:
            _output_stage(detector, queues[-1], outputs, recorder, tally, on_result, tracking)
        except Exception as exc:
            state["errors"].append(("output", exc))
            stop.set()
            _drain(queues[-1])
        finally:
            stop.set()
            if source.live:
                source.release()  # wakes a capture thread waiting for a frame
            for t in threads:
                t.join(timeout=10.0)
            for out in outputs:
                try:
                    out.close()
                except Exception as exc:
                    state["errors"].append(("close " + out.__class__.__name__, exc))
            source.release()
    wall = time.time() - started
    if state["errors"]:
        stage, exc = state["errors"][0]
        if isinstance(exc, EdgeError):
            raise exc  # the user's to fix (e.g. cannot write the recording): one clear line
        raise RuntimeError(
            "loop stopped in the {} stage: {}: {}".format(stage, exc.__class__.__name__, exc)
        )
    bench = None
    if bench_frames and not str(state.get("stopped_by", "")).startswith("signal"):
        interrupted = threading.Event()
        with _Signals(interrupted, state, handle_signals):
            bench = model_only(detector.backend.infer, blobs, bench_min_s, stop=interrupted)
    loop_fps = recorder.loop_fps()
    stats = {
        "frames": recorder.outputs,
        "wall_s": round(wall, 3),
        "loop_fps": None if loop_fps is None else round(loop_fps, 3),
        "model_only": bench,
        "loop_vs_model": round(loop_fps / bench["fps"], 3) if (bench and loop_fps) else None,
        "stages": recorder.summary(),
        "latency": recorder.latency.summary(),
        "source": dict(
            name=str(getattr(source, "name", "")),
            live=bool(source.live),
            fps=getattr(source, "fps", None),
            **source.stats,
        ),
        "peak_rss_mb": peak_rss_mb(),
        "stopped_by": state.get("stopped_by", "stop"),
        "model": detector.describe(),
        "outputs": output_names,
        "output_thread": writer.stats() if writer is not None else None,
        "queue_depth": depth,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    stats.update(tally)
    if tracking is not None:
        stats["counting"] = tracking.summary()
    return stats


def _stage_threads(
    detector, source, queues, stop, state, max_frames, blobs, bench_frames, tracking=None
):
    """capture -> queues[0] -> preprocess -> [1] -> inference -> [2] -> postprocess -> [3]
    (-> track -> [4] with tracking)."""

    def preprocess(item):
        item.blob, item.geometry = detector.preprocess(item.frame)

    def infer(item):
        item.outputs = detector.backend.infer(item.blob)
        if len(blobs) < bench_frames:
            blobs.append(item.blob)  # the same frames, replayed for the model-only FPS
        item.blob = None

    def postprocess(item):
        item.boxes, item.scores, item.classes = detector.postprocess(item.outputs, item.geometry)
        item.outputs = None

    threads = [
        threading.Thread(
            target=_capture,
            args=(source, queues[0], stop, max_frames, state),
            name="capture",
            daemon=True,
        )
    ]
    stages = (("preprocess", preprocess), ("inference", infer), ("postprocess", postprocess))
    if tracking is not None:
        stages += (("track", tracking.update),)
    for i, (name, fn) in enumerate(stages):
        args = (name, fn, queues[i], queues[i + 1], stop, state["errors"])
        threads.append(threading.Thread(target=_stage, args=args, name=name, daemon=True))
    return threads


def _output_stage(detector, q_in, outputs, recorder, tally, on_result, tracking=None):
    """In the calling thread (a window must live there): draw once, hand to every output."""
    names = list(detector.classes)
    people_idx = _people_filter(names)
    needs_image = any(getattr(o, "needs_image", True) for o in outputs)
    while True:
        item = q_in.get()
        if item is END:
            return
        start = time.perf_counter()
        item.people = int(sum(1 for c in item.classes if int(c) in people_idx))
        item.fps = recorder.live_fps()
        item.stage_ms = recorder.stage_means_ms()
        if needs_image:
            item.annotated = draw(
                item.frame, item.boxes, item.scores, item.classes, names, status_text(item)
            )
            if tracking is not None:
                tracking.draw(item, item.annotated)
        for out in outputs:
            out.write(item)
        if on_result is not None:
            on_result(item)
        now = time.perf_counter()
        item.timings["output"] = now - start
        recorder.add_frame(item.timings, now - item.t0, now)
        tally["detections"] += len(item.boxes)
        tally["people_max"] = max(tally["people_max"], item.people)
        item.frame = item.annotated = None
