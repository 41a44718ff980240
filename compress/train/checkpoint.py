"""Checkpoints that `torch.load(..., weights_only=True)` reads: tensors and plain types only.

A checkpoint holds everything `--resume` needs to continue as if never stopped: model,
optimizer, scheduler, AMP scaler and EMA state, the position (epoch, batches done in that
epoch, optimizer steps) and the torch / CUDA / numpy / python RNG states. It is written
atomically (compress.io), so a kill while saving leaves the previous good checkpoint.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.io import atomic_torch_save

FORMAT = 1


def rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    key, np_state, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": key,
            "state": torch.from_numpy(np_state.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "state": torch.tensor(state, dtype=torch.int64),
            "gauss": gauss,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["key"],
            n["state"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` plus the RNG states and a format number, atomically."""
    return atomic_torch_save({"format": FORMAT, **state, "rng": rng_state()}, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only) with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (nothing to resume from)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable nanoprune checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise ValueError(
            f"{path}: not a nanoprune training checkpoint (format {FORMAT} with a model)"
        )
    return ckpt
