"""`python -m edge_runtime info --model m.onnx`: the bundle's metadata and this device's backends."""

import argparse
import json
import sys

from edge_runtime.backends import BACKENDS
from edge_runtime.detector import BundleDetector
from edge_runtime.sources import gstreamer_support, is_jetson


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="an .onnx bundle or a .plan/.engine (omit: only the device)"
    )
    parser.add_argument("--backend", default="auto", choices=["auto"] + sorted(BACKENDS))
    return parser


def device_info():
    import cv2

    info = {"jetson": is_jetson(), "opencv": cv2.__version__, "gstreamer": gstreamer_support()}
    for module in ("onnxruntime", "tensorrt", "pycuda"):
        try:
            info[module] = getattr(__import__(module), "__version__", "present")
        except ImportError:
            info[module] = None
    if info["onnxruntime"]:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    return info


def main(args):
    report = {"device": device_info()}
    if args.model:
        det = BundleDetector(args.model, backend=args.backend)
        report["model"] = det.describe()
        report["meta"] = det.meta
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
