"""The slimming prune method, in cycles: sparsify -> score -> threshold -> layer + channel
prune -> recover -> evaluate, repeated until a FLOPs target is met, the AP drop limit would be
crossed, or no channel falls under the threshold. Every cycle is recorded.

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

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from compress.prune.importance import build_importance
from compress.prune.layers import prune_layers
from compress.prune.reconstruct import REFIT_DEFAULTS
from compress.prune.sparsity import BNL1Sparsity, gamma_stats
from compress.prune.thresholds import Threshold, estimate

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
}

Evaluator = Callable[[nn.Module], dict[str, Any]]
Recoverer = Callable[[nn.Module, Path, nn.Module | None], tuple[nn.Module, dict[str, Any]]]
Trainer = Callable[[nn.Module, Path, list[Any], int], dict[str, Any]]
# (unpruned, pruned, plan) -> report: refits `pruned` in place (reconstruct.reconstruct on data)
Refitter = Callable[[nn.Module, nn.Module, Plan], dict[str, Any]]


def settings(section: dict[str, Any] | None, defaults: dict[str, Any], name: str) -> dict[str, Any]:
    section = dict(section or {})
    unknown = sorted(set(section) - set(defaults) - {"method"})
    if unknown:
        raise ValueError(
            f"{name}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(defaults)}"
        )
    return {**defaults, **section}


def figures(model: nn.Module, metrics: dict[str, Any] | None) -> dict[str, Any]:
    from compress.evaluate import count_flops, count_params

    out = {"params": count_params(model), "flops": count_flops(model, model.input_size)}
    if metrics:
        out.update({k: metrics[k] for k in ("AP50", "AP50_95") if k in metrics})
    return out


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


def prune_once(
    model: nn.Module,
    cfg: dict[str, Any],
    threshold: Threshold | None = None,
    refit: Refitter | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """One layer + channel pruning of `model` (not modified). With `threshold` given, channels
    use it instead of estimating one (how the fixed baseline is applied); with `refit`, the
    pruned convs are refitted to the unpruned ones' outputs."""
    report: dict[str, Any] = {}
    work = model
    if cfg["layers"] and threshold is None:
        lfn = (lambda v: estimate(cfg["layer_threshold"], v)) if cfg["layer_threshold"] else None
        work, report["layers"] = prune_layers(
            model, lfn, cfg["layer_count"], float(cfg["layer_max_fraction"])
        )
    graph = build_graph(work.blocks)
    scores = conv_scores(work, build_importance(cfg["importance"]), graph)
    values = torch.cat(list(group_scores(graph, scores).values())).numpy()
    thr = threshold or channel_threshold(values, cfg)
    plan = choose_channels(
        graph,
        scores,
        thr.value,
        int(cfg["round_to"]),
        int(cfg["min_channels"]),
        float(cfg["min_fraction"]),
    )
    pruned = compact(work, plan)
    if refit is not None:
        report["reconstruct"] = refit(work, pruned, plan)
    report.update(
        {
            "threshold": thr.as_dict(),
            "scores_log10_hist": _hist(values),
            "channels": plan.summary(),
            "per_layer": layer_widths(plan),
        }
    )
    return pruned, report


def _hist(values: np.ndarray, bins: int = 60) -> dict[str, Any]:
    logs = np.log10(np.maximum(values, 1e-8))
    counts, edges = np.histogram(logs, bins=bins)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def uniform_at_flops(
    model: nn.Module,
    cfg: dict[str, Any],
    flops_goal: float,
    steps: int = 12,
    refit: Refitter | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
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
    if refit is not None:
        report["reconstruct"] = refit(model, pruned, plan)
    return pruned, report


def run_cycles(
    model: nn.Module,
    cfg: dict[str, Any],
    sparsity: dict[str, Any],
    out_dir: Path,
    evaluate: Evaluator,
    sparsify: Trainer,
    recover: Recoverer,
    baseline: dict[str, Any],
    accumulate_grads: Callable[[nn.Module], None] | None = None,
    refit: Refitter | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The cycle loop (see module docstring). `baseline` holds the unpruned model's figures
    (AP50, flops). Returns the final model and the report (one entry per cycle)."""
    cycles: list[dict[str, Any]] = []
    comparison: dict[str, Any] | None = None
    stop = "cycles done"
    current = model
    for k in range(1, int(cfg["cycles"]) + 1):
        cdir = out_dir / f"cycle_{k}"
        rec: dict[str, Any] = {"cycle": k, "input": figures(current, None)}
        # 1. sparsity training, on a copy: a rejected cycle leaves the kept model untouched
        work = clone(current)
        bns = prunable_bns(work)
        hook = BNL1Sparsity(
            bns,
            float(sparsity["s"]),
            int(sparsity["epochs"]),
            sparsity["schedule"],
            at=sparsity["at"],
            factor=sparsity["factor"],
        )
        if int(sparsity["epochs"]) > 0 and float(sparsity["s"]) > 0:
            sparsify(work, cdir / "sparsity", [hook], int(sparsity["epochs"]))
        rec["gamma_log"] = hook.log
        rec["sparse"] = figures(work, evaluate(work))
        # 2. score, threshold, prune
        if build_importance(cfg["importance"]).needs_grad:
            if accumulate_grads is None:
                raise ValueError(
                    f"importance {cfg['importance']!r} needs gradients and no data was given to compute them"
                )
            accumulate_grads(work)
        pruned, rec["prune"] = prune_once(work, cfg, refit=refit)
        removed = rec["prune"]["channels"]["channels_removed"] + len(
            rec["prune"].get("layers", {}).get("removed_shortcuts", [])
        )
        if removed == 0:
            stop = "no channel under the threshold"
            rec["stopped"] = stop
            cycles.append(rec)
            break
        rec["pruned"] = figures(pruned, evaluate(pruned))
        # 3. the fixed-percentile baseline at equal FLOPs, same recovery (first cycle only)
        if k == 1 and cfg["compare_baseline"]:
            fixed, fixed_rep = uniform_at_flops(work, cfg, rec["pruned"]["flops"], refit=refit)
            fixed_pruned = figures(fixed, evaluate(fixed))
            fixed, _, fixed_recovered, _ = recover_or_keep(
                fixed, fixed_pruned, recover, evaluate, cdir / "baseline_recover", work
            )
            comparison = {
                "adaptive": {"threshold": rec["prune"]["threshold"], "pruned": rec["pruned"]},
                "percentile": {
                    "threshold": fixed_rep["threshold"],
                    "pruned": fixed_pruned,
                    "recovered": fixed_recovered,
                },
            }
        # 4. recover, evaluate
        pruned, rec["recover"], rec["recovered"], kept = recover_or_keep(
            pruned, rec["pruned"], recover, evaluate, cdir / "recover", work
        )
        if kept:
            rec["recover_kept"] = kept
        rec["model"] = str(save_model(pruned, cdir / "model"))
        if comparison is not None and "recovered" not in comparison["adaptive"]:
            comparison["adaptive"]["recovered"] = rec["recovered"]
        cycles.append(rec)
        # 5. stop rules
        drop = baseline.get("AP50", 0.0) - rec["recovered"].get("AP50", 0.0)
        if "AP50" in baseline and drop > float(cfg["max_ap_drop"]) and k > 1:
            stop = f"AP50 drop {drop:.4f} > max_ap_drop {cfg['max_ap_drop']}: kept cycle {k - 1}"
            rec["rejected"] = True
            break
        current = pruned
        if rec["recovered"]["flops"] <= float(cfg["target_flops"]) * baseline["flops"]:
            stop = f"FLOPs target reached ({rec['recovered']['flops'] / baseline['flops']:.3f} <= {cfg['target_flops']})"
            break
        if "AP50" in baseline and drop > float(cfg["max_ap_drop"]):
            stop = f"AP50 drop {drop:.4f} > max_ap_drop {cfg['max_ap_drop']} after cycle 1: no further cycle"
            break
    return current, {
        "cycles": cycles,
        "stop_reason": stop,
        "threshold_comparison": comparison,
        "final_gammas": _final_gammas(current),
    }


def recover_or_keep(
    pruned: nn.Module,
    before: dict[str, Any],
    recover: Recoverer,
    evaluate: Evaluator,
    out_dir: Path,
    teacher: nn.Module,
) -> tuple[nn.Module, dict[str, Any], dict[str, Any], str | None]:
    """Recover `pruned` (figures `before`); when that lowers held-out AP50, keep the weights it
    started from. Returns (model, recovery report, figures, why the start was kept or None)."""
    start = clone(pruned)
    model, report = recover(pruned, out_dir, teacher)
    after = figures(model, evaluate(model))
    if after.get("AP50", 0.0) >= before.get("AP50", 0.0):
        return model, report, after, None
    why = (
        f"recovery lowered AP50 from {before.get('AP50', 0.0):.4f} to "
        f"{after.get('AP50', 0.0):.4f}: kept the pre-recovery weights"
    )
    log.info("%s", why)
    report["after"] = after
    return start, report, dict(before), why


def _final_gammas(model: nn.Module) -> dict[str, Any]:
    try:
        return gamma_stats(prunable_bns(model))
    except ValueError:
        return {}


def save_model(model: nn.Module, folder: Path) -> Path:
    from compress.models.load import save_detector

    return save_detector(model, folder)


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
