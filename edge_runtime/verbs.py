"""The `python -m <package> <verb> ...` dispatcher every package's `__main__` uses
(torch-free, Python 3.6: the device runs it for edge_runtime, export and benchmarks).

A verb is a module with `get_args_parser()` and `main(args)` (the torchvision references'
shape), imported only when that verb runs, so `--help` stays fast and one verb's heavy imports
never slow the others down.
"""

import argparse
import importlib
import sys

from edge_runtime.user_errors import run_verb


def build_parser(prog, description, verbs):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, help_text) in verbs.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def dispatch(prog, description, verbs, argv=None, aliases=None):
    """Run the verb `argv[0]` names with the rest of `argv` (default: sys.argv[1:]).

    verbs: {name: (module, one-line help)}; aliases: {name: arguments put in front of the
    user's}. Errors the user can fix print one line and exit with status 2 (`run_verb`).
    No verb prints the verb list (status 2); an unknown one is argparse's "invalid choice".
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        build_parser(prog, description, verbs).print_help()
        return 2
    if argv[0] not in verbs:
        build_parser(prog, description, verbs).parse_args(argv)  # --help, or exit 2
        return 2
    module = importlib.import_module(verbs[argv[0]][0])
    parser = module.get_args_parser()
    parser.prog = prog + " " + argv[0]
    args = parser.parse_args(list((aliases or {}).get(argv[0], [])) + argv[1:])
    return run_verb(module.main, args)
