"""`python -m benchmarks latency --model a.onnx --model b.onnx`: side-by-side model latency.

Device-side (Python 3.6, no torch, no `compress`): runs on the workstation and on the Nano.
Inference goes through the edge runtime's own `BundleDetector`, the code that is deployed.

Method (DESIGN.md section 6): every model is loaded once, warmed up, then timed for many
iterations in a rotating round-robin (A,B / B,A / ...) so that drift, throttling or a noisy
neighbour slows every model alike; the thread count is fixed and written into the JSON. Mode
"infer" times the backend call on a fixed preprocessed blob (the model alone); "detect"
times preprocess + infer + NMS on a frame (what one frame costs the loop, minus capture).
"""

import argparse
import os
import sys
import time

import numpy as np

from benchmarks import environment
from benchmarks.stats import round_robin_orders, speedup, summarize
from edge_runtime.files import atomic_write_json, sha256_file
from edge_runtime.power import PowerSampler, describe

MODES = ("infer", "detect")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm")


def rss_mb():
    """(current RSS, peak RSS) of this process in MiB from /proc; None where absent."""
    fields = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024.0
    except (OSError, ValueError):
        pass
    return fields.get("VmRSS"), fields.get("VmHWM")


def gpu_used_mb():
    """Used GPU memory seen from the current CUDA context (pycuda), or None."""
    try:
        import pycuda.driver as cuda

        free, total = cuda.mem_get_info()
    except Exception:  # no pycuda or no active context (CPU run): nothing to report
        return None
    return (total - free) / float(1 << 20)


def load_frame(path):
    """A frame to time with: an image file, or the first frame of a video."""
    import cv2

    frame = None
    if os.path.splitext(path)[1].lower() not in VIDEO_SUFFIXES:
        frame = cv2.imread(path)
    if frame is None:
        cap = cv2.VideoCapture(path)
        ok, frame = cap.read()
        cap.release()
        if not ok:
            raise ValueError(f"{path}: cannot read an image or a video frame from it")
    return frame


def synthetic_frame(height=576, width=768, seed=0):
    """A deterministic noise frame (vtest.avi's size): inference time ignores pixel content."""
    return np.random.RandomState(seed).randint(0, 256, size=(height, width, 3)).astype(np.uint8)


def unique_names(paths, names=None):
    """Display names: given ones, else file stems, made unique with a counter."""
    out, seen = [], {}
    for i, path in enumerate(paths):
        name = (
            names[i]
            if names and i < len(names)
            else os.path.splitext(os.path.basename(str(path)))[0]
        )
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


class _Timed:
    """One loaded model and the zero-argument call that is timed."""

    def __init__(self, path, name, backend, threads, mode, frame, options):
        from edge_runtime.detector import BundleDetector

        rss0, _ = rss_mb()
        gpu0 = gpu_used_mb()
        self.path, self.name = str(path), name
        self.detector = BundleDetector(self.path, backend=backend, threads=threads, **options)
        blob, _ = self.detector.preprocess(frame)
        if mode == "infer":
            self.call = lambda: self.detector.infer(blob)
        else:
            self.call = lambda: self.detector.detect(frame)
        self.rss_before = rss0
        self.gpu_before = gpu0
        self.times = []
        self.memory_record = None

    def memory(self):
        """Memory this model added when loaded and warmed up (RSS; GPU where pycuda sees it)."""
        rss, _ = rss_mb()
        gpu = gpu_used_mb()
        out = {"rss_added_mb": None, "gpu_added_mb": None}
        if rss is not None and self.rss_before is not None:
            out["rss_added_mb"] = rss - self.rss_before
        if gpu is not None and self.gpu_before is not None:
            out["gpu_added_mb"] = gpu - self.gpu_before
        return out

    def record(self):
        meta = self.detector.meta
        lat = summarize(self.times)
        return {
            "name": self.name,
            "path": os.path.abspath(self.path),
            "sha256": sha256_file(self.path),
            "bundle_name": meta.get("name"),
            "family": meta.get("family"),
            "input_shape": [int(d) for d in meta["input_shape"]],
            "classes": list(meta["classes"]),
            "flops": meta.get("flops"),
            "params": meta.get("params"),
            "source": meta.get("source"),
            "runtime": self.detector.describe(),
            "latency_ms": lat,
            "fps": lat["fps"],
            "memory": self.memory_record,
        }


def measure_models(
    paths,
    backend="ort",
    threads=None,
    warmup=10,
    iterations=100,
    mode="infer",
    frame=None,
    names=None,
    options=None,
    progress=None,
):
    """Time several model bundles side by side; return the latency JSON as a dict.

    Args:
        paths: ONNX bundles (or TensorRT engines with backend "trt").
        backend: "auto", "ort" or "trt" (edge_runtime backends).
        threads: intra-op threads (None = all usable cores); fixed, and written into the result.
        warmup: untimed calls per model before timing (engine autotuning, caches, clocks).
        iterations: timed calls per model, interleaved round-robin.
        mode: "infer" (model only) or "detect" (preprocess + infer + NMS on `frame`).
        frame: BGR uint8 frame (default: a deterministic 768x576 noise frame).
        names: display names (default: file stems).
        options: extra backend options (e.g. {"cache_dir": ...} for TensorRT engines).
        progress: callable(done, total) or None.

    Example:
        >>> r = measure_models(["base.onnx", "pruned.onnx"], threads=2, iterations=200)
        >>> r["models"][1]["speedup_p50"]   # baseline p50 / pruned p50
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not paths:
        raise ValueError("no models to measure")
    if iterations < 1 or warmup < 0:
        raise ValueError("iterations must be >= 1 and warmup >= 0")
    threads = int(threads) if threads else environment.usable_cores()
    frame = synthetic_frame() if frame is None else frame
    display = unique_names(paths, names)
    models = []
    # Loaded and warmed one at a time, so that each model's memory growth is its own.
    for path, name in zip(paths, display):
        m = _Timed(path, name, backend, threads, mode, frame, options or {})
        for _ in range(warmup):
            m.call()
        m.memory_record = m.memory()
        models.append(m)
    orders = round_robin_orders(len(models), iterations)
    clock = time.perf_counter
    # One power record for the interleaved run: models alternate faster than any sampler can
    # tell apart, so per-model watts come from `benchmarks loop`, which runs them in turn.
    with PowerSampler() as sampler:
        for it, order in enumerate(orders):
            for idx in order:
                t0 = clock()
                models[idx].call()
                models[idx].times.append(clock() - t0)
            if progress:
                progress(it + 1, iterations)
    _, peak = rss_mb()
    records = [m.record() for m in models]
    base = records[0]
    for rec, m in zip(records, models):
        rec["speedup_p50"] = speedup(base["latency_ms"], rec["latency_ms"], "p50")
        rec["speedup_mean"] = speedup(base["latency_ms"], rec["latency_ms"], "mean")
        # Paired per-iteration ratio: both calls ran back to back, so drift cancels in each pair.
        paired = np.asarray(models[0].times) / np.maximum(np.asarray(m.times), 1e-12)
        rec["speedup_paired_p50"] = float(np.median(paired))
    for m in models:
        m.detector.close()
    return {
        "kind": "latency",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": backend,
        "threads": threads,
        "mode": mode,
        "warmup": warmup,
        "iterations": iterations,
        "interleave": "round-robin (rotating start)",
        "frame_shape": list(frame.shape),
        "peak_rss_mb": peak,
        "environment": environment.collect(backend=backend, threads=threads),
        "power": sampler.summary(),
        "models": records,
    }


def format_summary(result):
    lines = [
        "{:<28} {:>9} {:>9} {:>9} {:>8} {:>9}".format(
            "model", "p50 ms", "p90 ms", "p99 ms", "FPS", "speed-up"
        )
    ]
    for m in result["models"]:
        lat = m["latency_ms"]
        lines.append(
            "{:<28} {:>9.2f} {:>9.2f} {:>9.2f} {:>8.1f} {:>8.2f}x".format(
                m["name"][:28], lat["p50"], lat["p90"], lat["p99"], lat["fps"], m["speedup_p50"]
            )
        )
    env = result["environment"]
    lines.append(describe(result.get("power")) + " (all models, interleaved)")
    lines.append(
        "{} | backend {} | {} threads | power mode {} | {} x {} iterations ({})".format(
            env.get("device"),
            result["backend"],
            result["threads"],
            env.get("power_mode") or "-",
            len(result["models"]),
            result["iterations"],
            result["mode"],
        )
    )
    return "\n".join(lines)


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="model bundle (.onnx) or engine; repeat for A/B (first = baseline)",
    )
    parser.add_argument("--name", action="append", help="display name per --model, in order")
    parser.add_argument("--backend", default="ort", choices=("auto", "ort", "trt"))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads, fixed for every model (default: usable cores)",
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--mode", default="infer", choices=MODES)
    parser.add_argument(
        "--image", help="image or video whose (first) frame is used (default: noise)"
    )
    parser.add_argument("--cache-dir", help="TensorRT engine cache folder (backend trt)")
    parser.add_argument("--out", help="write the JSON here (default: print it only)")
    return parser


def main(args):
    from edge_runtime.errors import EdgeError

    if args.name and len(args.name) != len(args.model):
        print(
            f"error: give one --name per --model ({len(args.name)} names, {len(args.model)} models)",
            file=sys.stderr,
        )
        return 2
    try:
        frame = load_frame(args.image) if args.image else None
        options = {"cache_dir": args.cache_dir} if args.cache_dir else None
        result = measure_models(
            args.model,
            backend=args.backend,
            threads=args.threads,
            warmup=args.warmup,
            iterations=args.iterations,
            mode=args.mode,
            frame=frame,
            names=args.name,
            options=options,
        )
    except (EdgeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result))
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0
