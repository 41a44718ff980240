"""Several detectors on the same decoded video frames, timed frame by frame, interleaved.

Device-safe (Python 3.6, numpy, OpenCV). The frames are decoded once, before timing, so
decoding cost never lands on whichever detector happens to run first, and every detector
sees exactly the same pixels: a fair "same video" comparison of a model and its peers.
"""

import time

from benchmarks.stats import round_robin_orders, summarize


def time_on_frames(detectors, frames, warmup=2):
    """detectors: [(name, detect(frame) -> (boxes, scores, classes))]; the same frames for all.

    Per frame the detectors run in a rotating order (see `round_robin_orders`). Returns
    {name: {"latency_ms": summary, "detections_per_frame": mean count, "frames": n}}.
    """
    if not detectors:
        raise ValueError("no detectors to time")
    for _, detect in detectors:
        for frame in frames[: max(0, warmup)]:
            detect(frame)
    times = [[] for _ in detectors]
    counts = [0 for _ in detectors]
    clock = time.perf_counter
    for frame, order in zip(frames, round_robin_orders(len(detectors), len(frames))):
        for idx in order:
            t0 = clock()
            boxes, _, _ = detectors[idx][1](frame)
            times[idx].append(clock() - t0)
            counts[idx] += len(boxes)
    out = {}
    for (name, _), t, c in zip(detectors, times, counts):
        out[name] = {
            "latency_ms": summarize(t),
            "detections_per_frame": c / float(len(frames)),
            "frames": len(frames),
        }
    return out
