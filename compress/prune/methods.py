"""Prune methods registry: `PRUNE_METHODS[name](detector, train_ds, val_ds, recipe, out_dir)
-> (pruned detector, report dict)`. The recipe's `prune.method` picks one; "slimming" is the
sparsity + adaptive-threshold channel/layer pruning in cycles; the ACP engineer adds "acp".

`run_prune` is the stage the CLI and the pipeline call: it runs the method, then writes the
model folder (`save_detector`), `report.json` and the plots into `out_dir`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from compress.io import write_json
from compress.prune.acp import acp

log = logging.getLogger(__name__)

PruneMethod = Callable[
    [nn.Module, Any, Any, dict[str, Any], Path], tuple[nn.Module, dict[str, Any]]
]

# Train settings a sparsity run never takes from the recipe: it must end on its last epoch
# (the "best" epoch would be the least sparse one), so no evaluation picks a best.
_SPARSITY_TRAIN = {"eval_every": 0}


def train_settings(recipe: dict[str, Any], **override: Any) -> dict[str, Any]:
    from compress.train.engine import DEFAULTS

    cfg = {k: v for k, v in (recipe.get("train") or {}).items() if k in DEFAULTS}
    return {**cfg, **override}


def make_evaluator(val_ds, recipe: dict[str, Any]) -> Callable[[nn.Module], dict[str, Any]]:
    from compress.evaluate import evaluate_detector

    batch = int(
        (recipe.get("train") or {}).get("eval_batch_size")
        or (recipe.get("train") or {}).get("batch_size")
        or 8
    )

    def evaluate(model: nn.Module) -> dict[str, Any]:
        model.eval()
        return evaluate_detector(model, val_ds, batch_size=batch)

    return evaluate


def make_sparsifier(train_ds, val_ds, recipe: dict[str, Any]):
    from compress.train.engine import train

    def sparsify(model: nn.Module, out_dir: Path, hooks: list[Any], epochs: int) -> dict[str, Any]:
        return train(
            model,
            train_ds,
            None,
            train_settings(recipe, epochs=epochs, **_SPARSITY_TRAIN),
            out_dir,
            hooks=hooks,
        )

    return sparsify


def make_recoverer(train_ds, val_ds, recipe: dict[str, Any]):
    """RECOVERY_METHODS[recover.method] (TRAIN engineer) or, when that module is missing, plain
    fine-tuning with the trainer and the best evaluated weights kept."""
    section = dict(recipe.get("recover") or {})
    method = section.pop("method", "finetune")
    try:
        from compress.recover.methods import RECOVERY_METHODS
    except ImportError as exc:
        RECOVERY_METHODS, why = None, str(exc)
    if RECOVERY_METHODS is not None and method not in RECOVERY_METHODS:
        raise ValueError(f"recover.method {method!r} unknown; known: {', '.join(RECOVERY_METHODS)}")

    def recover(
        model: nn.Module, out_dir: Path, teacher: nn.Module | None
    ) -> tuple[nn.Module, dict[str, Any]]:
        if RECOVERY_METHODS is not None:
            cfg = {**train_settings(recipe), **section}
            return RECOVERY_METHODS[method](model, train_ds, val_ds, cfg, out_dir, teacher=teacher)
        from compress.train.engine import load_best, train

        cfg = train_settings(recipe, **{k: v for k, v in section.items() if k != "method"})
        history = train(model, train_ds, val_ds, cfg, out_dir)
        kept = load_best(model, out_dir)
        return model, {
            "method": "finetune (trainer fallback)",
            "why_fallback": why,
            "best_loaded": kept,
            "best": history.get("best"),
        }

    return recover


def make_refitter(train_ds, settings: dict[str, Any] | bool | None, evaluate=None):
    """`reconstruct.reconstruct` on the first `images` training images (`refit_images`), or
    None when `prune.reconstruct` is false. With `evaluate`, the report also holds the
    held-out AP of the pruned model before the refit, so the refit's effect is on record."""
    if not settings:
        return None
    from compress.prune.reconstruct import REFIT_DEFAULTS, reconstruct, refit_images

    opts = dict(settings) if isinstance(settings, dict) else {}
    unknown = sorted(set(opts) - set(REFIT_DEFAULTS))
    if unknown:
        raise ValueError(
            f"prune.reconstruct: unknown setting(s) {', '.join(unknown)}; known: {', '.join(REFIT_DEFAULTS)}"
        )
    opts = {**REFIT_DEFAULTS, **opts}

    def refit(original: nn.Module, pruned: nn.Module, plan) -> dict[str, Any]:
        images = refit_images(train_ds, original, int(opts["images"]), int(opts["batch_size"]))
        device = next(pruned.parameters()).device
        before = evaluate(pruned) if evaluate is not None else None
        layers = reconstruct(
            original,
            pruned,
            plan,
            [x.to(device) for x in images],
            positions=int(opts["positions"]),
            ridge=float(opts["ridge"]),
        )
        out: dict[str, Any] = {"images": sum(len(x) for x in images), "layers": layers}
        if before is not None:
            out["before_refit"] = {k: before[k] for k in ("AP50", "AP50_95") if k in before}
        return out

    return refit


def make_grad_accumulator(train_ds, recipe: dict[str, Any], batches: int = 4):
    """Gradients of the loss over a few training batches (for Taylor-type criteria)."""
    from torch.utils.data import DataLoader

    from compress.data.build import collate

    batch = int((recipe.get("train") or {}).get("batch_size") or 8)

    def accumulate(model: nn.Module) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        loader = DataLoader(train_ds, batch_size=batch, shuffle=False, collate_fn=collate)
        for i, (images, targets) in enumerate(loader):
            if i >= batches:
                break
            loss, _ = model.loss(model(images), targets)
            loss.backward()
        model.eval()

    return accumulate


def slimming(
    detector: nn.Module, train_ds, val_ds, recipe: dict[str, Any], out_dir: Path
) -> tuple[nn.Module, dict[str, Any]]:
    """Sparsity training + adaptive-threshold layer/channel pruning + recovery, in cycles."""
    from compress.prune.slimming import (
        PRUNE_DEFAULTS,
        SPARSITY_DEFAULTS,
        figures,
        run_cycles,
        settings,
    )

    if getattr(detector, "family", None) != "yolo":
        raise ValueError(
            f"prune.method slimming works on Darknet YOLO models, got family {getattr(detector, 'family', '?')!r}"
        )
    cfg = settings(recipe.get("prune"), PRUNE_DEFAULTS, "prune")
    sparsity = settings(recipe.get("sparsity"), SPARSITY_DEFAULTS, "sparsity")
    evaluate = make_evaluator(val_ds, recipe)
    # The pipeline has already evaluated the unpruned model on the same images: reuse it.
    baseline = recipe.get("_baseline") or figures(detector, evaluate(detector))
    model, report = run_cycles(
        detector,
        cfg,
        sparsity,
        Path(out_dir),
        evaluate,
        make_sparsifier(train_ds, val_ds, recipe),
        make_recoverer(train_ds, val_ds, recipe),
        baseline,
        make_grad_accumulator(train_ds, recipe),
        make_refitter(train_ds, cfg["reconstruct"], evaluate),
    )
    report = {
        "method": "slimming",
        "settings": {"prune": cfg, "sparsity": sparsity},
        "baseline": baseline,
        **report,
    }
    final = [c for c in report["cycles"] if "recovered" in c and not c.get("rejected")]
    report["final"] = final[-1]["recovered"] if final else baseline
    return model, report


PRUNE_METHODS: dict[str, PruneMethod] = {"slimming": slimming, "acp": acp}


def run_prune(
    detector: nn.Module, train_ds, val_ds, recipe: dict[str, Any], out_dir: str | Path
) -> tuple[nn.Module, dict[str, Any]]:
    """Run `recipe.prune.method` and write model/, report.json and plots into `out_dir`."""
    from compress.models.load import save_detector
    from compress.prune.plots import plot_report

    out_dir = Path(out_dir)
    method = (recipe.get("prune") or {}).get("method", "slimming")
    if method not in PRUNE_METHODS:
        raise ValueError(f"prune.method {method!r} unknown; known: {', '.join(PRUNE_METHODS)}")
    model, report = PRUNE_METHODS[method](detector, train_ds, val_ds, recipe, out_dir)
    report["model"] = str(save_detector(model, out_dir / "model"))
    try:
        report["plots"] = plot_report(report, out_dir)
    except Exception as exc:  # a plot must never lose the run's numbers
        log.warning("plots failed: %s", exc)
        report["plots_error"] = repr(exc)
    write_json(out_dir / "report.json", report)
    return model, report
