"""Darknet `.cfg` files as data: parse to a list of dicts, write back, edit the layer list.

A cfg is a list of sections (`[convolutional]`, `[route]`, ...) each holding `key=value` lines.
`parse_cfg` returns one dict per section with the section name under `"type"` and the values
typed (int, float, str, or a list for comma-separated values; `layers`, `mask`, `anchors` and
`from` are always lists), so the pruning code edits `block["filters"] = 96` and rebuilds.
`write_cfg` turns the dicts back into text that Darknet and OpenCV 4 read.

Darknet semantics kept on purpose: lines starting with `#` or `;` are comments, whitespace is
ignored, and when a key repeats inside one section the FIRST value wins (Darknet's
`option_find` and OpenCV's reader both return the first one); repeats are reported through
`CfgBlock.repeated` so a user sees that the second value was ignored.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge_runtime.user_errors import UserError

# Keys whose value is a list even when it holds one item (route layers=-4, shortcut from=-3).
LIST_KEYS = {"layers", "mask", "anchors", "from", "steps", "scales"}


class CfgError(UserError, ValueError):
    """A cfg that cannot be parsed or built; the message names the file and line."""


class CfgBlock(dict):
    """One cfg section: a plain dict plus where it came from (for error messages)."""

    def __init__(
        self, *args: Any, source: str = "<cfg>", line: int | None = None, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.source = source
        self.line = line
        self.repeated: list[str] = []
        self.key_lines: dict[str, int] = {}

    def where(self) -> str:
        at = f"{self.source}:{self.line}" if self.line else self.source
        return f"{at} [{self.get('type', '?')}]"


def where(block: dict[str, Any], index: int | None = None) -> str:
    """`file:line [type]` for a parsed block, `block #i [type]` for one built in code."""
    if isinstance(block, CfgBlock):
        return block.where() + (f" (layer {index})" if index is not None else "")
    return f"layer {index} [{block.get('type', '?')}]"


def where_key(block: dict[str, Any], key: str, index: int | None = None) -> str:
    """`file:line [type] (layer i) key` with the line of the key itself where it is known."""
    line = getattr(block, "key_lines", {}).get(key)
    if line is None:
        return f"{where(block, index)} {key}"
    layer = f" (layer {index})" if index is not None else ""
    return f"{block.source}:{line} [{block.get('type', '?')}]{layer} {key}"


def _typed(key: str, text: str) -> Any:
    parts = [p.strip() for p in text.split(",") if p.strip() != ""]
    values = [_scalar(p) for p in parts]
    if key in LIST_KEYS or len(values) > 1:
        return values
    return values[0] if values else ""


def _scalar(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_cfg(source: str | os.PathLike) -> list[CfgBlock]:
    """Parse a cfg file (path) or cfg text (a string holding a newline or a `[`).

    Returns every section in file order, `[net]` included (it is `blocks[0]`).
    """
    text, name = _read(source)
    blocks: list[CfgBlock] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith(";") else ""
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"{name}:{lineno}: bad section header {raw.strip()!r}")
            blocks.append(CfgBlock(type=line[1:-1].strip().lower(), source=name, line=lineno))
            continue
        if "=" not in line:
            raise CfgError(f"{name}:{lineno}: expected key=value, got {raw.strip()!r}")
        if not blocks:
            raise CfgError(f"{name}:{lineno}: {raw.strip()!r} comes before any [section]")
        key, value = (s.strip() for s in line.split("=", 1))
        if not key:
            raise CfgError(f"{name}:{lineno}: empty key in {raw.strip()!r}")
        block = blocks[-1]
        if key in block:
            block.repeated.append(key)
            warnings.warn(
                f"{name}:{lineno}: {key} repeats in [{block['type']}] (line {block.line}); "
                "Darknet keeps the first value, so does this reader",
                stacklevel=2,
            )
            continue
        block[key] = _typed(key, value)
        block.key_lines[key] = lineno
    if not blocks:
        raise CfgError(f"{name}: no [sections] found")
    return blocks


def _read(source: str | os.PathLike) -> tuple[str, str]:
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("[")):
        return source, "<cfg text>"
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise CfgError(f"cfg file not found: {path}") from None


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_format(v) for v in value)
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_cfg(blocks: Iterable[dict[str, Any]]) -> str:
    """Cfg text for `blocks` (the `[net]` section first); `parse_cfg` reads it back equal."""
    out: list[str] = []
    for block in blocks:
        if "type" not in block:
            raise CfgError(f"block without a 'type': {dict(block)}")
        out.append(f"[{block['type']}]")
        out.extend(f"{k}={_format(v)}" for k, v in block.items() if k != "type")
        out.append("")
    return "\n".join(out)


def split_net(blocks: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(`[net]` hyper-parameters, the layer blocks); layer i of Darknet is `layers[i]`."""
    if not blocks or blocks[0].get("type") not in ("net", "network"):
        first = blocks[0] if blocks else {}
        raise CfgError(
            f"{where(first)}: a Darknet cfg starts with [net], not [{first.get('type')}]"
        )
    return blocks[0], list(blocks[1:])


def layer_refs(block: dict[str, Any], index: int) -> list[int]:
    """Absolute indices of the layers a route/shortcut reads (Darknet: negative = relative)."""
    if block["type"] == "route":
        refs = block["layers"]
    elif block["type"] == "shortcut":
        refs = block["from"]
    else:
        return [index - 1] if index > 0 else []
    refs = refs if isinstance(refs, list) else [refs]
    if not all(isinstance(r, int) for r in refs):
        key = "layers" if block["type"] == "route" else "from"
        raise CfgError(f"{where_key(block, key, index)}={refs!r} must be whole layer numbers")
    return [r + index if r < 0 else r for r in refs]


def drop_blocks(blocks: list[dict[str, Any]], drop: Iterable[int]) -> list[dict[str, Any]]:
    """Remove layer blocks (no `[net]`) and renumber every route/shortcut reference.

    A reference to a removed layer moves to the nearest kept layer before it: removing a
    residual unit (conv, conv, shortcut) leaves its identity path, so whoever read the
    shortcut now reads the unit's input. Relative references stay relative.
    """
    drop = set(drop)
    bad = [i for i in drop if not 0 <= i < len(blocks)]
    if bad:
        raise CfgError(f"drop_blocks: indices {sorted(bad)} out of range 0..{len(blocks) - 1}")
    new_index: dict[int, int] = {}
    kept = -1
    for i in range(len(blocks)):
        if i not in drop:
            kept += 1
        new_index[i] = kept  # a dropped layer maps to the last kept layer before it
    out: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        if i in drop:
            continue
        new = dict(block)
        key = {"route": "layers", "shortcut": "from"}.get(block["type"])
        if key:
            me = new_index[i]
            refs = []
            for raw, ref in zip(_as_list(block[key]), layer_refs(block, i)):
                target = new_index[ref]
                if target < 0:
                    raise CfgError(
                        f"{where(block, i)}: its input layer {ref} was removed and has no predecessor"
                    )
                refs.append(target - me if int(raw) < 0 else target)
                if block["type"] == "shortcut" and target == me - 1:
                    raise CfgError(
                        f"{where(block, i)}: after removal it would add layer {target} to itself"
                    )
            new[key] = refs
        out.append(new)
    return out


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]
