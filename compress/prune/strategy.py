"""What a prune strategy is: something that chooses a structure, and nothing else.

A strategy (`Strategy` subclass, registered in `compress.prune.run.STRATEGIES`) looks at a
model and returns a `Choice`: the model the structure is cut from, how to cut it, how to refit
the cut convs, and a report of why. `compress.prune.run` does the rest the same way for every
strategy: compact -> least-squares refit -> evaluate -> recover (or keep) -> evaluate -> save.

A strategy that prunes in rounds (slimming's cycles) says how many it may take (`rounds`) and
when to stop (`stop`); side-by-side structures at the same point (slimming's fixed-percentile
baseline) come from `beside` and go through the same steps.

To add one: subclass `Strategy`, write `choose` (and `resolve`, `add_arguments` /
`overrides` for its settings and flags), add one line to `STRATEGIES`.

Under torchrun (`torchrun --nproc_per_node N -m compress prune ...`) rank 0 runs the prune
run; a strategy that spreads its choice over the ranks (`spreads`, the structure searches)
has the other ranks `serve` it while rank 0 chooses. Every other strategy is refused there.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from compress.prune.run import Context

# (pruned model, refit images, positions sampled per image, ridge) -> per-layer errors; it
# refits the pruned model in place so its convs match the source's outputs.
Refit = Callable[[nn.Module, list[torch.Tensor], int, float], dict[str, Any]]


@dataclass
class Choice:
    """A structure a strategy chose, and how to cut it from `source`."""

    source: nn.Module  # what the structure is cut from; the refit matches its outputs
    compact: Callable[[], nn.Module]  # the smaller model, holding the source's kept weights
    refit: Refit | None  # None: the cut model is used as it comes out of `compact`
    report: dict[str, Any]  # how the structure was chosen (thresholds, search, per-layer widths)
    # What the round did before choosing (e.g. sparsity training and its figures).
    record: dict[str, Any] = field(default_factory=dict)
    teacher: nn.Module | None = None  # recovery's teacher; default `source`
    empty: str | None = None  # why nothing is cut (the run stops there)


class Strategy(ABC):
    """Base of the prune strategies. `cfg` is the recipe's `prune:` section resolved against
    the strategy's defaults (unknown keys refused)."""

    name: ClassVar[str]
    help: ClassVar[str] = ""
    recovers: bool = True  # the run recovers each cut (False: the cut model is final)
    spreads: ClassVar[bool] = False  # `serve` exists: the choice is spread over torchrun's ranks

    def __init__(self, recipe: dict[str, Any]) -> None:
        self.recipe = recipe
        self.cfg = self.resolve(recipe)

    # ---- settings and flags ------------------------------------------------------------
    def resolve(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """The strategy's settings from the recipe, checked."""
        return {k: v for k, v in (recipe.get("prune") or {}).items() if k != "method"}

    @classmethod  # noqa: B027 (an optional hook: most strategies add flags, none must)
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """The strategy's own flags on `python -m compress prune` (one argument group)."""

    @classmethod
    def overrides(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The recipe's `prune:` keys its flags set (raise SystemExit on a bad value)."""
        return {}

    # ---- choosing --------------------------------------------------------------------
    @property
    def rounds(self) -> int:
        return 1

    def round_dir(self, out_dir: Path, k: int) -> Path:
        """Where round `k` writes; a round in a folder of its own also keeps its model there."""
        return out_dir

    @abstractmethod
    def choose(self, model: nn.Module, ctx: Context, out_dir: Path) -> Choice:
        """The structure to cut from `model` this round."""

    def serve(self, model: nn.Module, ctx: Context) -> None:
        """On a rank other than 0: this rank's share of rank 0's `choose`, until it is done
        (then the rank leaves the group). Only for a strategy that `spreads`."""
        raise NotImplementedError(f"prune --method {self.name} does not spread over ranks")

    def beside(
        self, k: int, choice: Choice, rec: dict[str, Any], ctx: Context
    ) -> dict[str, Choice]:
        """Other structures to cut, refit and recover the same way beside round `k`'s, named."""
        return {}

    def stop(
        self, k: int, rec: dict[str, Any], baseline: dict[str, Any]
    ) -> tuple[str | None, bool]:
        """After round `k`: (why to stop or None, whether round k's model is kept)."""
        return None, True

    # ---- reporting ---------------------------------------------------------------------
    def report(
        self,
        rounds: list[dict[str, Any]],
        baseline: dict[str, Any],
        stop: str,
        model: nn.Module,
    ) -> dict[str, Any]:
        """The strategy's report of the whole run (`report.json`), from the round records."""
        kept = [r for r in rounds if "recovered" in r and not r.get("rejected")]
        return {
            "method": self.name,
            "settings": self.cfg,
            "baseline": baseline,
            "rounds": rounds,
            "stop_reason": stop,
            "final": kept[-1]["recovered"] if kept else baseline,
        }

    def plots(self, report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        """Plots of the report into `out_dir`: report keys to add (file names)."""
        return {}

    def summary(self, report: dict[str, Any]) -> dict[str, Any]:
        """The figures of this run a run summary shows (besides the final model's)."""
        return {}
