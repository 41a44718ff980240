"""`python -m compress search`: ACP structure search (channel clustering + particle swarm).

    python -m compress search --recipe configs/ssdlite-person.yaml --profile quick --out runs/s
    python -m compress search --recipe configs/yolov3-tiny-person.yaml --model runs/x/base/model \
        --out runs/acp-tiny --target 0.5 --particles 10 --cycles 10 --proxy ap50

Writes `OUT/model/` (a loadable model folder), `OUT/report.json` (clustered start, swarm
best/mean per cycle, per-layer widths, params, FLOPs, AP before/after), the plots and
`OUT/acp_state.json`; running the same command again resumes an interrupted search.
Flags override the recipe's `prune:` section (which may name another method: this verb always
runs "acp"). `--model` starts from a saved model folder instead of the recipe's `model:`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from compress.prune.acp.fitness import COSTS, PROXIES


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="ACP structure search from a recipe", add_help=add_help)
    p.add_argument("--recipe", required=True, help="YAML recipe")
    p.add_argument("--profile", default=None, help="recipe profile (smoke, quick, full)")
    p.add_argument("--model", default=None, help="start from this model folder (model.json)")
    p.add_argument("--out", required=True, help="output folder (holds the resumable state)")
    p.add_argument("--particles", type=int, default=None, help="swarm size")
    p.add_argument("--cycles", type=int, default=None, help="swarm cycles")
    p.add_argument("--seed", type=int, default=None, help="swarm seed")
    p.add_argument("--target", type=float, default=None, help="budget: cost ratio in (0, 1]")
    p.add_argument("--budget", default=None, choices=sorted(COSTS), help="cost measure")
    p.add_argument("--proxy", default=None, choices=sorted(PROXIES), help="accuracy proxy")
    p.add_argument("--cluster", default=None, help="clustering: dbscan, agglomerative, none")
    p.add_argument("--no-recover", action="store_true", help="skip the recovery fine-tune")
    p.add_argument("--fresh", action="store_true", help="ignore a saved search state")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def _check(args: argparse.Namespace) -> None:
    for name in ("particles", "cycles"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1")
    if args.target is not None and not 0 < args.target <= 1:
        raise SystemExit("--target is a cost ratio in (0, 1]")


def overrides(args: argparse.Namespace, section: dict[str, Any]) -> dict[str, Any]:
    """The recipe's prune section (when it is an acp one) with the flags applied."""
    prune = dict(section) if section.get("method") == "acp" else {}
    prune["method"] = "acp"
    nested = {
        "pso": {"particles": args.particles, "cycles": args.cycles, "seed": args.seed},
        "fitness": {"target": args.target, "budget": args.budget, "proxy": args.proxy},
        "cluster": {"method": args.cluster},
    }
    for key, values in nested.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            prune[key] = {**(prune.get(key) or {}), **given}
    if args.no_recover:
        prune["recover"] = False
    if args.fresh:
        prune["resume"] = False
    return prune


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _check(args)
    import torch

    from compress.data.build import datasets_for
    from compress.models.load import load_detector, load_detector_dir
    from compress.prune.methods import run_prune
    from compress.recipe import load_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.profile)
    recipe["prune"] = overrides(args, recipe.get("prune") or {})
    detector = load_detector_dir(args.model) if args.model else load_detector(recipe["model"])
    train_ds, val_ds = datasets_for(
        detector, recipe["data"], (recipe.get("train") or {}).get("augment")
    )
    _, report = run_prune(detector, train_ds, val_ds, recipe, Path(args.out))
    keys = ("baseline", "searched", "final", "flops_ratio", "params_ratio", "model")
    print(json.dumps({k: report.get(k) for k in keys}, indent=2))
    s = report["search"]
    print(
        f"search: {s['evaluated']} candidates, {s['candidates_per_minute'] or 0:.1f}/min, "
        f"cache hit rate {s['cache_hit_rate']:.2f}"
    )
    return 0
