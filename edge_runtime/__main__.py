"""`python -m edge_runtime <verb> ...`: the device-side command line.

Each verb is a module with `get_args_parser()` and `main(args)`, imported only when it runs.
Errors the user can fix (bad model file, bad source URI, missing library) print one line and
exit with status 2.
"""

import sys

from edge_runtime.verbs import dispatch

# verb -> (module, one-line help)
VERBS = {
    "run": ("edge_runtime.run_cli", "run the detection loop on a camera, stream, video or images"),
    "info": ("edge_runtime.info_cli", "print a bundle's metadata and the backends available here"),
}


def main(argv=None):
    return dispatch("python -m edge_runtime", __doc__.splitlines()[0], VERBS, argv)


if __name__ == "__main__":
    sys.exit(main())
