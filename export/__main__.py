"""`python -m export <verb> ...`: ONNX bundles, TensorRT checks and engines.

Each verb is a module with `get_args_parser()` and `main(args)`, imported only when it runs:
`engine` stays torch-free and Python 3.6 so it runs on the Jetson Nano.
"""

import sys

from edge_runtime.verbs import dispatch

# verb -> (module, one-line help). Add a verb by adding a line here.
VERBS = {
    "onnx": (
        "export.onnx_export",
        "export a model or run folder to an ONNX bundle (+ parity check)",
    ),
    "check": ("export.check", "check an ONNX file against TensorRT 8.2 (nano) or 10 (desktop)"),
    "engine": ("export.trt.cli", "build or reuse a TensorRT engine (on the device)"),
}


def main(argv=None):
    return dispatch("python -m export", __doc__.splitlines()[0], VERBS, argv)


if __name__ == "__main__":
    sys.exit(main())
