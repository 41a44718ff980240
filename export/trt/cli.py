"""`python -m export engine model.onnx --fp16`: build (or reuse) the TensorRT engine.

Runs on the device (Python 3.6, no torch). With --out the engine goes exactly there; without
it, into the cache folder under a name keyed by GPU, TensorRT version, precision and ONNX
sha256. --print-trtexec prints the equivalent trtexec line and needs no TensorRT at all.
"""

import argparse
import os
import sys

from export.trt.builder import DEFAULT_WORKSPACE_MIB, build_engine, trtexec_command


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("onnx", help="bundle from `python -m export onnx`")
    prec = parser.add_mutually_exclusive_group()
    prec.add_argument(
        "--fp16",
        dest="precision",
        action="store_const",
        const="fp16",
        help="FP16 engine (default; what the Nano runs)",
    )
    prec.add_argument(
        "--int8",
        dest="precision",
        action="store_const",
        const="int8",
        help="INT8 + FP16 with entropy calibration (not on the Nano)",
    )
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32")
    parser.set_defaults(precision="fp16")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="engine cache folder (default: engines/ next to the ONNX file)",
    )
    parser.add_argument("--out", default=None, help="write the engine here instead (no cache)")
    parser.add_argument(
        "--workspace-mib",
        type=int,
        default=DEFAULT_WORKSPACE_MIB,
        help="builder workspace limit (default %(default)s MiB, Nano-safe)",
    )
    parser.add_argument(
        "--timing-cache",
        default=None,
        help="timing cache file (default: one per GPU + TensorRT in the cache folder)",
    )
    parser.add_argument("--no-timing-cache", action="store_true")
    parser.add_argument(
        "--dla-core", type=int, default=None, help="build for this DLA core (Xavier/Orin)"
    )
    parser.add_argument("--calib-images", default=None, help="image folder for INT8 calibration")
    parser.add_argument("--calib-cache", default=None, help="INT8 calibration table (read/written)")
    parser.add_argument("--rebuild", action="store_true", help="build even on a cache hit")
    parser.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    parser.add_argument(
        "--print-trtexec",
        action="store_true",
        help="only print the equivalent trtexec command (needs no TensorRT)",
    )
    return parser


def _check_args(args):
    if not os.path.isfile(args.onnx):
        raise SystemExit("{}: no such ONNX file".format(args.onnx))
    if args.precision != "int8" and (args.calib_images or args.calib_cache):
        raise SystemExit("--calib-images/--calib-cache only apply to --int8")
    if args.workspace_mib <= 0:
        raise SystemExit("--workspace-mib must be positive")


def main(args):
    _check_args(args)
    try:
        return _run(args)
    except (RuntimeError, ValueError) as exc:  # EngineBuildError, no TensorRT, bad bundle
        print("error: {}".format(exc), file=sys.stderr)
        return 1


def _run(args):
    timing = None if args.no_timing_cache else args.timing_cache
    if args.print_trtexec:
        out = args.out or os.path.splitext(args.onnx)[0] + "." + args.precision + ".engine"
        print(
            trtexec_command(
                args.onnx,
                out,
                args.precision,
                args.workspace_mib,
                timing,
                args.dla_core,
                args.calib_cache,
            )
        )
        return 0
    if args.out:
        record = build_engine(
            args.onnx,
            args.out,
            precision=args.precision,
            workspace_mib=args.workspace_mib,
            timing_cache=timing,
            dla_core=args.dla_core,
            calib_images=args.calib_images,
            calib_cache=args.calib_cache,
            verbose=args.verbose,
        )
        print(
            "engine: {} ({} bytes, {} s)".format(
                args.out, record["engine_bytes"], record["build_seconds"]
            )
        )
        return 0
    from export.trt.cache import get_or_build_engine

    cache_dir = args.cache_dir or os.path.join(
        os.path.dirname(os.path.abspath(args.onnx)), "engines"
    )
    path = get_or_build_engine(
        args.onnx,
        cache_dir,
        precision=args.precision,
        workspace_mib=args.workspace_mib,
        dla_core=args.dla_core,
        calib_images=args.calib_images,
        rebuild=args.rebuild,
        timing_cache=timing or not args.no_timing_cache,
        verbose=args.verbose,
    )
    print("engine: {}".format(path))
    return 0
