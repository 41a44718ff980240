"""`python -m benchmarks loop --model m.onnx --source video.avi`: end-to-end loop FPS per stage.

Device-side (Python 3.6, no torch, no `compress`). Runs the edge runtime's own threaded loop
(`edge_runtime.pipeline.run_loop`: capture -> preprocess -> inference -> postprocess ->
output) on a file or camera, model after model on the same source and frame count, and
records loop FPS, model-only FPS, the per-stage breakdown and the environment.
"""

import argparse
import os
import sys
import time

from benchmarks import environment
from edge_runtime.files import atomic_write_json
from edge_runtime.power import describe

SKIP_FRAMES = 5  # frames run before the measured pass: engine warm-up, caches, decoder start


def measure_loop(
    path,
    source,
    backend="ort",
    threads=None,
    max_frames=100,
    warmup_frames=SKIP_FRAMES,
    name=None,
    options=None,
    draw=False,
):
    """One model's loop on `source` (a URI for `edge_runtime.sources.open_source`).

    A short warm-up pass on the same source runs first (and is thrown away) so that engine
    start-up and first-frame costs never count against the loop. With `draw`, the frames are
    annotated as a live display would (a null output that needs the image).
    Returns {name, path, loop_fps, model_only, loop_vs_model, stages, latency, frames, ...}.
    """
    from edge_runtime.detector import BundleDetector
    from edge_runtime.pipeline import run_loop
    from edge_runtime.power import PowerSampler, with_throughput
    from edge_runtime.sources import open_source

    threads = int(threads) if threads else environment.usable_cores()
    detector = BundleDetector(str(path), backend=backend, threads=threads, **(options or {}))
    outputs = [_DrawSink()] if draw else []
    try:
        if warmup_frames:
            run_loop(
                detector,
                open_source(source),
                max_frames=warmup_frames,
                bench_frames=0,
                handle_signals=False,
            )
        # Power is sampled over the measured pass only, so FPS per watt pairs like with like.
        with PowerSampler() as sampler:
            stats = run_loop(detector, open_source(source), outputs=outputs, max_frames=max_frames)
        stats["power"] = with_throughput(sampler.summary(), stats.get("loop_fps"))
        stats["runtime"] = detector.describe()
    finally:
        detector.close()
    stats.update(
        name=name or os.path.splitext(os.path.basename(str(path)))[0],
        path=os.path.abspath(str(path)),
        flops=detector.meta.get("flops"),
        params=detector.meta.get("params"),
        input_shape=[int(d) for d in detector.meta["input_shape"]],
    )
    return stats


class _DrawSink:
    """An output that wants annotated frames and drops them: drawing cost without a display."""

    needs_image = True

    def write(self, result):
        pass

    def close(self):
        pass


def measure_loops(
    paths,
    source,
    backend="ort",
    threads=None,
    max_frames=100,
    warmup_frames=SKIP_FRAMES,
    names=None,
    options=None,
    draw=False,
):
    """Every model's loop on the same source, in turn; the loop JSON as a dict."""
    threads = int(threads) if threads else environment.usable_cores()
    runs = []
    for i, path in enumerate(paths):
        name = names[i] if names and i < len(names) else None
        runs.append(
            measure_loop(
                path, source, backend, threads, max_frames, warmup_frames, name, options, draw
            )
        )
    return {
        "kind": "loop",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(source),
        "backend": backend,
        "threads": threads,
        "max_frames": max_frames,
        "warmup_frames": warmup_frames,
        "draw": bool(draw),
        "environment": environment.collect(backend=backend, threads=threads),
        "models": runs,
    }


def format_summary(result):
    stages = ("capture", "preprocess", "inference", "postprocess", "output")
    head = "{:<24} {:>8} {:>8}".format("model", "loop FPS", "model FPS")
    head += "".join(f" {s[:11]:>11}" for s in stages)
    lines = [head + "   (stage means, ms)"]
    for m in result["models"]:
        row = "{:<24} {:>8} {:>8}".format(
            m["name"][:24], _num(m.get("loop_fps")), _num((m.get("model_only") or {}).get("fps"))
        )
        for s in stages:
            row += " {:>11}".format(_num((m.get("stages") or {}).get(s, {}).get("mean_ms")))
        lines.append(row)
    for m in result["models"]:
        lines.append("{:<24} {}".format(m["name"][:24], describe(m.get("power"))))
    mode = (result.get("environment") or {}).get("power_mode") or "-"
    lines.append(f"power mode {mode}")
    return "\n".join(lines)


def _num(value):
    return "-" if value is None else f"{float(value):.2f}"


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument(
        "--model", action="append", required=True, help="bundle or engine; repeatable"
    )
    parser.add_argument("--name", action="append", help="display name per --model, in order")
    parser.add_argument("--source", required=True, help="video file, image folder or camera URI")
    parser.add_argument("--backend", default="ort", choices=("auto", "ort", "trt"))
    parser.add_argument("--threads", type=int, default=None, help="fixed intra-op threads")
    parser.add_argument("--frames", type=int, default=100, help="frames measured per model")
    parser.add_argument("--warmup-frames", type=int, default=SKIP_FRAMES)
    parser.add_argument("--draw", action="store_true", help="include drawing the boxes on frames")
    parser.add_argument("--cache-dir", help="TensorRT engine cache folder (backend trt)")
    parser.add_argument("--out", help="write the JSON here")
    return parser


def main(args):
    from edge_runtime.errors import EdgeError

    if args.frames < 1:
        print("error: --frames must be >= 1", file=sys.stderr)
        return 2
    options = {"cache_dir": args.cache_dir} if args.cache_dir else None
    try:
        result = measure_loops(
            args.model,
            args.source,
            backend=args.backend,
            threads=args.threads,
            max_frames=args.frames,
            warmup_frames=args.warmup_frames,
            names=args.name,
            options=options,
            draw=args.draw,
        )
    except (EdgeError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result))
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0
