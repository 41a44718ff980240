"""The search strategies: the best per-layer widths an optimiser finds (search.py), cut from
the unpruned model (inherit.py). The prune run refits, evaluates and recovers it like any
other strategy's choice. One class, one optimiser each:

  acp, pso  the particle swarm, cluster representatives kept (ACP; `pso` is its other name)
  ga        the genetic algorithm, filters ranked by correlation independence
  random    uniform random structures at the budget, the same ranking: the baseline
  ddpg      two DDPG agents over the ratios, an LSTM simulator of the fitness, same ranking
  adversarial  generated channel gates against a discriminator, Pareto selection, same ranking

They share one flag group (`--evaluations` is the budget they share); a flag of another
optimiser (`--particles` with `--method ga`) is refused.

The search modules (torch-pruning, scikit-learn) load only when a search runs, so listing the
strategies or their flags stays light.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from compress.prune.acp.fitness import COSTS, PROXIES
from compress.prune.strategy import Choice, Strategy

if TYPE_CHECKING:
    from compress.prune.run import Context


# flag (argparse dest) -> (the optimisers it belongs to, its key in their section)
OWN_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "particles": (("pso",), "particles"),
    "swarm_cycles": (("pso",), "cycles"),
    "population": (("ga", "random", "ddpg", "adversarial"), "population"),
    "generations": (("ga", "random", "ddpg", "adversarial"), "generations"),
    "episodes": (("ddpg",), "episodes"),
    "gan_steps": (("adversarial",), "steps"),
}


class SearchStrategy(Strategy):
    """A structure search with optimiser `optimizer` (search.py's loop, optimizers.py)."""

    optimizer: str = "pso"
    defaults: ClassVar[dict[str, Any]] = {}  # over search.ACP_DEFAULTS
    spreads = True  # each batch's evaluations over torchrun's ranks (spread.py)

    def __init__(self, recipe: dict[str, Any]) -> None:
        super().__init__(recipe)
        self.recovers = bool(self.cfg["recover"])

    def resolve(self, recipe: dict[str, Any]) -> dict[str, Any]:
        from compress.prune.acp.search import resolve_settings

        return resolve_settings(recipe.get("prune"), {**self.defaults, "optimizer": self.optimizer})

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--evaluations", type=int, default=None, help="fitness evaluations (any optimiser)"
        )
        group.add_argument("--particles", type=int, default=None, help="pso: swarm size")
        group.add_argument("--swarm-cycles", type=int, default=None, help="pso: swarm cycles")
        group.add_argument(
            "--population",
            type=int,
            default=None,
            help="ga, random, ddpg, adversarial: structures evaluated per generation",
        )
        group.add_argument(
            "--generations", type=int, default=None, help="ga, random, ddpg, adversarial"
        )
        group.add_argument(
            "--episodes", type=int, default=None, help="ddpg: simulated episodes per generation"
        )
        group.add_argument(
            "--gan-steps",
            type=int,
            default=None,
            help="adversarial: discriminator + generator steps per generation",
        )
        group.add_argument("--seed", type=int, default=None, help="the optimiser's seed")
        group.add_argument(
            "--inherit", default=None, help="channels kept: cluster, l1, correlation"
        )
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
        own: dict[str, Any] = {"seed": args.seed}
        for flag, (owners, key) in OWN_FLAGS.items():
            value = getattr(args, flag)
            if value is None:
                continue
            name = "--" + flag.replace("_", "-")
            if cls.optimizer not in owners:
                raise SystemExit(
                    f"{name} is a flag of the {'/'.join(owners)} search, not {cls.name}"
                )
            if value < 1:
                raise SystemExit(f"{name} must be >= 1")
            own[key] = value
        if args.evaluations is not None and args.evaluations < 1:
            raise SystemExit("--evaluations must be >= 1")
        if args.target is not None and not 0 < args.target <= 1:
            raise SystemExit("--target is a cost ratio in (0, 1]")
        nested = {
            cls.optimizer: own,
            "fitness": {"target": args.target, "budget": args.budget, "proxy": args.proxy},
            "cluster": {"method": args.cluster},
        }
        out: dict[str, Any] = {}
        if args.evaluations is not None:
            out["evaluations"] = args.evaluations
        if args.inherit is not None:
            out["inherit"] = args.inherit
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
        from compress.train.distributed import joined

        t0 = time.time()
        search, report = run_search(
            model, ctx.train_ds, ctx.val_ds, self.cfg, out_dir, info=joined()
        )
        report["search_seconds"] = round(time.time() - t0, 1)
        report["inherit"] = self.cfg["inherit"]
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

    def serve(self, model: nn.Module, ctx: Context) -> None:
        from compress.prune.acp.search import serve_search
        from compress.train.distributed import joined

        serve_search(model, ctx.train_ds, ctx.val_ds, self.cfg, joined())

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
            "world_size": search["world_size"],
            "per_layer": per_layer,
            "recovery": recovery,
        }
        if not math.isfinite(report["flops_ratio"]):
            raise ValueError(f"{self.name}: FLOPs of the pruned model are not finite")
        return report

    def plots(self, report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        from compress.prune.acp.plots import plot_evaluations, plot_search
        from compress.prune.plots import plot_report

        out: dict[str, Any] = {"plots": plot_report(report, out_dir)}
        try:
            out["acp_plots"] = plot_search(report, out_dir)
            out["search_plot"] = plot_evaluations({self.name: report["search"]["log"]}, out_dir)
        except Exception as exc:  # a plot must never lose the run's numbers
            out["acp_plots_error"] = repr(exc)
        return out


class ACP(SearchStrategy):
    """Channel clustering + particle swarm search of per-layer widths (Chang et al. 2022)."""

    name = "acp"
    help = (
        "structure search, one flag group for acp/pso/ga/random/ddpg/adversarial: acp = channel clustering + "
        "particle swarm over per-layer widths (SSD and YOLO)"
    )


class PSO(ACP):
    name = "pso"
    help = "the particle swarm search (acp under the name of its optimiser)"


class GA(SearchStrategy):
    """Genetic algorithm over per-layer keep ratios, filters by correlation independence."""

    name = "ga"
    help = "genetic algorithm over per-layer ratios (correlation-independence filters)"
    optimizer = "ga"
    defaults = {"inherit": "correlation", "cluster": {"method": "none"}}


class RandomSearch(SearchStrategy):
    """Uniform random structures at the budget: the baseline every search must beat."""

    name = "random"
    help = "uniform random per-layer ratios at the budget (the baseline)"
    optimizer = "random"
    defaults = {"inherit": "correlation", "cluster": {"method": "none"}}


class DDPG(SearchStrategy):
    """Two DDPG agents set the ratios unit by unit, explored on an LSTM fitness simulator."""

    name = "ddpg"
    help = "two DDPG agents over per-layer ratios, an LSTM simulator of the fitness"
    optimizer = "ddpg"
    defaults = {"inherit": "correlation", "cluster": {"method": "none"}}


class Adversarial(SearchStrategy):
    """Channel gates generated against a discriminator (GAL), Pareto-selected structures."""

    name = "adversarial"
    help = "generative adversarial channel gates, Pareto selection (channels, fitness)"
    optimizer = "adversarial"
    defaults = {"inherit": "correlation", "cluster": {"method": "none"}}
