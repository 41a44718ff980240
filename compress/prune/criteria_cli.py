"""`python -m compress criteria`: every channel criterion and layer allocator at equal FLOPs.

    python -m compress criteria --recipe configs/yolov3-tiny-person.yaml --out runs/criteria
    python -m compress criteria --recipe R --model runs/x/base/model --flops 0.6,0.4 \\
        --criteria l1,hrank,reconstruction --allocators uniform --val-images 300

Writes OUT/criteria.json, OUT/criteria.md and OUT/criteria.png. Flags override the recipe's
`criteria:` section (see `compress.prune.criteria_table.TABLE_DEFAULTS`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _fractions(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--flops takes fractions like 0.7,0.5, got {text!r}"
        ) from None


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Channel criteria side by side at equal FLOPs", add_help=add_help
    )
    p.add_argument("--recipe", required=True, help="YAML recipe")
    p.add_argument("--profile", default=None, help="recipe profile (smoke, quick, full)")
    p.add_argument("--model", default=None, help="start from this model folder (model.json)")
    p.add_argument(
        "--teacher", default=None, help="model folder output_taylor and the GA distil from"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--flops", default=None, help="FLOPs fractions, e.g. 0.7,0.6,0.5,0.4")
    p.add_argument("--criteria", default=None, help="criteria to run (default: all registered)")
    p.add_argument("--allocators", default=None, help="allocators beside the global ranking")
    p.add_argument("--val-images", type=int, default=None, help="score on the first N val images")
    p.add_argument("--recover-steps", type=int, default=None, help="equal recovery SGD steps")
    p.add_argument(
        "--no-adaptive", action="store_true", help="no seed-method (adaptive threshold) cycles"
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from compress.data.build import datasets_for
    from compress.models.load import load_detector, load_detector_dir
    from compress.prune.criteria_table import run_table, table_settings
    from compress.recipe import load_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.profile)
    try:
        cfg = table_settings(
            recipe,
            flops=_fractions(args.flops),
            criteria=_names(args.criteria),
            allocators=_names(args.allocators),
            val_images=args.val_images,
            recover_steps=args.recover_steps,
            **({"adaptive": False} if args.no_adaptive else {}),
        )
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise SystemExit(f"{args.recipe}: {exc}") from None
    detector = load_detector_dir(args.model) if args.model else load_detector(recipe["model"])
    teacher = load_detector_dir(args.teacher) if args.teacher else None
    train_ds, val_ds = datasets_for(detector, recipe["data"], None)
    table = run_table(
        detector, train_ds, val_ds, cfg, Path(args.out), teacher, progress=not args.no_progress
    )
    print((Path(args.out) / "criteria.md").read_text(encoding="utf-8"), end="")
    return 0 if not any("error" in r for r in table["rows"]) else 1
