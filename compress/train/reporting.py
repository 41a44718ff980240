"""What a training or recovery report.json says about its inputs and its model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from compress.io import file_record

MODEL_FILE_KEYS = ("cfg", "weights", "names", "state_dict", "spec", "graph")


def model_inputs(model_cfg: dict[str, Any] | None, model_dir: str | Path | None) -> dict[str, Any]:
    """sha256 records of the files a model was built from (recipe paths or a model folder)."""
    if model_dir is not None:
        folder = Path(model_dir)
        return {p.name: file_record(p) for p in sorted(folder.iterdir()) if p.is_file()}
    from compress.paths import resolve_asset

    out: dict[str, Any] = {}
    for key in MODEL_FILE_KEYS:
        value = (model_cfg or {}).get(key)
        if isinstance(value, str) and resolve_asset(value).is_file():
            out[key] = file_record(resolve_asset(value))
    return out


def dataset_fingerprint(dataset: Any) -> dict[str, Any]:
    """Image count, box count and a sha256 over the image paths: which images were used."""
    records = getattr(dataset, "records", None)
    if records is None:
        return {"images": len(dataset)}
    digest = hashlib.sha256("\n".join(str(r.path) for r in records).encode()).hexdigest()
    return {
        "images": len(records),
        "boxes": getattr(dataset, "num_boxes", None),
        "paths_sha256": digest,
    }
