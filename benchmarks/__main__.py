"""`python -m benchmarks <verb> ...`: measure, compare and show detector speed.

Each verb is a module with `get_args_parser()` and `main(args)`, imported only when it runs.
`latency`, `loop`, `tracking` and `power` also run on the Jetson (Python 3.6, no torch); `run`, `hog`, `report`
and `compare` are host-side. This file stays Python 3.6 syntax so the device can use it.
"""

import sys

from edge_runtime.verbs import dispatch

# verb -> (module, one-line help). Add a verb by adding a line here.
VERBS = {
    "latency": ("benchmarks.latency", "A/B-interleaved model latency: p50/p90/p99, FPS, memory"),
    "loop": ("benchmarks.loop", "end-to-end FPS of the edge runtime loop, per stage"),
    "tracking": ("benchmarks.tracking", "people tracker + counting cost per frame (20 people)"),
    "hog": (
        "benchmarks.hog",
        "OpenCV HOG+SVM people-detector peer: speed on a video, AP on images",
    ),
    "run": ("benchmarks.run", "benchmark a pipeline run folder: models, unpruned peer, HOG peer"),
    "report": ("benchmarks.report", "Markdown + self-contained HTML report of a run folder"),
    "compare": ("benchmarks.compare", "speed-up / AP-delta table across benchmark JSONs"),
    "power": ("benchmarks.power", "summarise a tegrastats log: watts per rail, temperatures"),
}


def main(argv=None):
    return dispatch("python -m benchmarks", __doc__.splitlines()[0], VERBS, argv)


if __name__ == "__main__":
    sys.exit(main())
