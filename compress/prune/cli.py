"""`python -m compress prune`: one prune run with any registered strategy.

    python -m compress prune --recipe configs/yolov3-tiny-person.yaml --profile quick --out runs/p
    python -m compress prune --recipe R --model runs/x/base/model --threshold otsu --cycles 1
    python -m compress prune --method acp --recipe configs/ssdlite-person.yaml --out runs/s \
        --particles 10 --swarm-cycles 10 --target 0.5 --proxy ap50
    python -m compress prune --method ga --recipe configs/yolov3-tiny-person.yaml --out runs/g \
        --evaluations 60 --target 0.5      (also --method pso | random: the same budget)

Writes `OUT/model/` (a loadable model folder), `OUT/report.json` and the plots (ACP also its
resumable `OUT/acp_state.json`: the same command again goes on from there). `--method` picks
the strategy (default: the recipe's `prune.method`); each strategy has its own flag group,
and its flags override the recipe's `prune:` section. A `--method` other than the recipe's
starts from that strategy's defaults. `--model` starts from a saved model folder instead of
the recipe's `model:` section. `python -m compress search` is this verb with `--method acp`.

    torchrun --nproc_per_node N -m compress prune --method pso|ga|random ... (any search)

spreads each batch of the search's fitness evaluations over N processes (gloo; the candidates
are scored on the CPU): the chosen structure is the one-process run's, rank 0 writes every
file, and after the search rank 0 finishes the run (refit, recovery, evaluation, save) alone.
Strategies that do not spread (slimming) are refused under torchrun.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from pathlib import Path
from typing import Any

from compress.prune.run import STRATEGIES

# Under torchrun the ranks other than 0 wait for rank 0's first batch while it measures the
# unpruned model on the held-out set (one CPU thread per rank by default), which can outlast
# gloo's 30-minute default on a large model.
GROUP_TIMEOUT = datetime.timedelta(hours=3)


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
        choices=list(STRATEGIES),
        help="prune strategy (default: the recipe's prune.method)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    for names, strategy in flag_groups().items():
        strategy.add_arguments(p.add_argument_group(f"--method {names}", strategy.help))
    return p


def _flags(strategy: type) -> object:
    return strategy.add_arguments.__func__  # strategies sharing it share one flag group


def flag_groups() -> dict[str, type]:
    """'acp|pso|ga|random' -> the first strategy of each group sharing one `add_arguments`."""
    groups: dict[object, list[str]] = {}
    for name, strategy in STRATEGIES.items():
        groups.setdefault(_flags(strategy), []).append(name)
    return {"|".join(names): STRATEGIES[names[0]] for names in groups.values()}


def prune_section(args: argparse.Namespace, section: dict[str, Any]) -> dict[str, Any]:
    """The recipe's `prune:` section with `--method` and the chosen strategy's flags applied;
    a flag of another strategy is refused rather than silently ignored."""
    method = args.method or section.get("method", "slimming")
    if method not in STRATEGIES:
        raise SystemExit(f"prune.method {method!r} unknown; known: {', '.join(STRATEGIES)}")
    for name, strategy in STRATEGIES.items():
        if _flags(strategy) is _flags(STRATEGIES[method]):
            continue  # one group: the chosen strategy's overrides judge these flags
        if strategy.overrides(args):
            raise SystemExit(f"prune: flags of --method {name} given, but the method is {method}")
    from compress.recipe import deep_merge

    base = section if section.get("method", "slimming") == method else {}
    return deep_merge({**base, "method": method}, STRATEGIES[method].overrides(args))


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from compress.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.profile)
    recipe["prune"] = prune_section(args, recipe.get("prune") or {})
    import torch

    from compress.prune.run import prune_from_recipe, serve_from_recipe
    from compress.recipe import load_inputs
    from compress.train.distributed import init_distributed

    method = recipe["prune"]["method"]
    info = init_distributed("cpu", timeout=GROUP_TIMEOUT)
    if info.distributed and not STRATEGIES[method].spreads:
        spread = ", ".join(n for n, s in STRATEGIES.items() if s.spreads)
        raise SystemExit(
            f"prune --method {method} runs in one process; under torchrun only the structure "
            f"searches spread over ranks ({spread})"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    detector, train_ds, val_ds = load_inputs(recipe, args.model)
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports; the others serve
        serve_from_recipe(detector, train_ds, val_ds, recipe)
        return 0
    _, report = prune_from_recipe(detector, train_ds, val_ds, recipe, Path(args.out))
    keys = ("method", "stop_reason", "baseline", "final", "model")
    print(json.dumps({k: report[k] for k in keys if k in report}, indent=2))
    search = report.get("search")
    if search:
        print(
            f"search: {search['evaluated']} candidates, {search['candidates_per_minute'] or 0:.1f}/min, "
            f"cache hit rate {search['cache_hit_rate']:.2f}, {search['world_size']} rank(s), "
            f"{report['search_seconds']:.1f} s"
        )
    return 0
