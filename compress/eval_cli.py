"""Score a model (AP50, AP50:95, params, FLOPs) or any detector's COCO-style results JSON.

`python -m compress eval` evaluates the person class (or the data's classes) with
pycocotools; with --results it needs no model, so a peer's detections score the same way.

    python -m compress eval --model runs/yolov3-tiny-person/prune/model --data configs/yolov3-tiny-person.yaml
    python -m compress eval --model configs/yolov3-tiny-person.yaml --subset all --out eval.json
    python -m compress eval --results dets.json --format yolo --root coco128 --split train2017
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from compress.io import file_record, write_json

SUBSETS = ("auto", "all", "train", "val")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    src = p.add_argument_group("what to score (one of)")
    src.add_argument(
        "--model", help="model folder with model.json, or a recipe YAML (its model: section)"
    )
    src.add_argument(
        "--results",
        help="COCO-style results JSON (image_id or file_name, category_id 1..C, bbox xywh, score)",
    )
    data = p.add_argument_group("data (a recipe's data: section, or the flags below)")
    data.add_argument(
        "--data",
        help="recipe YAML whose data: section names the images (default: --model when it is a recipe)",
    )
    data.add_argument("--profile", help="recipe profile (smoke, quick, full, ...)")
    data.add_argument("--format", choices=("yolo", "voc", "coco"), help="annotation format")
    data.add_argument("--root", help="dataset folder, relative to NANOPRUNE_ASSETS unless absolute")
    data.add_argument("--split", help="split name (train2017, val2017, trainval, ...)")
    data.add_argument("--classes", nargs="+", help="classes to score (default: person)")
    data.add_argument(
        "--names", help="names file mapping YOLO-txt class indices (default: COCO-80 order)"
    )
    data.add_argument("--annotations", help="COCO JSON annotation file (format coco)")
    data.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out malformed labels and unreadable images (counted and listed) instead of stopping",
    )
    data.add_argument(
        "--subset",
        choices=SUBSETS,
        default="auto",
        help="which images: the recipe's val part, its train part, or all (auto: val when the data has a split, else all)",
    )
    p.add_argument(
        "--resize",
        choices=("letterbox", "stretch"),
        help="preprocessing resize (default: the model's own); match another tool's to compare",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.001,
        help="keep detections at or above this score (COCO AP wants a low one)",
    )
    p.add_argument("--nms-iou", type=float, default=None, help="NMS IoU (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--save-results", help="also write the model's detections as a COCO results JSON here"
    )
    p.add_argument("--out", help="write the report JSON here")
    return p


def _recipe(path: str | None, profile: str | None) -> dict[str, Any] | None:
    if path and Path(path).suffix.lower() in (".yaml", ".yml"):
        from compress.recipe import load_recipe

        return load_recipe(path, profile)
    return None


def data_config(args: argparse.Namespace) -> dict[str, Any]:
    """The data section: a recipe's, with any flag given on the command line over it."""
    recipe = _recipe(args.data, args.profile) or _recipe(args.model, args.profile)
    if args.data and recipe is None:
        raise ValueError(
            f"--data {args.data}: expected a recipe YAML; for plain folders use --format/--root/--split"
        )
    cfg = dict(recipe.get("data") or {}) if recipe else {}
    for key in ("format", "root", "split", "classes", "names", "annotations"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if getattr(args, "skip_bad", False):
        cfg["skip_bad"] = True
    if not cfg.get("root"):
        raise ValueError("no data: pass --data RECIPE.yaml, or --root (with --format/--split)")
    return cfg


def select(data_cfg: dict[str, Any], subset: str):
    """The DetectionDataset to score (no transform: `predict` adds the model's own)."""
    from compress.data.build import build_datasets
    from compress.data.dataset import DetectionDataset
    from compress.data.readers import classes_of

    has_split = bool(data_cfg.get("val_split") or data_cfg.get("val_fraction"))
    subset = ("val" if has_split else "all") if subset == "auto" else subset
    if subset == "all":
        from compress.data.build import load_records

        records, _ = load_records(data_cfg)
        return DetectionDataset(records, classes_of(data_cfg)), subset
    train, val = build_datasets(data_cfg, 32)
    ds = val if subset == "val" else train
    if not len(ds):
        raise ValueError(
            f"the {subset} part of the data is empty (val_fraction={data_cfg.get('val_fraction')})"
        )
    return DetectionDataset(ds.records, ds.classes), subset


def load_model(path: str, profile: str | None):
    from compress.models.load import load_detector, load_detector_dir

    recipe = _recipe(path, profile)
    if recipe is not None:
        return load_detector(recipe["model"])
    return load_detector_dir(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from compress.data.records import DataError
    from compress.evaluate import coco_evaluate, model_figures, predict, read_results

    if bool(args.model) == bool(args.results):
        raise ValueError("pass exactly one of --model or --results")
    data_cfg = data_config(args)
    dataset, subset = select(data_cfg, args.subset)
    if not dataset.num_boxes:
        from compress.data.readers import classes_of

        raise DataError(
            f"nothing to score: the {len(dataset)} {subset} image(s) under {data_cfg.get('root')} "
            f"hold no {'/'.join(classes_of(data_cfg))} boxes, and AP is undefined without any"
        )
    report: dict[str, Any] = {
        "data": {**data_cfg, "subset": subset, "images": len(dataset), "boxes": dataset.num_boxes}
    }
    t0 = time.perf_counter()
    if args.results:
        results, dropped = read_results(args.results, dataset.records)
        report["results"] = {
            **file_record(args.results),
            "used": len(results),
            "dropped_other_images": dropped,
        }
    else:
        detector = load_model(args.model, args.profile)
        if getattr(args, "resize", None):
            detector.resize_mode = args.resize
        results = predict(
            detector, dataset, args.batch_size, args.score_threshold, args.nms_iou, args.device
        )
        h, w = detector.input_size
        report["model"] = {
            "path": args.model,
            "family": detector.family,
            "input_size": [h, w],
            "resize": detector.resize_mode,
            **model_figures(detector),
            "flops_note": "torch.utils.flop_counter: conv/matmul only, FLOPs = 2 x MACs",
            "score_threshold": args.score_threshold,
            "nms_iou": detector.default_nms_iou if args.nms_iou is None else args.nms_iou,
        }
        if args.save_results:
            write_json(args.save_results, results)
    report.update(coco_evaluate(dataset.to_coco(), results))
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def summary_line(report: dict[str, Any]) -> str:
    line = f"AP50 {report['AP50']:.3f}  AP50:95 {report['AP50_95']:.3f}  on {report['images']} images / {report['gt_boxes']} boxes"
    if "model" in report:
        m = report["model"]
        line += f"  params {m['params'] / 1e6:.2f} M  FLOPs {m['flops'] / 1e9:.2f} G @ {m['input_size'][0]}x{m['input_size'][1]}"
    return line


def main(args: argparse.Namespace) -> int:
    from compress.data.records import DataError
    from compress.recipe import RecipeError

    try:
        report = run(args)
    except (DataError, RecipeError, ValueError, FileNotFoundError) as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 2
    print(summary_line(report))
    if args.out:
        write_json(args.out, report)
    else:
        print(json.dumps({k: report[k] for k in ("AP50", "AP50_95")}, indent=None))
    return 0
