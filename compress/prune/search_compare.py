"""`python -m compress search-compare`: every structure search at one evaluation budget.

    python -m compress search-compare --recipe configs/yolov3-tiny-person.yaml --out runs/cmp \
        --methods pso,ga,random,ddpg,adversarial --evaluations 60 --target 0.5

Each method runs as `prune --method M` would (search, least-squares refit, evaluation,
recovery unless --no-recover) into `OUT/M/`, from the same model, with the same evaluation
budget, FLOPs target and seed. Writes `OUT/search_compare.md` (the table: best fitness,
lookups, FLOPs, held-out AP50 after refit and after recovery, search time, and whether each
method beat random search), `OUT/search_compare.json` and `OUT/search_compare.png` (best
fitness against evaluations, one line per method).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Any

from compress.io import atomic_write_bytes, write_json

SEARCHES = ("pso", "ga", "random", "ddpg", "adversarial")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Every structure search at one evaluation budget", add_help=add_help
    )
    p.add_argument("--recipe", required=True, help="YAML recipe")
    p.add_argument("--profile", default=None, help="recipe profile (smoke, quick, full)")
    p.add_argument("--model", default=None, help="start from this model folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--methods", default=",".join(SEARCHES), help="comma-separated searches")
    p.add_argument("--evaluations", type=int, default=60, help="fitness lookups per method")
    p.add_argument("--population", type=int, default=None, help="per generation (all methods)")
    p.add_argument("--target", type=float, default=None, help="FLOPs ratio in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="every optimiser's seed")
    p.add_argument(
        "--inherit",
        default=None,
        choices=("cluster", "l1", "correlation"),
        help="one filter ranking inside the layers for every method (default: each its own), "
        "so the table compares the searches and not the rankings",
    )
    p.add_argument("--fitness-images", type=int, default=None, help="images per fitness lookup")
    p.add_argument("--no-recover", action="store_true", help="refit only, no recovery")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def settings(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The `prune:` section of one method's run: the shared budget, target and seed."""
    own: dict[str, Any] = {"seed": args.seed}
    if args.population is not None:
        own["particles" if method == "pso" else "population"] = args.population
    section: dict[str, Any] = {
        "method": method,
        "evaluations": args.evaluations,
        method: own,
        "recover": not args.no_recover,
    }
    fitness: dict[str, Any] = {}
    if args.target is not None:
        fitness["target"] = args.target
    if getattr(args, "fitness_images", None):
        fitness["images"] = args.fitness_images
    if fitness:
        section["fitness"] = fitness
    if getattr(args, "inherit", None):
        section["inherit"] = args.inherit
        if args.inherit != "cluster":  # no clustering to pay for when nothing reads it
            section["cluster"] = {"method": "none"}
    return section


def row(method: str, report: dict[str, Any]) -> dict[str, Any]:
    search = report["search"]
    recovered = report.get("recovered")
    return {
        "method": method,
        "inherit": search.get("inherit"),
        "lookups": len(search["log"]),
        "evaluated": search["evaluated"],
        "best_fitness": search["best"]["fitness"],
        "flops_ratio": report["flops_ratio"],
        "ap50_refit": report["searched"].get("AP50"),
        "ap50_recovered": recovered.get("AP50") if recovered else None,
        "ap50_final": report["final"].get("AP50"),
        "search_seconds": report["search_seconds"],
    }


def _f(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    """Markdown: one line per method, then which beat random on final AP50 (when it ran)."""
    head = (
        "| method | filters | lookups (unique) | best fitness | FLOPs ratio | AP50 refit "
        "| AP50 recovered | search s |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['method']} | {r['inherit']} | {r['lookups']} ({r['evaluated']}) "
        f"| {_f(r['best_fitness'])} | {_f(r['flops_ratio'], 3)} | {_f(r['ap50_refit'])} "
        f"| {_f(r['ap50_recovered'])} | {_f(r['search_seconds'], 1)} |"
        for r in rows
    ]
    text = f"Unpruned: AP50 {_f(baseline.get('AP50'))}.\n\n" + head + "\n".join(lines) + "\n"
    rand = next((r for r in rows if r["method"] == "random"), None)
    if rand is not None:
        text += "\n"
        for r in rows:
            if r is rand:
                continue
            verdict = "reaches" if r["ap50_final"] >= rand["ap50_final"] else "does NOT reach"
            text += (
                f"- {r['method']} {verdict} random search's final AP50 "
                f"({_f(r['ap50_final'])} vs {_f(rand['ap50_final'])}).\n"
            )
    return text


def compare(
    detector: Any,
    train_ds: Any,
    val_ds: Any,
    recipe: dict[str, Any],
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    from compress.prune.acp.plots import plot_evaluations
    from compress.prune.run import STRATEGIES, prune_from_recipe

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in STRATEGIES or m == "slimming"]
    if bad or not methods:
        raise SystemExit(f"--methods: unknown search(es) {bad}; known: {', '.join(SEARCHES)}")
    rows, logs, baseline = [], {}, None
    for method in methods:
        run = {**recipe, "prune": settings(method, args)}
        _, report = prune_from_recipe(
            copy.deepcopy(detector), train_ds, val_ds, run, out / method, baseline
        )
        baseline = report["baseline"]
        rows.append(row(method, report))
        logs[method] = report["search"]["log"]
    result = {
        "evaluations": args.evaluations,
        "target": report["settings"]["fitness"]["target"],
        "baseline": baseline,
        "rows": rows,
        "logs": logs,
    }
    write_json(out / "search_compare.json", result)
    atomic_write_bytes(out / "search_compare.md", table(rows, baseline).encode())
    result["plot"] = plot_evaluations(logs, out, "search_compare.png")
    return result


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from compress.recipe import load_inputs, load_recipe

    if args.evaluations < 1:
        raise SystemExit("--evaluations must be >= 1")
    if args.target is not None and not 0 < args.target <= 1:
        raise SystemExit("--target is a FLOPs ratio in (0, 1]")
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.profile)
    detector, train_ds, val_ds = load_inputs(recipe, args.model)
    out = Path(args.out)
    result = compare(detector, train_ds, val_ds, recipe, args, out)
    print((out / "search_compare.md").read_text())
    print(json.dumps({"plot": str(out / result["plot"])}))
    return 0
