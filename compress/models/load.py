"""Load, save and hand on detectors: the `model:` section of a recipe and model folders.

A model folder holds `model.json` plus the family's files (YOLO: `model.cfg` + `model.weights`;
SSD: a channel-spec JSON + a state_dict `.pt`). It is how every stage of the pipeline hands a
model to the next, and what `python -m compress eval --model DIR` reads.

Families are a registry of module names, imported only when used. Each family module has
`build_from_config(model_cfg) -> Detector`, `save(detector, folder) -> dict` (writes its
files, returns their model.json entries, paths relative to the folder) and
`load_dir(folder, meta) -> Detector`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from compress.io import read_json, sha256_file, write_json
from compress.models.base import Detector
from compress.paths import resolve_asset

FAMILIES: dict[str, str] = {
    "yolo": "compress.models.yolo",
    "ssd": "compress.models.ssd",
}
MODEL_JSON = "model.json"
FORMAT = "nanoprune-model"
VERSION = 1
# Detector settings every family shares; a recipe or model.json may set them.
COMMON = {
    "resize": "resize_mode",
    "pad_value": "pad_value",
    "score_threshold": "default_score_threshold",
    "nms_iou": "default_nms_iou",
}
RESIZE_MODES = ("letterbox", "stretch")


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[family])


def asset_path(path: str | os.PathLike, what: str = "file") -> Path:
    """A recipe path resolved against NANOPRUNE_ASSETS; a clear error when it is missing."""
    resolved = resolve_asset(path)
    if resolved.exists():
        return resolved
    text = str(path)
    if not (Path(text).is_absolute() or text.startswith(("./", "../"))):
        from compress.assets import require

        return require(text)  # names the file, where it goes and how to fetch it
    raise FileNotFoundError(
        f"model {what} not found: {resolved} (from {text!r}; set NANOPRUNE_ASSETS or use an absolute path)"
    )


def _apply_common(detector: Detector, settings: dict[str, Any], source: str) -> Detector:
    for key, attr in COMMON.items():
        if settings.get(key) is not None:
            setattr(detector, attr, settings[key])
    if detector.resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"{source}: resize={detector.resize_mode!r}; use one of {', '.join(RESIZE_MODES)}"
        )
    return detector


def load_detector(model_cfg: dict[str, Any]) -> Detector:
    """A detector from a recipe's `model:` section (`family` picks the builder).

    Example:
        >>> det = load_detector({"family": "yolo", "cfg": "darknet/yolov3-tiny.cfg",
        ...     "weights": "darknet/yolov3-tiny.weights", "names": "darknet/coco.names",
        ...     "classes": ["person"], "input_size": 416, "resize": "letterbox"})
    """
    if not isinstance(model_cfg, dict) or "family" not in model_cfg:
        raise ValueError(
            f"model: needs a mapping with `family:` ({', '.join(FAMILIES)}), got {model_cfg!r}"
        )
    detector = family_module(model_cfg["family"]).build_from_config(model_cfg)
    return _apply_common(detector, model_cfg, "model")


def save_detector(
    detector: Detector, folder: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write a loadable model folder (family files + model.json); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = family_module(detector.family).save(detector, folder) or {}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "family": detector.family,
        **files,
        "classes": list(detector.class_names),
        "input_size": list(detector.input_size),
        **{key: getattr(detector, attr) for key, attr in COMMON.items()},
        # sha256 of each file, so a cfg paired with the wrong weights is caught on load
        "sha256": {name: sha256_file(folder / name) for name in _file_entries(files, folder)},
    }
    if extra:
        meta.update(extra)
    write_json(folder / MODEL_JSON, meta)
    return folder


def _file_entries(files: dict[str, Any], folder: Path) -> list[str]:
    return [v for v in files.values() if isinstance(v, str) and (folder / v).is_file()]


def read_model_json(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not a model folder (no {MODEL_JSON}; write one with save_detector)"
        )
    meta = read_json(path)
    if not isinstance(meta, dict) or "family" not in meta:
        raise ValueError(f"{path}: model.json needs a `family` field")
    if meta.get("version", VERSION) > VERSION:
        raise ValueError(
            f"{path}: model.json version {meta['version']} is newer than this code reads ({VERSION})"
        )
    return meta


def load_detector_dir(folder: str | os.PathLike) -> Detector:
    """The detector saved in `folder` by `save_detector`."""
    folder = Path(folder)
    meta = read_model_json(folder)
    for name, digest in (meta.get("sha256") or {}).items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{folder / MODEL_JSON} names {name}, which is missing")
        if sha256_file(path) != digest:
            raise ValueError(
                f"{path}: sha256 differs from {MODEL_JSON}; the file was changed after saving"
            )
    detector = family_module(meta["family"]).load_dir(folder, meta)
    return _apply_common(detector, meta, str(folder / MODEL_JSON))
