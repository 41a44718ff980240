"""The slimming strategy: each cycle chooses by sparsify -> score -> threshold -> layer +
channel plan; the prune run (`run.py`) cuts, refits and recovers it, and the cycles repeat
until a FLOPs target is met, the AP drop limit would be crossed, or no channel falls under the
threshold. Every cycle is recorded.

Settings (recipe sections; defaults in `PRUNE_DEFAULTS` / `SPARSITY_DEFAULTS`):

    sparsity: {s: 1.0e-3, schedule: step, at: 0.5, factor: 0.1, epochs: 10}
    prune:    {method: slimming, importance: bn_scale, threshold: gmm, layer_threshold: otsu,
               layer_count: null, layers: true, round_to: 8, min_channels: 8,
               min_fraction: 0.05, max_fraction: 0.7, cycles: 3, target_flops: 0.4,
               max_ap_drop: 0.01, compare_baseline: true,
               reconstruct: {images: 64, positions: 256, ridge: 0.01, batch_size: 8}}
    recover:  {method: finetune, epochs: 5, ...}

`reconstruct` refits the convs that lost inputs by least squares on that many unlabelled
training images (`prune.reconstruct`; `false` turns it off), right after the surgery and
before recovery, for the adaptive and the fixed-percentile model alike.
If recovery lowers the held-out AP50 of a cycle's pruned model, the pre-recovery weights are
kept (recorded as `recover_kept`): with a few hundred labelled images fine-tuning can undo
more than it restores.

`max_fraction` caps what one cycle may remove (of the prunable channels): an estimator run on
a distribution that sparsity has not yet split would otherwise cut half the network at once.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from compress.prune.channel import (
    Plan,
    choose_channels,
    choose_uniform,
    compact,
    conv_scores,
    group_scores,
)
from compress.prune.graph import build_graph, prunable_bns
from compress.prune.importance import IMPORTANCE, build_importance
from compress.prune.layers import prune_layers
from compress.prune.reconstruct import REFIT_DEFAULTS, reconstruct, refit_images
from compress.prune.sparsity import BNL1Sparsity, gamma_stats
from compress.prune.strategy import Choice, Strategy
from compress.prune.thresholds import THRESHOLDS, Threshold, estimate

if TYPE_CHECKING:
    from compress.prune.run import Context

log = logging.getLogger(__name__)

SPARSITY_DEFAULTS: dict[str, Any] = {
    "s": 1.0e-3,
    "schedule": "step",
    "at": 0.5,
    "factor": 0.1,
    "epochs": 10,
}
PRUNE_DEFAULTS: dict[str, Any] = {
    "importance": "bn_scale",
    "threshold": "gmm",
    "threshold_options": {},
    "layers": True,
    "layer_threshold": "otsu",
    "layer_count": None,
    "layer_max_fraction": 0.5,
    "round_to": 8,
    "min_channels": 8,
    "min_fraction": 0.05,
    "max_fraction": 0.7,
    "cycles": 3,
    "target_flops": 0.4,  # stop when FLOPs <= this fraction of the unpruned model's
    "max_ap_drop": 0.01,  # AP50 points below the unpruned model that a cycle may not cross
    "compare_baseline": True,  # also prune with a fixed percentile at equal FLOPs (cycle 1)
    "reconstruct": REFIT_DEFAULTS,  # false: off
    "feature_images": 16,  # unlabelled images data-aware criteria read feature maps on
}


def settings(section: dict[str, Any] | None, defaults: dict[str, Any], name: str) -> dict[str, Any]:
    section = dict(section or {})
    unknown = sorted(set(section) - set(defaults) - {"method"})
    if unknown:
        raise ValueError(
            f"{name}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(defaults)}"
        )
    return {**defaults, **section}


def layer_widths(plan: Plan) -> list[dict[str, Any]]:
    """Per conv layer of the channel-pruned model: channels before and after."""
    return [{"layer": i, "before": b, "after": a} for i, (b, a) in sorted(plan.widths.items())]


def channel_threshold(values: np.ndarray, cfg: dict[str, Any]) -> Threshold:
    """The learned threshold, capped so that at most `max_fraction` of channels go."""
    thr = estimate(cfg["threshold"], values, **(cfg.get("threshold_options") or {}))
    cap = estimate("percentile", values, fraction=float(cfg["max_fraction"]))
    if thr.value > cap.value:
        thr.details.update(
            {"capped_from": float(thr.value), "cap_fraction": float(cfg["max_fraction"])}
        )
        thr.value = cap.value
    thr.details["below"] = int((values < thr.value).sum())
    thr.details["channels"] = int(values.size)
    return thr


def _hist(values: np.ndarray, bins: int = 60) -> dict[str, Any]:
    logs = np.log10(np.maximum(values, 1e-8))
    counts, edges = np.histogram(logs, bins=bins)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def _refit_by_plan(source: nn.Module, plan: Plan):
    """The least-squares refit of a model cut from `source` by `plan` (reconstruct.py)."""

    def refit(pruned: nn.Module, images: list[torch.Tensor], positions: int, ridge: float):
        return reconstruct(source, pruned, plan, images, positions=positions, ridge=ridge)

    return refit


def uniform_at_flops(
    model: nn.Module, cfg: dict[str, Any], flops_goal: float, steps: int = 12
) -> Choice:
    """The fixed-percentile baseline at (about) `flops_goal` FLOPs: every layer drops the same
    fraction of its lowest-scored channels, the fraction found by bisection on FLOPs.

    Why per layer: a single global percentile on the same scores, tuned to the same FLOPs,
    removes exactly the channels the adaptive threshold removes (both cut one sorted list at
    the same place), so it would compare the method with itself. What a learned threshold
    adds over a user's fixed ratio is where it cuts; the honest baseline is the fixed ratio."""
    from compress.evaluate import count_flops

    graph = build_graph(model.blocks)
    scores = conv_scores(model, build_importance(cfg["importance"]), graph)
    args = (int(cfg["round_to"]), int(cfg["min_channels"]), float(cfg["min_fraction"]))
    lo, hi, best = 0.0, 0.95, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        plan = choose_uniform(graph, scores, mid, *args)
        pruned = compact(model, plan)
        flops = count_flops(pruned, model.input_size)
        if best is None or abs(flops - flops_goal) < abs(best[2] - flops_goal):
            best = (pruned, plan, flops, mid)
        lo, hi = (mid, hi) if flops > flops_goal else (lo, mid)
    pruned, plan, _, fraction = best
    report = {
        "threshold": {"value": fraction, "method": "uniform percentile", "fraction": fraction},
        "channels": plan.summary(),
        "per_layer": layer_widths(plan),
    }
    return Choice(model, lambda: pruned, _refit_by_plan(model, plan), report)


def final_gammas(model: nn.Module) -> dict[str, Any]:
    try:
        return gamma_stats(prunable_bns(model))
    except ValueError:
        return {}


class Slimming(Strategy):
    """Sparsity training (L1 on BN scales), then a threshold learned from the channel scores
    (capped at `max_fraction`), residual-unit removal when `layers`, in cycles."""

    name = "slimming"
    help = "sparsity training + learned-threshold channel (and layer) pruning, in cycles"

    def __init__(self, recipe: dict[str, Any]) -> None:
        self.sparsity = settings(recipe.get("sparsity"), SPARSITY_DEFAULTS, "sparsity")
        super().__init__(recipe)

    def resolve(self, recipe: dict[str, Any]) -> dict[str, Any]:
        return settings(recipe.get("prune"), PRUNE_DEFAULTS, "prune")

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--importance", default=None, choices=sorted(IMPORTANCE), help="channel criterion"
        )
        group.add_argument(
            "--threshold", default=None, choices=sorted(THRESHOLDS), help="threshold estimator"
        )
        group.add_argument(
            "--cycles", type=int, default=None, help="max sparsify-prune-recover cycles"
        )
        group.add_argument(
            "--target-flops",
            type=float,
            default=None,
            help="stop at this fraction of the unpruned FLOPs",
        )
        group.add_argument(
            "--no-layers",
            action="store_true",
            help="channel pruning only (no residual-unit removal)",
        )

    @classmethod
    def overrides(cls, args: argparse.Namespace) -> dict[str, Any]:
        if args.cycles is not None and args.cycles < 1:
            raise SystemExit("--cycles must be >= 1")
        if args.target_flops is not None and not 0 < args.target_flops <= 1:
            raise SystemExit("--target-flops is a fraction in (0, 1]")
        given = {
            "importance": args.importance,
            "threshold": args.threshold,
            "cycles": args.cycles,
            "target_flops": args.target_flops,
        }
        out = {k: v for k, v in given.items() if v is not None}
        if args.no_layers:
            out["layers"] = False
        return out

    # ---- one cycle's choice, step by step ------------------------------------------------
    @property
    def rounds(self) -> int:
        return int(self.cfg["cycles"])

    def round_dir(self, out_dir: Path, k: int) -> Path:
        return out_dir / f"cycle_{k}"

    def choose(self, model: nn.Module, ctx: Context, out_dir: Path) -> Choice:
        if getattr(model, "family", None) != "yolo":
            raise ValueError(
                f"prune.method slimming works on Darknet YOLO models, got family {getattr(model, 'family', '?')!r}"
            )
        # on a copy: a rejected cycle leaves the kept model untouched
        work = copy.deepcopy(model)
        record = {"gamma_log": self.sparsify(work, ctx, out_dir / "sparsity")}
        record["sparse"] = ctx.measure(work)
        source, report = self.remove_layers(work)
        # after the layer cut: a removed unit rebuilds the model (no .grad survives), and the
        # gradients that score the channels must be those of the model being cut
        self.gradients(source, ctx)
        values, plan, thr = self.plan_channels(source, ctx)
        report.update(
            {
                "threshold": thr.as_dict(),
                "scores_log10_hist": _hist(values),
                "channels": plan.summary(),
                "per_layer": layer_widths(plan),
            }
        )
        removed = plan.summary()["channels_removed"] + len(
            report.get("layers", {}).get("removed_shortcuts", [])
        )
        return Choice(
            source,
            lambda: compact(source, plan),
            _refit_by_plan(source, plan),
            report,
            record=record,
            teacher=work,
            empty=None if removed else "no channel under the threshold",
        )

    def sparsify(self, work: nn.Module, ctx: Context, out_dir: Path) -> list[Any]:
        """Sparsity training in place; returns the gamma distribution per epoch."""
        sp = self.sparsity
        hook = BNL1Sparsity(
            prunable_bns(work),
            float(sp["s"]),
            int(sp["epochs"]),
            sp["schedule"],
            at=sp["at"],
            factor=sp["factor"],
        )
        if int(sp["epochs"]) > 0 and float(sp["s"]) > 0:
            ctx.sparsify(work, out_dir, [hook], int(sp["epochs"]))
        return hook.log

    def gradients(self, work: nn.Module, ctx: Context) -> None:
        """Loss gradients on `work` when the criterion reads them (Taylor-type)."""
        if not build_importance(self.cfg["importance"]).needs_grad:
            return
        if ctx.accumulate_grads is None:
            raise ValueError(
                f"importance {self.cfg['importance']!r} needs gradients and no data was given to compute them"
            )
        ctx.accumulate_grads(work)

    def remove_layers(self, work: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        """Residual units whose scores fall under the layer threshold go (when `layers`)."""
        cfg = self.cfg
        if not cfg["layers"]:
            return work, {}
        lfn = (lambda v: estimate(cfg["layer_threshold"], v)) if cfg["layer_threshold"] else None
        source, layers = prune_layers(
            work, lfn, cfg["layer_count"], float(cfg["layer_max_fraction"])
        )
        return source, {"layers": layers}

    def plan_channels(
        self, source: nn.Module, ctx: Context | None = None
    ) -> tuple[np.ndarray, Plan, Threshold]:
        """Score every channel, learn the threshold from the scores, plan what stays."""
        cfg = self.cfg
        graph = build_graph(source.blocks)
        criterion = build_importance(cfg["importance"])
        if criterion.needs_features or criterion.needs_teacher:
            scores = self.data_scores(source, criterion, ctx, graph)
        else:
            scores = conv_scores(source, criterion, graph)
        values = torch.cat(list(group_scores(graph, scores).values())).numpy()
        thr = channel_threshold(values, cfg)
        plan = choose_channels(
            graph,
            scores,
            thr.value,
            int(cfg["round_to"]),
            int(cfg["min_channels"]),
            float(cfg["min_fraction"]),
        )
        return values, plan, thr

    def data_scores(
        self, source: nn.Module, criterion: Any, ctx: Context | None, graph: Any
    ) -> dict[int, torch.Tensor]:
        """Scores of a criterion that reads feature maps (or a teacher's outputs) on the
        first `feature_images` unlabelled training images, as the model sees them."""
        from compress.prune.scoring import score_channels

        if ctx is None or ctx.train_ds is None:
            raise ValueError(
                f"importance {self.cfg['importance']!r} reads feature maps: it needs training images"
            )
        images = refit_images(ctx.train_ds, source, int(self.cfg["feature_images"]), 8)
        return score_channels(source, criterion, images=images, teacher=ctx.teacher, graph=graph)

    def beside(
        self, k: int, choice: Choice, rec: dict[str, Any], ctx: Context
    ) -> dict[str, Choice]:
        """The fixed-percentile baseline at the FLOPs cycle 1 reached, same refit and recovery."""
        if k != 1 or not self.cfg["compare_baseline"]:
            return {}
        return {"baseline": uniform_at_flops(choice.teacher, self.cfg, rec["pruned"]["flops"])}

    def stop(
        self, k: int, rec: dict[str, Any], baseline: dict[str, Any]
    ) -> tuple[str | None, bool]:
        cfg = self.cfg
        drop = baseline.get("AP50", 0.0) - rec["recovered"].get("AP50", 0.0)
        over = "AP50" in baseline and drop > float(cfg["max_ap_drop"])
        if over and k > 1:
            return (
                f"AP50 drop {drop:.4f} > max_ap_drop {cfg['max_ap_drop']}: kept cycle {k - 1}",
                False,
            )
        if rec["recovered"]["flops"] <= float(cfg["target_flops"]) * baseline["flops"]:
            ratio = rec["recovered"]["flops"] / baseline["flops"]
            return f"FLOPs target reached ({ratio:.3f} <= {cfg['target_flops']})", True
        if over:
            return (
                f"AP50 drop {drop:.4f} > max_ap_drop {cfg['max_ap_drop']} after cycle 1: no further cycle",
                True,
            )
        return None, True

    # ---- reporting ---------------------------------------------------------------------
    def report(
        self,
        rounds: list[dict[str, Any]],
        baseline: dict[str, Any],
        stop: str,
        model: nn.Module,
    ) -> dict[str, Any]:
        comparison = None
        for rec in rounds:
            fixed = rec.pop("beside", {}).get("baseline")
            if fixed is not None:
                comparison = {
                    "adaptive": {
                        "threshold": rec["prune"]["threshold"],
                        "pruned": rec["pruned"],
                        "recovered": rec["recovered"],
                    },
                    "percentile": {
                        "threshold": fixed["choice"]["threshold"],
                        "pruned": fixed["pruned"],
                        "recovered": fixed["recovered"],
                    },
                }
        final = [c for c in rounds if "recovered" in c and not c.get("rejected")]
        return {
            "method": self.name,
            "settings": {"prune": self.cfg, "sparsity": self.sparsity},
            "baseline": baseline,
            "cycles": rounds,
            "stop_reason": stop,
            "threshold_comparison": comparison,
            "final_gammas": final_gammas(model),
            "final": final[-1]["recovered"] if final else baseline,
        }

    def plots(self, report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        from compress.prune.plots import plot_report

        return {"plots": plot_report(report, out_dir)}

    def summary(self, report: dict[str, Any]) -> dict[str, Any]:
        cycles = report.get("cycles", [])
        out: dict[str, Any] = {
            "prune": {
                "stop_reason": report.get("stop_reason"),
                "cycles": len(cycles),
                "steps": [cycle_steps(c) for c in cycles],
            }
        }
        if report.get("threshold_comparison"):
            out["threshold_comparison"] = report["threshold_comparison"]
        return out


def cycle_steps(c: dict[str, Any]) -> dict[str, Any]:
    """AP50 of one cycle after each step, for a run summary."""
    refit = (c.get("prune") or {}).get("reconstruct") or {}
    return {
        "cycle": c.get("cycle"),
        "sparse": (c.get("sparse") or {}).get("AP50"),
        "cut": (refit.get("before_refit") or {}).get("AP50"),
        "pruned": (c.get("pruned") or {}).get("AP50"),
        "recovered": (c.get("recovered") or {}).get("AP50"),
        "flops": (c.get("pruned") or {}).get("flops"),
        "note": c.get("recover_kept") or c.get("stopped") or "",
    }
