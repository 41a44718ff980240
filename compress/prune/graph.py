"""The channel graph of a Darknet YOLO, read from its cfg blocks.

Every layer's output is a list of segments `(conv_index, width)`: a conv's output is its own
channels; maxpool/upsample pass their input's segments on; a route concatenates the segments
of the layers it reads (so a conv after a route knows the offsets of each part); a shortcut
adds two tensors channel by channel, so the convs on both sides must keep the same channels:
they are merged into one group (union-find) and decided together (DESIGN.md section 4:
"channels coupled by a shortcut must share one mask").

A group is prunable when every conv in it has a BN (Darknet's head convs have none, and their
outputs are the YOLO predictions, which must not shrink).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compress.models.darknet_cfg import CfgError, layer_refs, where

INPUT = -1  # the image: a segment that is never pruned
PASS_THROUGH = {"maxpool", "upsample"}  # a channel in is the same channel out


def split_layers(
    blocks: list[dict[str, Any]],
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(`[net]` or None, layer blocks) whether or not `blocks` starts with `[net]`."""
    if blocks and blocks[0].get("type") in ("net", "network"):
        return blocks[0], list(blocks[1:])
    return None, list(blocks)


@dataclass
class ChannelGraph:
    layers: list[dict[str, Any]]
    outputs: list[list[tuple[int, int]]]  # per layer: segments (conv index or INPUT, width)
    inputs: list[list[tuple[int, int]]]  # per conv layer: segments it reads (others: [])
    parent: dict[int, int] = field(default_factory=dict)  # union-find over conv indices
    fixed: set[int] = field(default_factory=set)  # group roots that must keep every channel

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
            if max(ra, rb) in self.fixed:
                self.fixed.add(min(ra, rb))

    def groups(self) -> dict[int, list[int]]:
        """Group root -> its member conv indices (ascending)."""
        out: dict[int, list[int]] = {}
        for i in sorted(self.parent):
            out.setdefault(self.find(i), []).append(i)
        return out

    def prunable_groups(self) -> dict[int, list[int]]:
        return {r: m for r, m in self.groups().items() if self.find(r) not in self.fixed}

    def convs(self) -> list[int]:
        return sorted(self.parent)


def build_graph(blocks: list[dict[str, Any]], in_channels: int = 3) -> ChannelGraph:
    """Parse the layer blocks (with or without `[net]`) into a `ChannelGraph`."""
    _, layers = split_layers(blocks)
    g = ChannelGraph(layers=layers, outputs=[], inputs=[])
    for i, block in enumerate(layers):
        kind = block["type"]
        prev = g.outputs[i - 1] if i > 0 else [(INPUT, in_channels)]
        g.inputs.append([])
        if kind == "convolutional":
            if int(block.get("groups", 1)) != 1:
                raise CfgError(
                    f"{where(block, i)}: grouped convolutions are not supported by the pruner"
                )
            g.inputs[i] = list(prev)
            g.parent[i] = i
            if not int(block.get("batch_normalize", 0)):
                g.fixed.add(i)
            g.outputs.append([(i, int(block["filters"]))])
        elif kind in PASS_THROUGH:
            g.outputs.append(list(prev))
        elif kind == "route":
            if "groups" in block:
                raise CfgError(
                    f"{where(block, i)}: route with groups (YOLOv4-tiny) is not supported by the pruner"
                )
            segs: list[tuple[int, int]] = []
            for ref in layer_refs(block, i):
                _check_ref(block, i, ref)
                segs.extend(g.outputs[ref])
            g.outputs.append(segs)
        elif kind == "shortcut":
            (ref,) = layer_refs(block, i)
            _check_ref(block, i, ref)
            a, b = prev, g.outputs[ref]
            if [w for _, w in a] != [w for _, w in b]:
                raise CfgError(f"{where(block, i)}: adds tensors of different layouts {a} and {b}")
            for (ca, _), (cb, _) in zip(a, b):
                if INPUT in (ca, cb):
                    raise CfgError(
                        f"{where(block, i)}: a shortcut onto the input image is not supported"
                    )
                g.union(ca, cb)
            g.outputs.append(list(prev))
        elif kind in ("yolo", "region", "detection"):
            # Its input conv is the prediction layer: it keeps every channel.
            for c, _ in prev:
                if c != INPUT:
                    g.fixed.add(g.find(c))
            g.outputs.append([])
        else:
            raise CfgError(f"{where(block, i)}: layer type [{kind}] is not supported by the pruner")
    # Fixedness is a property of the whole group: propagate to the roots once more.
    for c in list(g.fixed):
        g.fixed.add(g.find(c))
    return g


def _check_ref(block: dict[str, Any], i: int, ref: int) -> None:
    if not 0 <= ref < i:
        raise CfgError(f"{where(block, i)}: refers to layer {ref}, outside 0..{i - 1}")


def conv_unit(module: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d | None, nn.Module | None]:
    """(conv, bn or None, activation or None) of a conv block (`nn.Sequential` conv/bn/act)."""
    conv = getattr(module, "conv", None)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected a conv block with a .conv child, got {type(module).__name__}")
    return conv, getattr(module, "bn", None), getattr(module, "act", None)


def prunable_bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BNs sparsity training acts on: those of prunable groups (heads excluded)."""
    g = build_graph(model.blocks)
    return [conv_unit(model.module_list[i])[1] for m in g.prunable_groups().values() for i in m]
