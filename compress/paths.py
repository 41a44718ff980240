"""Where the assets live: one setting, `NANOPRUNE_ASSETS` (default `./assets`)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "NANOPRUNE_ASSETS"
DEFAULT = "./assets"


def assets_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT).expanduser()


def resolve_asset(path: str | os.PathLike) -> Path:
    """An absolute path or one starting with ./ or ../ is taken as it is; anything else is
    relative to the assets root (so recipes say `darknet/yolov3-tiny.cfg`)."""
    p = Path(path).expanduser()
    text = str(path)
    if p.is_absolute() or text.startswith(("./", "../")):
        return p
    return assets_root() / p
