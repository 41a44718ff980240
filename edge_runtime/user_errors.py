"""One error path for every `python -m <package> <verb>`: a bad input is one line, exit 2.

Every error a user can fix by changing an input (a damaged file, a bad recipe value, a missing
library) derives from `UserError`; its message already names the file, and the line where
there is one, so the command prints it and nothing else. Everything else is a bug and keeps
its traceback. Set NANOPRUNE_TRACEBACK=1 to see the traceback of a user error too.

Torch-free and Python 3.6: the device's verbs use it as well.
"""

import os
import sys

EXIT_BAD_INPUT = 2
TRACEBACK_ENV = "NANOPRUNE_TRACEBACK"


class UserError(Exception):
    """An input the user can fix; the message is the whole answer."""


# Parse errors of the libraries the verbs read files with, named so that neither is imported
# here (protobuf and yaml are absent on the device). Their messages carry no file name: the
# readers that know it wrap them (export.trt.onnx_meta, compress.recipe); these are the net.
FOREIGN_INPUT_ERRORS = (
    "google.protobuf.message.DecodeError",
    "yaml.error.YAMLError",
)


def _qualnames(exc):
    return set(c.__module__ + "." + c.__name__ for c in type(exc).__mro__)


def is_user_error(exc):
    """True for a UserError, an OS error (missing file, permissions, full disk), a file that is
    not text, and the parse errors of protobuf and yaml."""
    if isinstance(exc, (UserError, OSError, UnicodeError)):
        return True
    return bool(_qualnames(exc) & set(FOREIGN_INPUT_ERRORS))


def one_line(exc):
    """The message on one line (a multi-line message is joined with ' | ')."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        text = f"not a text file ({text})"
    elif not isinstance(exc, (UserError, OSError)):
        text = f"{type(exc).__name__}: {text}"
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def run_verb(main, args, stream=None):
    """`main(args)` -> exit status; a user error prints `error: <one line>` and gives 2."""
    try:
        return int(main(args) or 0)
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get(TRACEBACK_ENV):
            raise
        (stream or sys.stderr).write(f"error: {one_line(exc)}\n")
        return EXIT_BAD_INPUT
