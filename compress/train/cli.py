"""Train or fine-tune a detector from a recipe (one process, or DDP under torchrun).

    python -m compress train --recipe R [--profile P] --out DIR [--resume]

Loads the model (`model:` section, or `--model DIR` to continue from a saved model folder)
and the data (`data:`), trains with the `train:` section and writes into DIR:
`final/` and `best/` model folders (save_detector), `last.pt` / `best.pt` / `history.json`
from the trainer, and `report.json` (inputs with sha256, settings, history, figures).
Under `torchrun --nproc_per_node N -m compress train ...` the same command trains with DDP.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from compress.io import file_record, write_json
from compress.train.distributed import cleanup_distributed, init_distributed


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--recipe", required=True, help="YAML recipe (model, data, train sections)")
    p.add_argument("--profile", default=None, help="recipe profile: smoke, quick, full, ...")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=None, help="start from this model folder instead of `model:`")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt exactly")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out malformed labels and unreadable images (counted and listed) instead of stopping",
    )
    return p


def train_settings(recipe: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(recipe.get("train") or {})
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if args.device is not None:
        cfg["device"] = args.device
    cfg["resume"] = bool(args.resume)
    return cfg


def write_models(detector: Any, out: Path, history: dict[str, Any]) -> dict[str, Any]:
    """final/ (the trained weights) and best/ (the best evaluated ones, when kept)."""
    from compress.evaluate import model_figures
    from compress.models.load import save_detector
    from compress.train.engine import load_best

    save_detector(detector, out / "final")
    models = {"final": "final", "use": "final"}
    if history.get("best"):
        best = copy.deepcopy(detector).cpu()
        load_best(best, out)
        save_detector(best, out / "best")
        models.update(best="best", use="best")
    return {
        "models": models,
        **model_figures(detector.cpu()),
        "input_size": list(detector.input_size),
    }


def main(args: argparse.Namespace) -> int:
    from compress.recipe import load_inputs, load_recipe
    from compress.train.engine import train
    from compress.train.reporting import dataset_fingerprint, model_inputs

    recipe = load_recipe(args.recipe, args.profile)
    if args.skip_bad:
        recipe["data"] = {**(recipe.get("data") or {}), "skip_bad": True}
    cfg = train_settings(recipe, args)
    info = init_distributed(cfg.get("device", "auto"))
    out = Path(args.out)
    detector, train_ds, val_ds = load_inputs(recipe, args.model, need_val=False)
    history = train(detector, train_ds, val_ds, cfg, out)
    if info.is_main:
        figures = write_models(detector, out, history)
        best = (history.get("best") or {}).get("metrics", {})
        report = {
            "stage": "train",
            "inputs": {
                "recipe": {**file_record(args.recipe), "profile": args.profile},
                "model": model_inputs(recipe.get("model"), args.model),
                "train_data": dataset_fingerprint(train_ds),
                "val_data": dataset_fingerprint(val_ds),
            },
            "settings": {
                **history["config"],
                "world_size": history["world_size"],
                "device": history["device"],
            },
            "figures": {
                **figures,
                "AP50": best.get("AP50"),
                "AP50_95": best.get("AP50_95"),
                "best_epoch": (history.get("best") or {}).get("epoch"),
                "final_loss": (history.get("final") or {}).get("loss"),
                "images_seen": history["images_seen"],
                "wall_s": history["wall_s"],
            },
            "history": {
                k: history[k] for k in ("epochs", "steps", "best", "resumed") if k in history
            },
        }
        write_json(out / "report.json", report)
        print(
            f"train: wrote {out / 'report.json'} (AP50 {report['figures']['AP50']}, use {out / figures['models']['use']})"
        )
    cleanup_distributed()
    return 0
