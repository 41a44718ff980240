"""`python -m benchmarks run runs/<recipe>`: benchmark every model of a pipeline run and its peers.

What lands in `<run>/benchmarks/bench.json` (and what `python -m benchmarks report` draws):
- the run's models: the final (pruned) model, the unpruned model the recipe starts from and
  every intermediate model folder (prune cycles, ...), each as an ONNX bundle (the bundles of
  the pipeline's export stage are reused; others are exported with the recipe's settings);
- latency, A/B-interleaved, on one thread count (`benchmarks.latency`);
- speed on the same decoded video frames, interleaved, with OpenCV's HOG people detector;
- AP50 / AP50:95 on the recipe's held-out images, models scored through the edge runtime's
  `BundleDetector` (the deployed code) and HOG through the same COCO evaluation;
- the edge runtime loop (per-stage times) of the unpruned and the final model.
A part whose input is absent (no video, no labelled images) is skipped and listed in
`missing`, so the report says what it could not show instead of failing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import environment
from edge_runtime.user_errors import UserError

UNPRUNED, FINAL = "unpruned", "final"
OUT_DIR = "benchmarks"  # <run>/benchmarks: this verb's outputs (the pipeline owns <run>/bench)
OWN_DIRS = {OUT_DIR, "report"}


class RunError(UserError, ValueError):
    pass


def read_summary(run: Path) -> dict[str, Any]:
    path = run / "summary.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not JSON (line {exc.lineno}): {exc.msg}") from None


def run_recipe(
    run: Path, summary: dict[str, Any], recipe_path: str | None, profile: str | None
) -> dict[str, Any]:
    """The recipe the run was made with: --recipe, else the run's resolved recipe.json, else
    the recipe file summary.json records."""
    from compress.recipe import load_recipe

    if recipe_path:
        return load_recipe(recipe_path, profile)
    saved = run / "recipe.json"
    if saved.is_file():
        recipe = json.loads(saved.read_text(encoding="utf-8"))
        if isinstance(recipe, dict) and "model" in recipe:
            return recipe
    path = (summary.get("recipe_file") or {}).get("path")
    if path and Path(path).is_file():
        return load_recipe(path, profile or summary.get("profile"))
    raise RunError(
        f"{run}: no recipe.json and summary.json names no recipe file; pass --recipe configs/<name>.yaml"
    )


def _resolve(run: Path, path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    for cand in (p, run / p):
        if cand.exists():
            return cand
    return None


def model_folders(run: Path) -> list[Path]:
    """Every model folder (model.json) the pipeline wrote, oldest first."""
    found = [
        p.parent for p in run.rglob("model.json") if not OWN_DIRS & set(p.relative_to(run).parts)
    ]
    return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)))


def _slug(run: Path, folder: Path) -> str:
    rel = folder.relative_to(run) if folder.is_relative_to(run) else Path(folder.name)
    parts = [p for p in rel.parts if p != "model"] or [folder.name]
    return "-".join(parts)


def export_detector(detector, out: Path, name: str, settings: dict[str, Any]) -> Path:
    from export.onnx_export import export_bundle

    export_bundle(
        detector,
        out,
        name,
        opset=int(settings.get("opset", 13)),
        simplify=bool(settings.get("simplify", True)),
        parity_images=1,
    )
    return out


def _exported(run: Path) -> dict[str, str]:
    """{"base": onnx, "pruned": onnx} from the pipeline's export stage report, if it ran."""
    report = run / "export" / "report.json"
    try:
        bundles = json.loads(report.read_text(encoding="utf-8")).get("bundles") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return {k: str(_resolve(run, v)) for k, v in bundles.items() if _resolve(run, v)}


def collect_models(
    run: Path,
    summary: dict[str, Any],
    recipe: dict[str, Any],
    baseline_dir: str | None,
    max_models: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """[{name, role, model_dir, onnx}]: the unpruned model first, the final model last.

    Bundles the pipeline exported are used as they are (they are what ships); any other
    model folder is exported into <run>/benchmarks/models with the recipe's export settings."""
    from compress.models.load import load_detector, load_detector_dir

    models_dir = run / OUT_DIR / "models"
    settings = recipe.get("export") or {}
    name = recipe.get("name", "model")
    exported = _exported(run)
    missing: list[str] = []
    models: list[dict[str, Any]] = []

    def add(tag: str, role: str, folder: Path | None, shipped: str | None) -> None:
        """Append the model with its bundle; one that cannot be exported is named, not fatal."""
        onnx = Path(shipped) if shipped else models_dir / f"{tag}.onnx"
        if not onnx.is_file():
            try:
                det = load_detector_dir(folder) if folder else load_detector(recipe["model"])
                export_detector(det.eval(), onnx, f"{name}-{tag}", settings)
            except Exception as exc:  # ParityError and kin: a bundle that would mislead
                detail = " ".join(str(exc).split())[:240] or type(exc).__name__
                missing.append(
                    f"{tag} ({folder}): not measured, its ONNX export failed: "
                    f"{type(exc).__name__}: {detail}"
                )
                return
        models.append(
            {
                "name": tag,
                "role": role,
                "model_dir": str(folder) if folder else "the recipe's model: section",
                "onnx": str(onnx),
            }
        )

    base_dir = _resolve(run, baseline_dir or summary.get("baseline_model"))
    if base_dir is None and (run / "base" / "model" / "model.json").is_file():
        base_dir = run / "base" / "model"
    add(UNPRUNED, "unpruned", base_dir, None if baseline_dir else exported.get("base"))

    final_dir = _resolve(run, summary.get("final_model"))
    known = {p.resolve() for p in (base_dir, final_dir) if p}
    inter = [f for f in model_folders(run) if f.resolve() not in known]
    if final_dir is None:
        missing.append(
            f"{run}: summary.json names no final_model (did the prune stage finish?): "
            "only the unpruned model and the peers are measured"
        )
    if len(inter) > max_models:
        missing.append(
            f"{len(inter) - max_models} intermediate model(s) left out (--max-models {max_models})"
        )
        inter = inter[len(inter) - max_models :] if max_models > 0 else []
    for folder in inter:
        add(_slug(run, folder), "intermediate", folder, None)
    if final_dir is not None:
        if "pruned" not in exported:
            missing.append(
                "the pipeline's export stage left no pruned bundle: exporting it into "
                f"{OUT_DIR}/models with the recipe's settings"
            )
        add(FINAL, "final", final_dir, exported.get("pruned"))
    if not models:
        raise RunError(f"{run}: no model could be exported: " + "; ".join(missing))
    return models, missing


def bench_settings(recipe: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags over the recipe's `bench:` section over the defaults."""
    cfg = dict(recipe.get("bench") or {})

    def pick(flag: Any, key: str, default: Any) -> Any:
        return flag if flag is not None else cfg.get(key, default)

    return {
        "backend": pick(opts.backend, "backend", "ort"),
        "threads": int(pick(opts.threads, "threads", None) or environment.usable_cores()),
        "iterations": int(pick(opts.iterations, "iterations", 50)),
        "warmup": int(pick(opts.warmup, "warmup", 5)),
        "video": pick(opts.video, "video", "video/vtest.avi"),
        "video_frames": int(pick(opts.video_frames, "video_frames", 20)),
        "loop_frames": int(pick(opts.loop_frames, "loop_frames", 40)),
        "images": opts.images,
    }


def video_and_loops(
    out: dict[str, Any], models: list[dict[str, Any]], detectors, hog, s: dict[str, Any]
) -> None:
    """Models + HOG on the same decoded frames; the loop of the unpruned and final models."""
    from benchmarks.loop import measure_loop
    from benchmarks.video import time_on_frames
    from compress.paths import resolve_asset
    from edge_runtime.video import read_frames

    video = resolve_asset(s["video"])
    if not video.is_file():
        out["missing"].append(f"video {video} absent: no video speed, no loop stages, no HOG speed")
        return
    _log(f"video: {s['video_frames']} frames of {video.name}, models + HOG interleaved")
    frames = read_frames(video, s["video_frames"])
    runners = [(m["name"], d.detect) for m, d in zip(models, detectors)] + [("hog", hog.detect)]
    out["video"] = {
        "path": str(video),
        "frame_shape": list(frames[0].shape),
        "results": time_on_frames(runners, frames, warmup=1),
    }
    out["loops"] = {}
    for m in models:
        if m["role"] in ("unpruned", "final"):
            _log(f"loop: {m['name']}, {s['loop_frames']} frames")
            out["loops"][m["name"]] = measure_loop(
                m["onnx"], str(video), s["backend"], s["threads"], s["loop_frames"], name=m["name"]
            )


def accuracy(
    out: dict[str, Any],
    recipe: dict[str, Any],
    models: list[dict[str, Any]],
    detectors,
    hog,
    with_hog: bool,
    which: str,
) -> None:
    """AP50 / AP50:95 of every model (through the edge runtime) and of HOG on the same images."""
    from benchmarks.accuracy import evaluate_frames, labelled_images

    try:
        dataset = labelled_images(recipe, which=which)
    except Exception as exc:  # absent data is reported, not fatal: the speed figures still stand
        out["missing"].append(f"labelled images unavailable ({exc}): no AP rows")
        return
    out["ap"] = {}
    for m, det in zip(models, detectors):
        _log(f"AP: {m['name']} on {len(dataset.records)} images")
        det.postprocess.score_threshold = 0.001  # COCO AP ranks every candidate
        out["ap"][m["name"]] = evaluate_frames(det.detect, det.classes, dataset)
    if with_hog:
        _log(f"AP: hog on {len(dataset.records)} images")
        out["ap"]["hog"] = evaluate_frames(hog.detect, hog.classes, dataset)


def bench_run(
    run: Path, recipe: dict[str, Any], summary: dict[str, Any], opts: argparse.Namespace
) -> dict[str, Any]:
    """Everything `<run>/benchmarks/bench.json` holds (see the module docstring)."""
    import cv2

    from benchmarks.hog import HogPeopleDetector
    from benchmarks.latency import measure_models
    from edge_runtime.detector import BundleDetector

    s = bench_settings(recipe, opts)
    models, missing = collect_models(run, summary, recipe, opts.baseline_model, opts.max_models)
    out: dict[str, Any] = {
        "kind": "bench",
        "run": str(run),
        "recipe": recipe.get("name"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": s,
        "missing": missing,
        "bundles": models,
    }
    _log(
        f"latency: {len(models)} models x {s['iterations']} iterations, {s['threads']} threads, {s['backend']}"
    )
    out["latency"] = measure_models(
        [m["onnx"] for m in models],
        backend=s["backend"],
        threads=s["threads"],
        warmup=s["warmup"],
        iterations=s["iterations"],
        names=[m["name"] for m in models],
    )
    out["environment"] = out["latency"]["environment"]
    # OpenCV's own threads (HOG, resize, colour conversion) are fixed like onnxruntime's.
    cv2.setNumThreads(s["threads"])
    s["opencv_threads"] = cv2.getNumThreads()
    hog_live = HogPeopleDetector()  # OpenCV's sample settings: what a user would run live
    hog_ap = HogPeopleDetector(hit_threshold=-1.0, group_threshold=0)  # weak boxes too, for AP
    out["hog"] = {"live": hog_live.settings(), "ap": hog_ap.settings()}
    detectors = [
        BundleDetector(m["onnx"], backend=s["backend"], threads=s["threads"]) for m in models
    ]
    try:
        video_and_loops(out, models, detectors, hog_live, s)
        accuracy(out, recipe, models, detectors, hog_ap, not opts.no_hog, opts.images)
    finally:
        for det in detectors:
            det.close()
    for rec in out["latency"]["models"]:
        if rec["name"] in out.get("ap", {}):
            rec["ap"] = {k: out["ap"][rec["name"]][k] for k in ("AP50", "AP50_95")}
    out["table"] = table(out, models)
    return out


def table(out: dict[str, Any], models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model and peer: what the report's tables and plots read."""
    lat = {m["name"]: m for m in out["latency"]["models"]}
    video = (out.get("video") or {}).get("results", {})
    ap = out.get("ap") or {}
    rows = []
    for m in models + [{"name": "hog", "role": "peer (OpenCV HOG+SVM)", "onnx": None}]:
        name = m["name"]
        rec = lat.get(name, {})
        row = {
            "name": name,
            "role": m["role"],
            "onnx": m.get("onnx"),
            "flops": rec.get("flops"),
            "params": rec.get("params"),
            "latency_ms": rec.get("latency_ms"),
            "speedup_p50": rec.get("speedup_p50"),
            "video_ms": (video.get(name) or {}).get("latency_ms"),
            "loop": _loop_row((out.get("loops") or {}).get(name)),
            "AP50": (ap.get(name) or {}).get("AP50"),
            "AP50_95": (ap.get(name) or {}).get("AP50_95"),
        }
        if row["video_ms"] is None and row["latency_ms"] is None and row["AP50"] is None:
            continue
        rows.append(row)
    return rows


def _loop_row(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stats:
        return None
    return {
        "loop_fps": stats.get("loop_fps"),
        "model_fps": (stats.get("model_only") or {}).get("fps"),
        "stages": {k: v.get("mean_ms") for k, v in (stats.get("stages") or {}).items()},
        "power": stats.get("power"),
    }


def _log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("run", help="run folder of `python -m compress pipeline` (runs/<recipe>)")
    parser.add_argument("--recipe", help="recipe (default: the one summary.json records)")
    parser.add_argument("--profile", help="recipe profile")
    parser.add_argument(
        "--baseline-model", help="unpruned model folder (default: the recipe's model:)"
    )
    parser.add_argument(
        "--backend", choices=("auto", "ort", "trt"), help="default: recipe bench.backend or ort"
    )
    parser.add_argument("--threads", type=int, help="default: recipe bench.threads or usable cores")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--video", help="video for speed and loop (default video/vtest.avi)")
    parser.add_argument("--video-frames", type=int)
    parser.add_argument("--loop-frames", type=int)
    parser.add_argument(
        "--images", choices=("val", "all"), default="val", help="labelled images for AP"
    )
    parser.add_argument("--max-models", type=int, default=4, help="intermediate models at most")
    parser.add_argument(
        "--no-hog", action="store_true", help="skip the HOG peer's AP (slow on big sets)"
    )
    parser.add_argument("--out", help=f"default: <run>/{OUT_DIR}/bench.json")
    return parser


def main(args: argparse.Namespace) -> int:
    from compress.io import write_json

    run = Path(args.run)
    if not run.is_dir():
        print(
            f"error: {run}: no such run folder (make prune-yolo writes runs/<recipe>)",
            file=sys.stderr,
        )
        return 2
    try:
        summary = read_summary(run)
        recipe = run_recipe(run, summary, args.recipe, args.profile)
        result = bench_run(run, recipe, summary, args)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else run / OUT_DIR / "bench.json"
    write_json(out, result)
    from benchmarks.report import markdown_table

    print(markdown_table(result["table"]))
    for note in result["missing"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out}")
    return 0
