"""Darknet `.weights` files: read into and write from a `YOLO`.

Layout (darknet `src/parser.c`, `load_weights_upto` / `save_weights_upto`):
- header: int32 major, minor, revision, then `seen` (images trained on) as int64 when
  `major * 10 + minor >= 2` (and both < 1000), else as int32;
- then, for every `[convolutional]` layer in cfg order, float32 little-endian:
  with batch_normalize: bias (beta), scale (gamma), rolling mean, rolling variance;
  without: bias; then the weights `[filters, in/groups, size, size]` (PyTorch's own order).
Reading and writing back gives the same bytes; the header is kept on `model.weights_header`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.io import atomic_write_bytes
from edge_runtime.user_errors import UserError

DEFAULT_HEADER = (0, 2, 0, 0)  # major, minor, revision, seen: Darknet's current format


class WeightsError(UserError, ValueError):
    """A weights file that does not fit the cfg; the message names the file and the layer."""


def _conv_blocks(model: nn.Module) -> list[tuple[int, nn.Conv2d, nn.BatchNorm2d | None]]:
    out = []
    for i, (block, module) in enumerate(zip(model.blocks, model.module_list)):
        if block["type"] == "convolutional":
            out.append((i, module.conv, getattr(module, "bn", None)))
    return out


def _tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> list[torch.Tensor]:
    """The tensors of one conv layer in file order."""
    if bn is not None:
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
    if conv.bias is None:
        raise WeightsError(f"{conv}: a conv without batch norm needs a bias in Darknet")
    return [conv.bias, conv.weight]


def expected_floats(model: nn.Module) -> int:
    return sum(t.numel() for _, c, b in _conv_blocks(model) for t in _tensors(c, b))


def read_header(data: bytes, path: str = "<weights>") -> tuple[tuple[int, int, int, int], int]:
    """((major, minor, revision, seen), header size in bytes)."""
    if len(data) < 16:
        raise WeightsError(f"{path}: {len(data)} bytes is too short for a Darknet weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
        if len(data) < 20:
            raise WeightsError(f"{path}: truncated header (needs 20 bytes)")
        return (major, minor, revision, int(np.frombuffer(data, "<i8", 1, 12)[0])), 20
    if major > 1000 or minor > 1000:
        raise WeightsError(
            f"{path}: header {major}.{minor} marks transposed (very old) Darknet weights; unsupported"
        )
    return (major, minor, revision, int(np.frombuffer(data, "<i4", 1, 12)[0])), 16


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Fill `model` (a YOLO) from a Darknet weights file, in place; returns the model.

    strict: the file must hold exactly the floats the cfg needs. With strict=False a file
    that stops at a layer boundary (Darknet's `darknet53.conv.74` backbone) fills the first
    layers and leaves the rest as they are.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file not found: {path}") from None
    header, offset = read_header(data, str(path))
    body = len(data) - offset
    if body % 4:
        raise WeightsError(
            f"{path}: {body} bytes after the header is not a whole number of float32 values"
        )
    floats = np.frombuffer(data, "<f4", offset=offset)
    need = expected_floats(model)
    if strict and floats.size != need:
        raise WeightsError(
            f"{path}: cfg/weights mismatch: the cfg's conv layers need {need} floats, the file holds "
            f"{floats.size} ({'truncated or a smaller cfg' if floats.size < need else 'a larger cfg'}); "
            "check that the .cfg is the one these weights were trained with"
        )
    pos = 0
    with torch.no_grad():
        for i, conv, bn in _conv_blocks(model):
            if pos == floats.size and not strict:
                break  # a backbone-only file ends on a layer boundary
            for t in _tensors(conv, bn):
                n = t.numel()
                if pos + n > floats.size:
                    raise WeightsError(
                        f"{path}: truncated in layer {i} [convolutional]: needs {n} more floats, "
                        f"{floats.size - pos} remain (the cfg needs {need} in all, the file holds {floats.size})"
                    )
                t.copy_(torch.from_numpy(floats[pos : pos + n].copy()).view_as(t))
                pos += n
    model.weights_header = header
    return model


def weights_bytes(model: nn.Module, header: tuple[int, int, int, int] | None = None) -> bytes:
    major, minor, revision, seen = (
        header or getattr(model, "weights_header", None) or DEFAULT_HEADER
    )
    head = np.array([major, minor, revision], "<i4").tobytes()
    big_seen = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    head += np.array([seen], "<i8" if big_seen else "<i4").tobytes()
    parts = [head]
    for _, conv, bn in _conv_blocks(model):
        for t in _tensors(conv, bn):
            parts.append(
                t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()
            )
    return b"".join(parts)


def save_weights(
    model: nn.Module, path: str | os.PathLike, header: tuple[int, int, int, int] | None = None
) -> Path:
    """Write `model` as a Darknet weights file (atomically); header defaults to the loaded one."""
    return atomic_write_bytes(path, weights_bytes(model, header))
