"""One prune run, the same for every strategy:

    baseline -> strategy chooses a structure -> compact -> refit -> evaluate
             -> recover, or keep the cut weights when recovery lowers held-out AP50
             -> evaluate -> (next round, or stop) -> save model/, report.json, plots

`Context` is what the run needs from the recipe, built once (evaluator, training settings,
sparsity trainer, recovery method, refit settings, the datasets). `STRATEGIES` names the
strategies (`prune.method` / `--method`); a strategy only chooses (see `strategy.py`).

    model, report = prune(detector, Context.from_recipe(recipe, train_ds, val_ds), out_dir)

Under torchrun rank 0 calls `prune_from_recipe` and the other ranks `serve_from_recipe`: they
do their share of what the strategy spreads (a search's evaluations), then exit; everything
after the choice runs on rank 0 alone (strategy.py).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from compress.evaluate import model_figures
from compress.io import write_json
from compress.prune.acp.strategy import ACP, DDPG, GA, PSO, Adversarial, RandomSearch
from compress.prune.reconstruct import REFIT_DEFAULTS
from compress.prune.slimming import Slimming
from compress.prune.strategy import Choice, Strategy

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {
    "slimming": Slimming,
    "acp": ACP,
    "pso": PSO,
    "ga": GA,
    "random": RandomSearch,
    "ddpg": DDPG,
    "adversarial": Adversarial,
}

Evaluator = Callable[[nn.Module], dict[str, Any]]
Recoverer = Callable[[nn.Module, Path, nn.Module | None], tuple[nn.Module, dict[str, Any]]]
Trainer = Callable[[nn.Module, Path, list[Any], int], dict[str, Any]]

# Train settings a sparsity run never takes from the recipe: it must end on its last epoch
# (the "best" epoch would be the least sparse one), so no evaluation picks a best.
_SPARSITY_TRAIN = {"eval_every": 0}


def strategy_for(recipe: dict[str, Any]) -> Strategy:
    """The strategy `recipe.prune.method` names, with its settings resolved."""
    method = (recipe.get("prune") or {}).get("method", "slimming")
    if method not in STRATEGIES:
        raise ValueError(f"prune.method {method!r} unknown; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[method](recipe)


def train_settings(recipe: dict[str, Any], **override: Any) -> dict[str, Any]:
    """The recipe's `train:` keys the trainer knows, with `override` on top."""
    from compress.train.engine import DEFAULTS

    cfg = {k: v for k, v in (recipe.get("train") or {}).items() if k in DEFAULTS}
    return {**cfg, **override}


def refit_settings(value: dict[str, Any] | bool | None) -> dict[str, Any] | None:
    """`prune.reconstruct` over REFIT_DEFAULTS; None when it is off (false, or images: 0)."""
    if value is False or value is None:
        return None
    opts = dict(value) if isinstance(value, dict) else {}
    unknown = sorted(set(opts) - set(REFIT_DEFAULTS))
    if unknown:
        raise ValueError(
            f"prune.reconstruct: unknown setting(s) {', '.join(unknown)}; known: {', '.join(REFIT_DEFAULTS)}"
        )
    opts = {**REFIT_DEFAULTS, **opts}
    return opts if int(opts["images"]) > 0 else None


@dataclass
class Context:
    """What a prune run takes from the recipe, built once (`from_recipe`); tests hand in
    stand-ins for the training parts."""

    evaluate: Evaluator  # held-out AP of a model
    recover: Recoverer  # (model, out_dir, teacher) -> (recovered model, report)
    sparsify: Trainer  # (model, out_dir, hooks, epochs) -> history: training with hooks
    accumulate_grads: Callable[[nn.Module], None] | None = None  # for gradient criteria
    train_ds: Any = None
    val_ds: Any = None
    refit: dict[str, Any] | None = None  # least-squares refit settings; None: off
    baseline: dict[str, Any] | None = None  # the unpruned model's figures, when already known
    # Every recovery's teacher when set (the person-tuned unpruned model in the pipeline);
    # otherwise each round distils from the model it cut.
    teacher: nn.Module | None = None

    @classmethod
    def from_recipe(
        cls, recipe: dict[str, Any], train_ds: Any, val_ds: Any, baseline: dict | None = None
    ) -> Context:
        prune = recipe.get("prune") or {}
        return cls(
            evaluate=evaluator(val_ds, recipe),
            recover=_recoverer(train_ds, val_ds, recipe),
            sparsify=_sparsifier(train_ds, recipe),
            accumulate_grads=_grad_accumulator(train_ds, recipe),
            train_ds=train_ds,
            val_ds=val_ds,
            refit=refit_settings(prune.get("reconstruct", True)),
            baseline=baseline,
        )

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """Params, FLOPs and held-out AP of `model`."""
        return model_figures(model, self.evaluate(model))


def evaluator(val_ds: Any, recipe: dict[str, Any]) -> Evaluator:
    from compress.evaluate import evaluate_detector

    train = recipe.get("train") or {}
    batch = int(train.get("eval_batch_size") or train.get("batch_size") or 8)

    def evaluate(model: nn.Module) -> dict[str, Any]:
        model.eval()
        return evaluate_detector(model, val_ds, batch_size=batch)

    return evaluate


def _sparsifier(train_ds: Any, recipe: dict[str, Any]) -> Trainer:
    from compress.train.engine import train

    def sparsify(model: nn.Module, out_dir: Path, hooks: list[Any], epochs: int) -> dict[str, Any]:
        cfg = train_settings(recipe, epochs=epochs, **_SPARSITY_TRAIN)
        return train(model, train_ds, None, cfg, out_dir, hooks=hooks)

    return sparsify


def _recoverer(train_ds: Any, val_ds: Any, recipe: dict[str, Any]) -> Recoverer:
    """RECOVERY_METHODS[recover.method] with the recipe's `train:` settings under its own."""
    from compress.recover.methods import RECOVERY_METHODS

    section = dict(recipe.get("recover") or {})
    method = section.pop("method", "finetune")
    if method not in RECOVERY_METHODS:
        raise ValueError(f"recover.method {method!r} unknown; known: {', '.join(RECOVERY_METHODS)}")

    def recover(
        model: nn.Module, out_dir: Path, teacher: nn.Module | None
    ) -> tuple[nn.Module, dict[str, Any]]:
        cfg = {**train_settings(recipe), **section}
        return RECOVERY_METHODS[method](model, train_ds, val_ds, cfg, out_dir, teacher=teacher)

    return recover


def _grad_accumulator(train_ds: Any, recipe: dict[str, Any], batches: int = 4):
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


# --------------------------------------------------------------------------- the steps


def cut(choice: Choice, ctx: Context) -> tuple[nn.Module, dict[str, Any] | None]:
    """Compact the chosen structure, then refit the cut convs to the source's outputs (with
    the held-out AP before the refit on record, so the refit's effect is visible)."""
    pruned = choice.compact()
    if ctx.refit is None or choice.refit is None:
        return pruned, None
    from compress.prune.reconstruct import refit_images

    opts = ctx.refit
    images = refit_images(ctx.train_ds, choice.source, int(opts["images"]), int(opts["batch_size"]))
    device = next(pruned.parameters()).device
    before = ctx.evaluate(pruned)
    layers = choice.refit(
        pruned, [x.to(device) for x in images], int(opts["positions"]), float(opts["ridge"])
    )
    return pruned.eval(), {
        "images": sum(len(x) for x in images),
        "layers": layers,
        "before_refit": {k: before[k] for k in ("AP50", "AP50_95") if k in before},
    }


def recover_or_keep(
    pruned: nn.Module,
    before: dict[str, Any],
    ctx: Context,
    out_dir: Path,
    teacher: nn.Module | None,
) -> tuple[nn.Module, dict[str, Any], dict[str, Any], str | None]:
    """Recover `pruned` (figures `before`); when that lowers held-out AP50, keep the weights it
    started from: with a few hundred labelled images fine-tuning can undo more than it
    restores. Returns (model, recovery report, figures, why the start was kept or None)."""
    start = copy.deepcopy(pruned)
    model, report = ctx.recover(pruned, out_dir, teacher)
    after = ctx.measure(model)
    if after.get("AP50", 0.0) >= before.get("AP50", 0.0):
        return model, report, after, None
    why = (
        f"recovery lowered AP50 from {before.get('AP50', 0.0):.4f} to "
        f"{after.get('AP50', 0.0):.4f}: kept the pre-recovery weights"
    )
    log.info("%s", why)
    report["after"] = after
    return start, report, dict(before), why


def cut_and_measure(choice: Choice, ctx: Context) -> tuple[nn.Module, dict[str, Any]]:
    """Cut and refit one choice, then evaluate it: (model, {"pruned": figures})."""
    pruned, refit = cut(choice, ctx)
    if refit is not None:
        choice.report["reconstruct"] = refit
    return pruned, {"pruned": ctx.measure(pruned)}


def recover_step(
    pruned: nn.Module, rec: dict[str, Any], choice: Choice, ctx: Context, out_dir: Path
) -> nn.Module:
    """Recover (or keep) a cut model; its record gains recover / recovered / recover_kept."""
    teacher = next(t for t in (ctx.teacher, choice.teacher, choice.source) if t is not None)
    model, rec["recover"], rec["recovered"], kept = recover_or_keep(
        pruned, rec["pruned"], ctx, out_dir, teacher
    )
    if kept:
        rec["recover_kept"] = kept
    return model


def prune_rounds(
    detector: nn.Module, ctx: Context, strategy: Strategy, out_dir: Path
) -> tuple[nn.Module, dict[str, Any]]:
    """Rounds of choose -> cut -> refit -> evaluate -> recover until the strategy stops.
    Returns the kept model and the strategy's report."""
    from compress.models.load import save_detector

    baseline = ctx.baseline or ctx.measure(detector)
    current, rounds, stop = detector, [], "cycles done"
    for k in range(1, strategy.rounds + 1):
        rdir = strategy.round_dir(out_dir, k)
        rec: dict[str, Any] = {"cycle": k, "input": model_figures(current)}
        choice = strategy.choose(current, ctx, rdir)
        rec.update(choice.record)
        rec["prune"] = choice.report
        if choice.empty:
            stop = rec["stopped"] = choice.empty
            rounds.append(rec)
            break
        pruned, measured = cut_and_measure(choice, ctx)
        rec.update(measured)
        # side-by-side structures go through the same steps before this round's recovery
        for name, other in strategy.beside(k, choice, rec, ctx).items():
            side_model, side = cut_and_measure(other, ctx)
            recover_step(side_model, side, other, ctx, rdir / f"{name}_recover")
            rec.setdefault("beside", {})[name] = {**side, "choice": other.report}
        if strategy.recovers:
            pruned = recover_step(pruned, rec, choice, ctx, rdir / "recover")
        else:
            rec["recovered"] = rec["pruned"]
        if rdir != out_dir:
            rec["model"] = str(save_detector(pruned, rdir / "model"))
        rounds.append(rec)
        # What the rounds so far measured, on disk before the next one starts: a run stopped
        # mid-way (Ctrl-C, a crash, a time limit) keeps every finished round's figures.
        write_json(out_dir / "rounds.json", {"baseline": baseline, "rounds": rounds})
        why, keep = strategy.stop(k, rec, baseline)
        if keep:
            current = pruned
        else:
            rec["rejected"] = True
        if why:
            stop = why
            break
    return current, strategy.report(rounds, baseline, stop, current)


def prune(
    detector: nn.Module, ctx: Context, out_dir: str | Path, strategy: Strategy
) -> tuple[nn.Module, dict[str, Any]]:
    """Run `strategy` on `detector`; write model/, report.json and the plots into `out_dir`."""
    from compress.models.load import save_detector

    out_dir = Path(out_dir)
    model, report = prune_rounds(detector, ctx, strategy, out_dir)
    report["model"] = str(save_detector(model, out_dir / "model"))
    try:
        report.update(strategy.plots(report, out_dir))
    except Exception as exc:  # a plot must never lose the run's numbers
        log.warning("plots failed: %s", exc)
        report["plots_error"] = repr(exc)
    write_json(out_dir / "report.json", report)
    return model, report


def prune_from_recipe(
    detector: nn.Module,
    train_ds: Any,
    val_ds: Any,
    recipe: dict[str, Any],
    out_dir: str | Path,
    baseline: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """`prune` with the strategy and the context the recipe describes."""
    strategy = strategy_for(recipe)
    ctx = Context.from_recipe(recipe, train_ds, val_ds, baseline)
    return prune(detector, ctx, out_dir, strategy)


def serve_from_recipe(
    detector: nn.Module, train_ds: Any, val_ds: Any, recipe: dict[str, Any]
) -> None:
    """A rank other than 0 under torchrun: serve rank 0's `prune_from_recipe` (its strategy's
    spread part) until that part is done. Writes nothing."""
    strategy = strategy_for(recipe)
    strategy.serve(detector, Context.from_recipe(recipe, train_ds, val_ds))
