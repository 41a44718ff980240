"""Recover a pruned model: fine-tune, grafting, multi-network training, distillation.

    python -m compress recover --recipe R --model PRUNED_DIR --out DIR [--method M | --compare]

Recovers a pruned model folder with one method (`--method`, default: the recipe's
`recover.method`, else finetune) or runs them all on the same image budget (`--compare`).
Distillation's teacher is `--teacher DIR`, else the recipe's unpruned `model:`. Writes
`DIR/model/` (the recovered detector, save_detector) and `DIR/report.json` (inputs with
sha256, settings, AP before and after, params, FLOPs, the method's report; with --compare the
table, `compare.md` and `compare.png`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from compress.io import file_record, write_json
from compress.train.distributed import cleanup_distributed, init_distributed


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    from compress.recover.methods import RECOVERY_METHODS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--recipe", required=True, help="YAML recipe (data, train, recover sections)")
    p.add_argument("--profile", default=None, help="recipe profile: smoke, quick, full, ...")
    p.add_argument("--model", required=True, help="the pruned model folder (model.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--method", default=None, choices=sorted(RECOVERY_METHODS), help="one recovery method"
    )
    p.add_argument("--compare", action="store_true", help="run every method on the same budget")
    p.add_argument("--methods", default=None, help="with --compare: comma-separated subset")
    p.add_argument("--teacher", default=None, help="teacher model folder for distillation")
    p.add_argument("--epochs", type=int, default=None, help="override recover.epochs")
    return p


def recover_settings(recipe: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(recipe.get("recover") or {})
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    cfg["train"] = dict(recipe.get("train") or {})  # base trainer settings (batch size, ...)
    return cfg


def load_teacher(recipe: dict[str, Any], teacher_dir: str | None) -> Any:
    from compress.models.load import load_detector, load_detector_dir

    if teacher_dir:
        return load_detector_dir(teacher_dir)
    if "model" in recipe:
        return load_detector(recipe["model"])
    return None


def run_recovery(
    args: argparse.Namespace, recipe: dict[str, Any], cfg: dict[str, Any], out: Path
) -> tuple[Any, dict, dict]:
    """(recovered detector, method report, inputs) for the chosen method or the comparison."""
    from compress.recipe import load_inputs
    from compress.recover.compare import compare_methods, start_point
    from compress.recover.methods import NEEDS_TEACHER, get_method

    method = args.method or cfg.get("method") or "finetune"
    detector, train_ds, val_ds = load_inputs(recipe, args.model)
    wants_teacher = args.compare or method in NEEDS_TEACHER
    teacher = load_teacher(recipe, args.teacher) if wants_teacher else None
    if args.compare:
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        model, report = compare_methods(
            detector, train_ds, val_ds, cfg, out / "compare", teacher, methods
        )
        before = report["start"]
    else:
        before = start_point(detector, val_ds, int(cfg["train"].get("batch_size", 8)))
        model, report = get_method(method)(detector, train_ds, val_ds, cfg, out / method, teacher)
    inputs = {
        "recipe": {**file_record(args.recipe), "profile": args.profile},
        "model": {
            p.name: file_record(p) for p in sorted(Path(args.model).iterdir()) if p.is_file()
        },
        "teacher": args.teacher or ("recipe model" if teacher is not None else None),
    }
    return model, {**report, "before": before}, inputs


def main(args: argparse.Namespace) -> int:
    from compress.evaluate import model_figures
    from compress.models.load import save_detector
    from compress.recipe import load_recipe

    if args.methods and not args.compare:
        raise SystemExit("recover: --methods only goes with --compare")
    if args.method and args.compare:
        raise SystemExit("recover: give --method or --compare, not both")
    recipe = load_recipe(args.recipe, args.profile)
    cfg = recover_settings(recipe, args)
    info = init_distributed(cfg["train"].get("device", "auto"))
    out = Path(args.out)
    model, report, inputs = run_recovery(args, recipe, cfg, out)
    if info.is_main:
        save_detector(model.cpu(), out / "model")
        best = report.get("best") or {}
        if args.compare:
            best = next(r for r in report["table"] if r["method"] == report["best_method"])
        figures = {
            "method": report.get("best_method", report["method"]),
            "AP50_before": report["before"]["AP50"],
            "AP50_95_before": report["before"]["AP50_95"],
            "AP50": best.get("AP50"),
            "AP50_95": best.get("AP50_95"),
            **model_figures(model),
            "input_size": list(model.input_size),
        }
        write_json(
            out / "report.json",
            {"stage": "recover", "inputs": inputs, "figures": figures, "recovery": report},
        )
        print(
            f"recover: {figures['method']} AP50 {figures['AP50_before']} -> {figures['AP50']}; wrote {out / 'report.json'}"
        )
    cleanup_distributed()
    return 0
