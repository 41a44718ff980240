"""`python -m benchmarks <verb> ...`: measure, compare and show detector speed.

Each verb is a module with `get_args_parser()` and `main(args)`, imported only when it runs.
`latency`, `loop`, `tracking` and `power` also run on the Jetson (Python 3.6, no torch); `run`, `hog`, `report`
and `compare` are host-side. This file stays Python 3.6 syntax so the device can use it.
"""

import importlib
import sys

from export.user_errors import run_verb

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


def usage():
    lines = ["usage: python -m benchmarks VERB [options]", "", "verbs:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in VERBS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in VERBS:
        print(f"unknown verb {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[argv[0]][0])
    parser = module.get_args_parser()
    parser.prog = "python -m benchmarks " + argv[0]
    return run_verb(module.main, parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
