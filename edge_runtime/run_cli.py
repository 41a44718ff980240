"""`python -m edge_runtime run --model m.onnx --source vtest.avi [--http 127.0.0.1:8080] ...`

Runs the detection loop and writes what was asked: a window (--show), an MJPEG page
(--http), a video (--record), detections as JSON lines (--log), and the final stats (--stats).
"""

import argparse
import json
import sys

from edge_runtime.backends import BACKENDS
from edge_runtime.detector import BundleDetector
from edge_runtime.device import facts as device_facts
from edge_runtime.errors import EdgeError
from edge_runtime.files import atomic_write_json
from edge_runtime.mjpeg import MjpegServer
from edge_runtime.outputs import DetectionLog, VideoRecorder, WindowOutput, display_available
from edge_runtime.pipeline import run_loop
from edge_runtime.power import PowerSampler, describe, with_throughput
from edge_runtime.sources import add_source_args, source_from_args
from edge_runtime.tracking import add_tracking_args, tracking_from_args


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Run a nanoprune bundle on frames from a camera, stream or file."
    )
    parser.add_argument(
        "--model", required=True, help="an .onnx bundle, or a .plan/.engine with its .json"
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto"] + sorted(BACKENDS),
        help="auto: by suffix (.onnx -> ort, .plan/.engine -> trt); trt with an .onnx "
        "builds and caches the engine",
    )
    parser.add_argument(
        "--threads", type=int, help="onnxruntime intra-op threads (default: its own)"
    )
    parser.add_argument("--conf", type=float, help="score threshold (default: the bundle's)")
    parser.add_argument("--nms", type=float, help="NMS IoU (default: the bundle's)")
    parser.add_argument(
        "--cache-dir", help="TensorRT engine cache (default ~/.cache/nanoprune/engines)"
    )
    parser.add_argument(
        "--precision", default="fp16", choices=["fp16", "fp32"], help="TensorRT build precision"
    )
    parser.add_argument("--workspace-mib", type=int, default=256, help="TensorRT build workspace")
    add_source_args(parser)
    out = parser.add_argument_group("outputs")
    out.add_argument("--show", action="store_true", help="show a window (when a display exists)")
    out.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve an MJPEG page, e.g. 127.0.0.1:8080 "
        "(use 0.0.0.0:8080 to reach it from elsewhere)",
    )
    out.add_argument(
        "--record", metavar="OUT.mp4", help="record the annotated video (.mp4, .avi, .mkv)"
    )
    out.add_argument("--log", metavar="DET.jsonl", help="write detections, one JSON line per frame")
    out.add_argument("--stats", metavar="STATS.json", help="write the final stats JSON")
    add_tracking_args(parser)
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument(
        "--queue-size", type=int, default=4, help="queue depth between stages (files)"
    )
    parser.add_argument(
        "--bench-frames",
        type=int,
        default=16,
        help="frames kept for the model-only FPS measured after the loop (0: skip)",
    )
    parser.add_argument(
        "--power-interval-ms",
        type=int,
        default=500,
        help="sample tegrastats / the INA3221 rails this often during the run (0: off)",
    )
    parser.add_argument(
        "--bench-seconds",
        type=float,
        default=3.0,
        help="how long the model-only FPS is measured for (skipped after Ctrl-C / SIGTERM)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    return parser


def parse_http(text):
    """'HOST:PORT', ':PORT' or 'PORT' -> (host, port); the host defaults to 127.0.0.1."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise EdgeError("--http {!r}: expected HOST:PORT, e.g. 127.0.0.1:8080".format(text))
    return host.strip("[]") or "127.0.0.1", int(port)


def check_args(args):
    if args.max_frames is not None and args.max_frames < 1:
        raise EdgeError("--max-frames must be >= 1")
    if args.conf is not None and not 0.0 <= args.conf <= 1.0:
        raise EdgeError("--conf must be within [0, 1]")
    if args.nms is not None and not 0.0 < args.nms <= 1.0:
        raise EdgeError("--nms must be within (0, 1]")
    if args.threads is not None and args.threads < 1:
        raise EdgeError("--threads must be >= 1")
    tracking_from_args(args, ["person"])  # bad --count-line/--zone fail before the model loads
    if args.power_interval_ms < 0:
        raise EdgeError("--power-interval-ms must be >= 0")


def build_outputs(args, detector, source, stop):
    outputs = []
    try:
        if args.show:
            if display_available():
                outputs.append(
                    WindowOutput(detector.meta.get("name", "nanoprune"), on_quit=stop.set)
                )
            else:
                sys.stderr.write(
                    "warning: --show ignored: no display here (use --http for a browser view)\n"
                )
        if args.http:
            host, port = parse_http(args.http)
            server = MjpegServer(host, port, title=str(detector.meta.get("name", "nanoprune")))
            outputs.append(server)
            if not args.quiet:
                print("live view: {}".format(server.url))
        if args.record:
            outputs.append(VideoRecorder(args.record, fps=source.fps, realtime=source.live))
        if args.log:
            outputs.append(DetectionLog(args.log, detector.classes))
    except Exception:
        for o in outputs:
            o.close()
        raise
    return outputs


def summary_line(stats):
    bench = stats.get("model_only") or {}
    return "{} frames, loop {} FPS, model-only {} FPS (loop/model {}), peak RSS {} MiB, stopped by {}".format(
        stats["frames"],
        stats["loop_fps"],
        bench.get("fps"),
        stats["loop_vs_model"],
        stats["peak_rss_mb"],
        stats["stopped_by"],
    )


def counting_line(counting):
    parts = ["{} unique people".format(counting["unique_tracks"])]
    for name, line in sorted(counting["lines"].items()):
        parts.append("{}: in {} out {}".format(name, line["in"], line["out"]))
    for name, zone in sorted(counting["zones"].items()):
        parts.append(
            "{}: {} entries, {} inside, mean visit {} s".format(
                name, zone["entries"], zone["inside"], zone["mean_visit_s"]
            )
        )
    return ", ".join(parts)


def power_line(stats):
    """'power: 4.62 W mean ... | Jetson Nano, power mode MAXN' or 'power: not measured'."""
    line = describe(stats.get("power"))
    board = stats.get("device")
    if board:
        mode = (board.get("power_mode") or {}).get("name") or "unknown"
        line += " | {}, power mode {}".format(board.get("model") or "Jetson", mode)
    return line


def main(args):
    import threading

    check_args(args)
    if args.http:
        parse_http(args.http)  # a bad address fails before the model loads
    # Build settings serve the TensorRT backend and onnxruntime's TensorRT provider alike.
    options = {"precision": args.precision, "workspace_mib": args.workspace_mib}
    if args.cache_dir:
        options["cache_dir"] = args.cache_dir
    detector = BundleDetector(
        args.model,
        backend=args.backend,
        threads=args.threads,
        score_threshold=args.conf,
        nms_iou=args.nms,
        **options,
    )
    source = source_from_args(args, detector.meta)
    stop = threading.Event()
    try:
        tracking = tracking_from_args(args, detector.classes, None if source.live else source.fps)
        outputs = build_outputs(args, detector, source, stop)
    except Exception:
        source.release()
        raise
    if not args.quiet:
        print(
            "model {} on {} ({}), source {}".format(
                args.model,
                detector.backend.name,
                ", ".join(detector.describe().get("providers") or []),
                args.source,
            )
        )
    sampler = PowerSampler(args.power_interval_ms).start() if args.power_interval_ms else None
    try:
        stats = run_loop(
            detector,
            source,
            outputs,
            max_frames=args.max_frames,
            queue_size=args.queue_size,
            bench_frames=args.bench_frames,
            bench_min_s=args.bench_seconds,
            stop_event=stop,
            tracking=tracking,
        )
    finally:
        if sampler:
            sampler.stop()
    power = sampler.summary() if sampler else {"measured": False, "reason": "sampling off"}
    stats["power"] = with_throughput(power, stats.get("loop_fps"))
    stats["device"] = device_facts()
    stats["command"] = {k: v for k, v in sorted(vars(args).items())}
    if args.stats:
        atomic_write_json(args.stats, stats)
    print(summary_line(stats))
    if "counting" in stats:
        print(counting_line(stats["counting"]))
    print(power_line(stats))
    dropped = (stats.get("output_thread") or {}).get("dropped")
    if dropped:
        sys.stderr.write(
            "warning: {} frame(s) not recorded/logged: the file outputs fell behind the loop "
            "(their queue of {} was full)\n".format(dropped, stats["output_thread"]["queue_depth"])
        )
    if stats["source"].get("ended_early"):
        sys.stderr.write("warning: {}\n".format(stats["source"]["ended_early"]))
    if not args.quiet and not args.stats:
        print(json.dumps(stats["stages"], sort_keys=True))
    return 0
