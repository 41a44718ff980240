"""Atomic file writes and hashing for the host side: the device side's `edge_runtime.files`
(one implementation for every package), plus JSON of numpy/Path values, torch checkpoints and
the file records reports hold.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from edge_runtime import files


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, then rename it over `path`."""
    return Path(files.atomic_write_bytes(path, data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n"
    )


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save through a buffer, then an atomic rename (load with weights_only=True)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    return files.sha256_file(path, chunk)


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """What a report.json says about an input file: where it was and what it held."""
    path = Path(path)
    return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
