"""The `acp` prune strategy: the particle swarm's best per-layer widths (search.py), cut from
the unpruned model with cluster representatives kept (inherit.py). The prune run refits,
evaluates and recovers it like any other strategy's choice.

The search modules (torch-pruning, scikit-learn) load only when a search runs, so listing the
strategies or their flags stays light.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compress.prune.acp.fitness import COSTS, PROXIES
from compress.prune.strategy import Choice, Strategy

if TYPE_CHECKING:
    from compress.prune.run import Context


class ACP(Strategy):
    """Channel clustering + particle swarm search of per-layer widths (Chang et al. 2022)."""

    name = "acp"
    help = "channel clustering + particle swarm search of per-layer widths (SSD and YOLO)"

    def __init__(self, recipe: dict[str, Any]) -> None:
        super().__init__(recipe)
        self.recovers = bool(self.cfg["recover"])

    def resolve(self, recipe: dict[str, Any]) -> dict[str, Any]:
        from compress.prune.acp.search import resolve_settings

        return resolve_settings(recipe.get("prune"))

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--particles", type=int, default=None, help="swarm size")
        group.add_argument("--swarm-cycles", type=int, default=None, help="swarm cycles")
        group.add_argument("--seed", type=int, default=None, help="swarm seed")
        group.add_argument(
            "--target", type=float, default=None, help="budget: cost ratio in (0, 1]"
        )
        group.add_argument("--budget", default=None, choices=sorted(COSTS), help="cost measure")
        group.add_argument("--proxy", default=None, choices=sorted(PROXIES), help="accuracy proxy")
        group.add_argument(
            "--cluster", default=None, help="clustering: dbscan, agglomerative, none"
        )
        group.add_argument("--no-recover", action="store_true", help="skip the recovery fine-tune")
        group.add_argument("--fresh", action="store_true", help="ignore a saved search state")

    @classmethod
    def overrides(cls, args: argparse.Namespace) -> dict[str, Any]:
        for flag, value in (("particles", args.particles), ("swarm-cycles", args.swarm_cycles)):
            if value is not None and value < 1:
                raise SystemExit(f"--{flag} must be >= 1")
        if args.target is not None and not 0 < args.target <= 1:
            raise SystemExit("--target is a cost ratio in (0, 1]")
        nested = {
            "pso": {"particles": args.particles, "cycles": args.swarm_cycles, "seed": args.seed},
            "fitness": {"target": args.target, "budget": args.budget, "proxy": args.proxy},
            "cluster": {"method": args.cluster},
        }
        out: dict[str, Any] = {}
        for key, values in nested.items():
            given = {k: v for k, v in values.items() if v is not None}
            if given:
                out[key] = given
        if args.no_recover:
            out["recover"] = False
        if args.fresh:
            out["resume"] = False
        return out

    def choose(self, model: nn.Module, ctx: Context, out_dir: Path) -> Choice:
        from compress.prune.acp.groups import refit_targets
        from compress.prune.acp.inherit import inherit
        from compress.prune.acp.search import run_search
        from compress.prune.reconstruct import refit_convs

        t0 = time.time()
        search, report = run_search(model, ctx.train_ds, ctx.val_ds, self.cfg, out_dir)
        report["search_seconds"] = round(time.time() - t0, 1)
        widths = report["best"]["widths"]
        if ctx.refit is None:
            # without a refit, the structure is judged as the swarm judged it: inherited
            # weights with BN statistics recalibrated
            report["reconstruct"] = "off"
            return Choice(model, lambda: search.build(widths), None, report)
        clusters = search.prep.clusters if self.cfg["inherit"] == "cluster" else None
        removed: dict[str, list[int]] = {}

        def compact() -> nn.Module:
            return inherit(model, search.prep.units, widths, search.prep.scores, clusters, removed)

        def refit(pruned: nn.Module, images: list[torch.Tensor], positions: int, ridge: float):
            targets = refit_targets(model, pruned, removed)
            return refit_convs(model, pruned, targets, images, positions, ridge)

        return Choice(model, compact, refit, report)

    def report(
        self,
        rounds: list[dict[str, Any]],
        baseline: dict[str, Any],
        stop: str,
        model: nn.Module,
    ) -> dict[str, Any]:
        (rec,) = rounds
        search = dict(rec["prune"])
        per_layer = search.pop("per_layer")
        seconds = search.pop("search_seconds")
        recovery = rec.get("recover")
        if recovery is not None and rec.get("recover_kept"):
            recovery["kept"] = rec["recover_kept"]
        final = rec["recovered"]
        report = {
            "method": self.name,
            "settings": self.cfg,
            "baseline": baseline,
            "searched": rec["pruned"],
            "recovered": final if recovery is not None else None,
            "final": final,
            "flops_ratio": final["flops"] / baseline["flops"],
            "params_ratio": final["params"] / baseline["params"],
            "search": search,
            "search_seconds": seconds,
            "per_layer": per_layer,
            "recovery": recovery,
        }
        if not math.isfinite(report["flops_ratio"]):
            raise ValueError("ACP: FLOPs of the pruned model are not finite")
        return report

    def plots(self, report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        from compress.prune.acp.plots import plot_search
        from compress.prune.plots import plot_report

        out: dict[str, Any] = {"plots": plot_report(report, out_dir)}
        try:
            out["acp_plots"] = plot_search(report, out_dir)
        except Exception as exc:  # a plot must never lose the run's numbers
            out["acp_plots_error"] = repr(exc)
        return out
