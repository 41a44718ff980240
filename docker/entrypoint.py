#!/usr/bin/env python3
"""The Jetson container's entrypoint: engine from the mounted bundle, then the live loop.

    entrypoint.py [run]  [-- extra `python -m edge_runtime run` flags]   (default)
    entrypoint.py engine                 build or reuse the cached TensorRT engine, then exit
    entrypoint.py bench                  latency + loop FPS on this device into $NANOPRUNE_REPORTS
    entrypoint.py healthcheck            exit 0 when the MJPEG server's /stats.json answers

Settings come from the environment (the `docker run -e` flags of docker/run-jetson.sh), each
overridable by the flag of the same name:
    NANOPRUNE_MODEL          /models/model.onnx   ONNX bundle from `python -m export onnx`
    NANOPRUNE_BASELINE       (unset)              bench: the unpruned bundle, timed A/B with MODEL
    NANOPRUNE_SOURCE         csi://0              camera, /dev/videoN, rtsp://..., or a video file
    NANOPRUNE_BACKEND        auto                 auto = trt when TensorRT imports, else ort
    NANOPRUNE_ENGINE_CACHE   /engines             engine cache (a volume: built once per device)
    NANOPRUNE_PRECISION      fp16                 fp16 or fp32: the Nano (sm_53) has no fast INT8
    NANOPRUNE_WORKSPACE_MIB  256                  builder workspace that fits a 4 GB Nano
    NANOPRUNE_HTTP           0.0.0.0:8080         MJPEG page + /stats.json ("" = off); the host
                                                  publishes it on 127.0.0.1 unless run-jetson.sh --lan
    NANOPRUNE_REPORTS        /reports             loop stats and benchmark JSONs
    NANOPRUNE_MAX_FRAMES     (unset)              stop after N frames
    NANOPRUNE_THREADS        (unset)              onnxruntime threads (ort backend)

The engine is built in a child process (`python -m export engine`): TensorRT's builder takes
the CUDA primary context and keeps its memory until the process ends, so building in the loop's
own process would leave the loop's buffers beside a builder's leftovers on a 4 GB Nano. The
loop then holds one context (edge_runtime.cuda_memory shares the primary one).

Python 3.6, torch-free: it runs in the L4T image, and here outside Docker against onnxruntime.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# /opt/nanoprune/docker/entrypoint.py -> /opt/nanoprune holds edge_runtime, export, benchmarks
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MODES = ("run", "engine", "bench", "healthcheck")
PRECISIONS = ("fp16", "fp32")
INT8_ON_NANO = (
    "NANOPRUNE_PRECISION=int8: the Jetson Nano's Maxwell GPU (sm_53) has no fast INT8 "
    "(TensorRT's platform_has_fast_int8 is False there), so this image builds fp16 engines; "
    "set NANOPRUNE_PRECISION=fp16"
)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
DEFAULTS = {
    "model": "/models/model.onnx",
    "baseline": "",
    "source": "csi://0",
    "backend": "auto",
    "engine_cache": "/engines",
    "precision": "fp16",
    "workspace_mib": "256",
    "http": "0.0.0.0:8080",
    "reports": "/reports",
    "max_frames": "",
    "threads": "",
}


class EntrypointError(Exception):
    pass


def env_default(key):
    return os.environ.get("NANOPRUNE_" + key.upper(), DEFAULTS[key])


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=MODES)
    for key in DEFAULTS:
        parser.add_argument("--" + key.replace("_", "-"), default=env_default(key))
    parser.add_argument("--bench-iterations", type=int, default=200)
    parser.add_argument("--bench-frames", type=int, default=300)
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser


def tensorrt_available():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def pick_backend(args):
    if args.backend != "auto":
        return args.backend
    if args.model.lower().endswith(ENGINE_SUFFIXES):
        return "trt"
    return "trt" if tensorrt_available() else "ort"


def check_model(path):
    """The mounted bundle exists and is a nanoprune bundle; its metadata (for the log)."""
    if not os.path.isfile(path):
        raise EntrypointError(
            f"model {path} not found: mount the exported bundle, e.g. "
            "-v $PWD/runs/yolov3-tiny-person/export:/models:ro"
        )
    if path.lower().endswith(ENGINE_SUFFIXES):
        return {}
    from export.trt.onnx_meta import read_bundle_meta

    try:
        return read_bundle_meta(path)
    except Exception as exc:  # BundleError, or onnx/protobuf's own decode errors
        raise EntrypointError(f"{path}: {exc}") from exc


def check_precision(precision):
    if precision == "int8":
        raise EntrypointError(INT8_ON_NANO)
    if precision not in PRECISIONS:
        raise EntrypointError(
            f"NANOPRUNE_PRECISION={precision!r}: expected one of {', '.join(PRECISIONS)}"
        )


def engine_command(args, onnx):
    """The child process that builds (or finds) the cached engine: `python -m export engine`."""
    return [
        sys.executable,
        "-m",
        "export",
        "engine",
        onnx,
        "--cache-dir",
        args.engine_cache,
        "--" + args.precision,
        "--workspace-mib",
        str(int(args.workspace_mib)),
    ]


def engine_for(args, onnx=None, log=print, command=engine_command):
    """Build or reuse the cached engine for a bundle (default: the model) in a child process,
    so that the builder's CUDA context and memory go with it; the engine's path."""
    onnx = onnx or args.model
    if onnx.lower().endswith(ENGINE_SUFFIXES):
        return onnx
    start = time.time()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    )
    proc = subprocess.Popen(
        command(args, onnx),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
        cwd=ROOT,
        env=env,
    )
    path, last = None, ""
    for line in proc.stdout:  # the builder's progress, as it comes
        line = line.rstrip("\n")
        log(line)
        if line.strip():
            last = line.strip()
        if line.startswith("engine: "):
            path = line[len("engine: ") :].strip()
    if proc.wait() != 0 or not path:
        raise EntrypointError(f"{onnx}: the engine build failed ({last or 'no output'})")
    log(f"engine ready in {time.time() - start:.1f} s: {path}")
    return path


def run_argv(args, model, backend):
    """`python -m edge_runtime run` flags for the live loop."""
    argv = ["run", "--model", model, "--backend", backend, "--source", args.source]
    if args.http:
        argv += ["--http", args.http]
    if args.reports:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        argv += ["--stats", os.path.join(args.reports, f"loop-stats-{stamp}.json")]
    if args.max_frames:
        argv += ["--max-frames", str(int(args.max_frames))]
    if args.threads and backend == "ort":
        argv += ["--threads", str(int(args.threads))]
    if backend == "trt" and args.engine_cache:
        argv += [
            "--cache-dir",
            args.engine_cache,
            "--precision",
            args.precision,
            "--workspace-mib",
            str(int(args.workspace_mib)),
        ]
    return argv + list(args.extra)


def bench_argvs(args, models, backend):
    """`python -m benchmarks` latency and loop flags for an on-device FPS report.

    models: [(name, path)], the unpruned baseline first when there is one (A/B interleaved)."""
    common = ["--backend", backend]
    for name, path in models:
        common += ["--model", path, "--name", name]
    if args.threads:
        common += ["--threads", str(int(args.threads))]
    reports = args.reports or "."
    latency = ["latency"] + common + ["--iterations", str(args.bench_iterations)]
    loop = ["loop"] + common + ["--source", args.source, "--frames", str(args.bench_frames)]
    return [
        latency + ["--out", os.path.join(reports, "nano-latency.json")],
        loop + ["--out", os.path.join(reports, "nano-loop.json")],
    ]


def healthcheck(http, timeout=3.0):
    """0 when the MJPEG server answers /stats.json with JSON, else 1 (Docker HEALTHCHECK)."""
    if not http:
        return 0  # no server asked for: nothing to check
    from urllib.request import urlopen

    host, _, port = http.rpartition(":")
    host = host.strip("[]")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    try:
        with urlopen(f"http://{host}:{int(port)}/stats.json", timeout=timeout) as resp:
            json.loads(resp.read().decode("utf-8"))
    except Exception as exc:  # any failure is "unhealthy"; say why for `docker inspect`
        print(f"unhealthy: {exc}")
        return 1
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" goes to `python -m edge_runtime run` untouched.
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = get_args_parser().parse_args(argv)
    args.extra = extra
    if args.mode == "healthcheck":
        return healthcheck(args.http)
    try:
        check_precision(args.precision)
        meta = check_model(args.model)
        backend = pick_backend(args)
        print(
            "nanoprune: model {} ({}, input {}, classes {}), backend {}".format(
                args.model,
                meta.get("name", "engine"),
                meta.get("input_shape"),
                meta.get("classes"),
                backend,
            )
        )
        if args.reports and not args.dry_run and not os.path.isdir(args.reports):
            os.makedirs(args.reports)
        model = args.model
        if backend == "trt":
            if args.dry_run and not model.lower().endswith(ENGINE_SUFFIXES):
                print(" ".join(engine_command(args, model)))
            model = args.model if args.dry_run else engine_for(args)
        if args.mode == "engine":
            return 0
        if args.mode == "bench":
            from benchmarks.__main__ import main as bench_main

            models = [("final", model)]
            if args.baseline:
                check_model(args.baseline)
                base = args.baseline
                if backend == "trt" and not args.dry_run:
                    base = engine_for(args, onnx=args.baseline)
                models.insert(0, ("unpruned", base))
            for cmd in bench_argvs(args, models, backend):
                print("python -m benchmarks " + " ".join(cmd))
                if not args.dry_run:
                    rc = bench_main(cmd)
                    if rc:
                        return rc
            return 0
        cmd = run_argv(args, model, backend)
        print("python -m edge_runtime " + " ".join(cmd))
        if args.dry_run:
            return 0
        from edge_runtime.__main__ import main as edge_main

        return edge_main(cmd)
    except EntrypointError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
