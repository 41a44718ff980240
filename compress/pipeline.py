"""`python -m compress pipeline --recipe R --profile P --out DIR`: a whole recipe, one run folder.

Stages (`STAGES`), in order, each into `DIR/<stage>/` with its own `report.json`:
  base       load the model (person specialization from the recipe's `classes`), save it,
             evaluate it on the held-out images (AP50, AP50:95), count params and FLOPs
  specialise fine-tune the unpruned person model on the person data (`specialise:`); the
             prune starts from it and distils from it. A COCO-80 model's person score
             competes with 79 other classes; a person-only model does not, and the features
             only those classes used become dead weight a criterion can see
  prune      one prune run (`compress.prune.run`) with the strategy `prune.method` names
             (slimming: sparsity training, adaptive layer + channel pruning, recovery, in
             cycles), model + plots + report; the AP drop limit is counted from the original
             model the user started from
  evaluate   the saved pruned model re-loaded from disk and evaluated on the same images
  ship       the model the run hands over (`compress.ship`): the smallest pruned model whose
             AP50 is within `prune.max_ap_drop` of the original, else the best unpruned one
  compare   the recovery methods side by side on the pruned model (`recover.compare`)
  versus    another strategy (`versus:`) from the same model to the same FLOPs
A failing stage is recorded with its error and the stages that need it are skipped.
`summary.json` and `summary.md` (`compress.report`) gather the figures and name
`final_model`. `run_pipeline` takes other stage registries too: `python -m nanoprune` adds the
ONNX export and the latency A/B between evaluate and compare.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compress import report
from compress.evaluate import model_figures
from compress.io import atomic_write_text, file_record, read_json, write_json
from compress.recipe import load_recipe
from compress.ship import Candidate, choose

log = logging.getLogger("compress.pipeline")


class Skip(Exception):
    """A stage cannot run here (its input is missing, or an earlier stage failed)."""


class Run:
    """State handed from stage to stage (models in memory, paths, figures)."""

    def __init__(self, recipe: dict[str, Any], out: Path) -> None:
        self.recipe, self.out = recipe, out
        self.base = self.pruned = self.train_ds = self.val_ds = None
        self.start = None  # what the prune starts from: the person-tuned model, else base
        self.prune_report: dict[str, Any] | None = None
        self.figures: dict[str, Any] = {}
        self.paths: dict[str, str] = {}
        # A run folder that already holds a pruned model lets the later stages re-run alone
        # (`--stages base,evaluate,compare`); a prune stage in this run replaces it.
        if (out / "prune" / "model" / "model.json").is_file():
            self.paths["pruned_model"] = str(out / "prune" / "model")
        if (out / "ship" / "model" / "model.json").is_file():
            self.paths["shipped_model"] = str(out / "ship" / "model")
        spec = out / "specialise" / "report.json"
        if spec.is_file() and (out / "specialise" / "model" / "model.json").is_file():
            self.paths["specialised_model"] = str(out / "specialise" / "model")
            self.figures["specialised"] = read_json(spec)["figures"]


def stage_base(run: Run, out: Path) -> dict[str, Any]:
    from compress.models.load import asset_path, save_detector
    from compress.prune.run import evaluator
    from compress.recipe import load_inputs

    r = run.recipe
    run.base, run.train_ds, run.val_ds = load_inputs(r)
    run.base.eval()
    metrics = evaluator(run.val_ds, r)(run.base)
    run.figures["base"] = model_figures(run.base, metrics)
    run.paths["base_model"] = str(save_detector(run.base, out / "model"))
    inputs = {
        k: file_record(asset_path(r["model"][k], k))
        for k in ("cfg", "weights", "names")
        if r["model"].get(k)
    }
    return {
        "model": r["model"],
        "inputs": inputs,
        "classes": list(run.base.class_names),
        "data": {"train_images": len(run.train_ds), "val_images": len(run.val_ds)},
        "figures": run.figures["base"],
        "metrics": metrics,
        "model_dir": run.paths["base_model"],
    }


def stage_specialise(run: Run, out: Path) -> dict[str, Any]:
    """Fine-tune the unpruned person model with the `specialise:` settings over `train:`."""
    from compress.models.load import save_detector
    from compress.prune.run import evaluator, train_settings
    from compress.train.engine import train

    spec = dict(run.recipe.get("specialise") or {})
    if int(spec.get("epochs", 0)) <= 0:
        raise Skip("recipe has no specialise section: the prune starts from the base model")
    model = copy.deepcopy(run.base)
    # One evaluation, after training: the held-out images judge the result, not each epoch.
    history = train(
        model, run.train_ds, None, train_settings(run.recipe, **spec, eval_every=0), out
    )
    metrics = evaluator(run.val_ds, run.recipe)(model.eval())
    figures = model_figures(model, metrics)
    run.figures["specialised"] = figures
    run.paths["specialised_model"] = str(save_detector(model, out / "model"))
    gain = figures["AP50"] - run.figures["base"]["AP50"]
    # A specialisation that scores lower than what it started from is not built upon.
    run.start = model if gain >= 0 else run.base
    return {
        "settings": history["config"],
        "final_loss": (history.get("final") or {}).get("loss"),
        "figures": figures,
        "AP50_gain": gain,
        "prune_starts_from": "specialised" if gain >= 0 else "base",
        "model_dir": run.paths["specialised_model"],
    }


def _prune(run: Run, recipe: dict[str, Any], out: Path):
    """One prune run from the person-tuned model (the base one without a specialise stage),
    distilling from it; the AP drop limit counts from the original model's figures."""
    from compress.prune.run import Context, prune, strategy_for

    start = run.start
    if start is None and "specialised_model" in run.paths:  # a re-run of later stages
        from compress.models.load import load_detector_dir

        start = run.start = load_detector_dir(run.paths["specialised_model"]).eval()
    start = start if start is not None else run.base
    strategy = strategy_for(recipe)
    ctx = Context.from_recipe(recipe, run.train_ds, run.val_ds, run.figures.get("base"))
    ctx.teacher = start
    model, report = prune(copy.deepcopy(start), ctx, out, strategy)
    return model, report, strategy


def stage_prune(run: Run, out: Path) -> dict[str, Any]:
    run.pruned, report, strategy = _prune(run, run.recipe, out)
    run.prune_report = report
    run.paths["pruned_model"] = report["model"]
    run.figures.update(strategy.summary(report))
    # The strategy's full report (cycles, thresholds, per-layer widths) is this stage's report.
    return report


def stage_evaluate(run: Run, out: Path) -> dict[str, Any]:
    from compress.models.load import load_detector_dir
    from compress.prune.run import evaluator

    if "pruned_model" not in run.paths:
        raise Skip("no pruned model (the prune stage did not finish)")
    model = load_detector_dir(run.paths["pruned_model"]).eval()
    metrics = evaluator(run.val_ds, run.recipe)(model)
    run.figures["pruned"] = model_figures(model, metrics)
    base = run.figures["base"]
    ratios = {
        "flops_ratio": run.figures["pruned"]["flops"] / base["flops"],
        "params_ratio": run.figures["pruned"]["params"] / base["params"],
        "AP50_delta": metrics["AP50"] - base.get("AP50", float("nan")),
        "AP50_95_delta": metrics["AP50_95"] - base.get("AP50_95", float("nan")),
    }
    run.figures["ratios"] = ratios
    return {
        "model_dir": run.paths["pruned_model"],
        "metrics": metrics,
        "figures": run.figures["pruned"],
        "vs_base": ratios,
    }


def ship_candidates(run: Run) -> list[Candidate]:
    """Every model of this run that could ship, with its held-out figures."""
    out = [Candidate("base", run.paths["base_model"], **_fig(run.figures["base"]), pruned=False)]
    if "specialised_model" in run.paths:
        out.append(
            Candidate(
                "specialised",
                run.paths["specialised_model"],
                **_fig(run.figures["specialised"]),
                pruned=False,
            )
        )
    report = run.prune_report or {}
    for c in report.get("cycles") or []:
        if c.get("model") and c.get("recovered"):
            out.append(
                Candidate(
                    f"prune cycle {c['cycle']}", c["model"], **_fig(c["recovered"]), pruned=True
                )
            )
    # A strategy without rounds of its own (a search) saves only the final model; slimming's
    # final model is one of its cycles' models already, saved a second time.
    if not any(c.pruned for c in out) and "pruned_model" in run.paths and "pruned" in run.figures:
        out.append(
            Candidate(
                "pruned", run.paths["pruned_model"], **_fig(run.figures["pruned"]), pruned=True
            )
        )
    return out


def _fig(f: dict[str, Any]) -> dict[str, Any]:
    return {"flops": int(f["flops"]), "ap50": float(f["AP50"]), "ap50_95": f.get("AP50_95")}


def stage_ship(run: Run, out: Path) -> dict[str, Any]:
    """Choose what the run hands over (`compress.ship.choose`) and copy it to `ship/model`."""
    if "base" not in run.figures:
        raise Skip("no evaluated base model (run the base stage with this one)")
    if run.prune_report is None:
        done, partial = run.out / "prune" / "report.json", run.out / "prune" / "rounds.json"
        if done.is_file():
            run.prune_report = read_json(done)
        elif partial.is_file():  # a prune stopped mid-way: its finished cycles can still ship
            run.prune_report = {"cycles": read_json(partial)["rounds"]}
    max_drop = float((run.recipe.get("prune") or {}).get("max_ap_drop", 0.01))
    candidates = ship_candidates(run)
    choice = choose(candidates, run.figures["base"]["AP50"], max_drop)
    folder = out / "model"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(choice.shipped.model, folder)
    run.paths["shipped_model"] = str(folder)
    base = run.figures["base"]
    shipped = choice.shipped
    run.figures["shipped"] = {
        "name": shipped.name,
        "pruned": shipped.pruned,
        "flops": shipped.flops,
        "AP50": shipped.ap50,
        "AP50_95": shipped.ap50_95,
        "holds": choice.holds,
        "reason": choice.reason,
    }
    # The targets are the shipped model's: what the user gets, not what the prune reached.
    run.figures["ratios"] = {
        **(run.figures.get("ratios") or {}),
        "flops_ratio": shipped.flops / base["flops"],
        "AP50_delta": shipped.ap50 - base["AP50"],
    }
    (log.info if choice.holds else log.warning)("ship: %s", choice.reason)
    return {
        **choice.as_dict(),
        "candidates": [asdict(c) for c in candidates],
        "model_dir": str(folder),
    }


def stage_compare(run: Run, out: Path) -> dict[str, Any]:
    """The recovery methods side by side on the pruned model, same images seen by each.

    Runs when the recipe has `recover.compare` ({methods, budget_images}); the teacher for
    distillation is the unpruned person model.
    """
    spec = (run.recipe.get("recover") or {}).get("compare")
    if not spec:
        raise Skip("recipe has no recover.compare section")
    from compress.models.load import load_detector_dir
    from compress.recover.compare import compare_methods

    folder = run.paths.get("pruned_model")
    if not folder:
        raise Skip("no pruned model to recover")
    cfg = {k: v for k, v in (run.recipe.get("recover") or {}).items() if k != "compare"}
    cfg["train"] = dict(run.recipe.get("train") or {})
    cfg["budget_images"] = int(spec.get("budget_images") or len(run.train_ds))
    _, report = compare_methods(
        load_detector_dir(folder),
        run.train_ds,
        run.val_ds,
        cfg,
        out,
        teacher=run.start if run.start is not None else run.base,
        methods=spec.get("methods"),
    )
    run.figures["recovery_comparison"] = {
        "best_method": report["best_method"],
        "budget_images": report["budget_images"],
        "table": report["table"],
    }
    report.pop("methods", None)  # per-method curves stay in their own folders' reports
    return {"model_dir": folder, **report}


def stage_versus(run: Run, out: Path) -> dict[str, Any]:
    """Another prune method (the `versus:` section, e.g. ACP's particle swarm) from the same
    unpruned model to the FLOPs the main method reached, with the same recovery: the two side
    by side on the same held-out images."""
    spec = run.recipe.get("versus")
    if not spec:
        raise Skip("recipe has no versus section")
    if "pruned" not in run.figures:
        raise Skip("no evaluated pruned model to match")
    ratio = run.figures["pruned"]["flops"] / run.figures["base"]["flops"]
    prune_cfg = copy.deepcopy(spec)
    prune_cfg.setdefault("fitness", {})["target"] = round(ratio, 4)
    _, report, _ = _prune(run, {**run.recipe, "prune": prune_cfg}, out)
    main = run.recipe["prune"].get("method", "slimming")
    # Every strategy reports its final model's figures on these same held-out images.
    run.figures["versus"] = {main: run.figures["pruned"], prune_cfg["method"]: report["final"]}
    return {"flops_target": ratio, "side_by_side": run.figures["versus"], **report}


Stage = Callable[[Run, Path], dict[str, Any]]

STAGES: dict[str, Stage] = {
    "base": stage_base,
    "specialise": stage_specialise,
    "prune": stage_prune,
    "evaluate": stage_evaluate,
    "ship": stage_ship,
    "compare": stage_compare,
    "versus": stage_versus,
}
REQUIRED = {"base", "prune"}  # later stages cannot run without these


def run_pipeline(
    recipe: dict[str, Any],
    out: Path,
    stages: list[str] | None = None,
    registry: dict[str, Stage] | None = None,
) -> dict[str, Any]:
    """Run `stages` (default: all of `registry`, default STAGES, in its order) into `out`."""
    registry = STAGES if registry is None else registry
    out.mkdir(parents=True, exist_ok=True)
    run = Run(recipe, out)
    summary: dict[str, Any] = {
        "recipe": recipe["name"],
        "profile": recipe["_source"]["profile"],
        "recipe_file": file_record(recipe["_source"]["path"]),
        "stages": {},
    }
    write_json(out / "recipe.json", recipe)
    broken = None
    for name in stages or list(registry):
        t0 = time.time()
        sdir = out / name
        entry: dict[str, Any]
        try:
            if broken:
                raise Skip(f"stage {broken!r} failed")
            stage_report = registry[name](run, sdir)
            write_json(
                sdir / "report.json",
                {"stage": name, "seconds": round(time.time() - t0, 2), **stage_report},
            )
            entry = {"status": "done", "report": str(sdir / "report.json")}
        except Skip as exc:
            entry = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # recorded, the run goes on as far as it can
            log.error("stage %s failed: %s", name, exc)
            entry = {
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
            }
            if name in REQUIRED:
                broken = name
        entry["seconds"] = round(time.time() - t0, 2)
        summary["stages"][name] = entry
        log.info("stage %s: %s (%.1f s)", name, entry["status"], entry["seconds"])
    if stages:  # a partial re-run updates the run's summary instead of replacing it
        summary = _merge_previous(out / "summary.json", summary)
    summary["figures"] = {**summary.get("figures", {}), **run.figures}
    summary["final_model"] = (
        run.paths.get("shipped_model")
        or run.paths.get("pruned_model")
        or summary.get("final_model")
    )
    summary["targets"] = report.targets(summary["figures"], run.recipe.get("targets"))
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", report.markdown(summary))
    return summary


def _merge_previous(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return summary
    previous = read_json(path)
    stages = {**previous.get("stages", {}), **summary["stages"]}
    return {**previous, **summary, "stages": stages, "figures": previous.get("figures", {})}


def get_args_parser(
    add_help: bool = True, registry: dict[str, Stage] | None = None
) -> argparse.ArgumentParser:
    registry = STAGES if registry is None else registry
    p = argparse.ArgumentParser(
        description="Run a recipe end to end into one run folder", add_help=add_help
    )
    p.add_argument("--recipe", required=True, help="YAML recipe (configs/*.yaml)")
    p.add_argument("--profile", default=None, help="profile of the recipe: smoke, quick, full")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe name>)")
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(registry)}")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def main(args: argparse.Namespace, registry: dict[str, Stage] | None = None) -> int:
    registry = STAGES if registry is None else registry
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stages = args.stages.split(",") if args.stages else None
    bad = [s for s in stages or [] if s not in registry]
    if bad:
        raise SystemExit(f"unknown stage(s) {bad}; known: {', '.join(registry)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.profile)
    out = Path(args.out or Path("runs") / recipe["name"])
    summary = run_pipeline(recipe, out, stages, registry)
    print((out / "summary.md").read_text())
    return 0 if all(e["status"] != "failed" for e in summary["stages"].values()) else 1
