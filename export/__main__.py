"""`python -m export <verb> ...`: ONNX bundles, TensorRT checks and engines.

Each verb is a module with `get_args_parser()` and `main(args)`, imported only when it runs:
`engine` stays torch-free and Python 3.6 so it runs on the Jetson Nano.
"""

import argparse
import importlib
import sys

from export.user_errors import run_verb

# verb -> (module, one-line help). Add a verb by adding a line here.
VERBS = {
    "onnx": (
        "export.onnx_export",
        "export a model or run folder to an ONNX bundle (+ parity check)",
    ),
    "check": ("export.check", "check an ONNX file against TensorRT 8.2 (nano) or 10 (desktop)"),
    "engine": ("export.trt.cli", "build or reuse a TensorRT engine (on the device)"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, help_text) in VERBS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VERBS:
        build_parser().parse_args(argv or ["--help"])
        return 2
    module = importlib.import_module(VERBS[argv[0]][0])
    parser = module.get_args_parser()
    parser.prog = "python -m export " + argv[0]
    return run_verb(module.main, parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
