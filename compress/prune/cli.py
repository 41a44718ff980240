"""`python -m compress prune`: sparsity training + adaptive channel/layer pruning + recovery.

    python -m compress prune --recipe configs/yolov3-tiny-person.yaml --profile quick --out runs/p
    python -m compress prune --recipe R --model runs/x/base/model --threshold otsu --cycles 1

Writes `OUT/model/` (Darknet cfg + weights, model.json), `OUT/report.json` and the plots.
Flags override the recipe's `prune:` section; `--model` starts from a saved model folder
instead of the recipe's `model:` section.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from compress.prune.importance import IMPORTANCE
from compress.prune.thresholds import THRESHOLDS


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Prune a detector from a recipe", add_help=add_help)
    p.add_argument("--recipe", required=True, help="YAML recipe")
    p.add_argument("--profile", default=None, help="recipe profile (smoke, quick, full)")
    p.add_argument(
        "--model",
        default=None,
        help="start from this model folder (model.json) instead of the recipe's model",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--method",
        default=None,
        help="prune method (registry: compress.prune.methods.PRUNE_METHODS)",
    )
    p.add_argument(
        "--importance", default=None, choices=sorted(IMPORTANCE), help="channel criterion"
    )
    p.add_argument(
        "--threshold", default=None, choices=sorted(THRESHOLDS), help="threshold estimator"
    )
    p.add_argument("--cycles", type=int, default=None, help="max sparsify-prune-recover cycles")
    p.add_argument(
        "--target-flops",
        type=float,
        default=None,
        help="stop at this fraction of the unpruned FLOPs",
    )
    p.add_argument(
        "--no-layers", action="store_true", help="channel pruning only (no residual-unit removal)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def overrides(args: argparse.Namespace) -> dict:
    prune = {
        k: v
        for k, v in {
            "method": args.method,
            "importance": args.importance,
            "threshold": args.threshold,
            "cycles": args.cycles,
            "target_flops": args.target_flops,
        }.items()
        if v is not None
    }
    if args.no_layers:
        prune["layers"] = False
    return {"prune": prune} if prune else {}


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.cycles is not None and args.cycles < 1:
        raise SystemExit("--cycles must be >= 1")
    if args.target_flops is not None and not 0 < args.target_flops <= 1:
        raise SystemExit("--target-flops is a fraction in (0, 1]")
    import torch

    from compress.data.build import datasets_for
    from compress.models.load import load_detector, load_detector_dir
    from compress.prune.methods import run_prune
    from compress.recipe import load_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.profile, overrides(args))
    detector = load_detector_dir(args.model) if args.model else load_detector(recipe["model"])
    train_ds, val_ds = datasets_for(
        detector, recipe["data"], (recipe.get("train") or {}).get("augment")
    )
    _, report = run_prune(detector, train_ds, val_ds, recipe, Path(args.out))
    print(
        json.dumps(
            {k: report.get(k) for k in ("stop_reason", "baseline", "final", "model")}, indent=2
        )
    )
    return 0
