"""`python -m edge_runtime <verb> ...`: the device-side command line.

Each verb is a module with `get_args_parser()` and `main(args)`, imported only when it runs.
Errors the user can fix (bad model file, bad source URI, missing library) print one line and
exit with status 2.
"""

import argparse
import importlib
import sys

from export.user_errors import run_verb

# verb -> (module, one-line help)
VERBS = {
    "run": ("edge_runtime.run_cli", "run the detection loop on a camera, stream, video or images"),
    "info": ("edge_runtime.info_cli", "print a bundle's metadata and the backends available here"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m edge_runtime", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, help_text) in VERBS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        build_parser().print_help()
        return 2
    if argv[0] not in VERBS:
        build_parser().parse_args(argv)  # --help, or argparse's "invalid choice" (exit 2)
        return 2
    module = importlib.import_module(VERBS[argv[0]][0])
    parser = module.get_args_parser()
    parser.prog = "python -m edge_runtime " + argv[0]
    return run_verb(module.main, parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
