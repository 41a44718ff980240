"""`python -m compress pipeline --recipe R --profile P --out DIR`: a whole recipe, one run folder.

Stages, in order, each into `DIR/<stage>/` with its own `report.json`:
  base      load the model (person specialization from the recipe's `classes`), save it,
            evaluate it on the held-out images (AP50, AP50:95), count params and FLOPs
  prune     `compress.prune.methods.PRUNE_METHODS[prune.method]` (slimming: sparsity training,
            adaptive layer + channel pruning, recovery, in cycles), model + plots + report
  evaluate  the saved pruned model re-loaded from disk and evaluated on the same images
  export    ONNX bundles of the unpruned and the pruned model (`export.onnx_export`)
  bench     onnxruntime latency of both, interleaved (`benchmarks.latency.measure_models`)
A stage whose module is not installed is recorded as skipped with the reason; a failing stage
is recorded with its error and the stages that need it are skipped. `summary.json` and
`summary.md` gather the figures and name `final_model`.
"""

from __future__ import annotations

import argparse
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.io import atomic_write_text, file_record, read_json, write_json
from compress.recipe import load_recipe

log = logging.getLogger("compress.pipeline")


class Skip(Exception):
    """A stage cannot run here (its module is missing, or an earlier stage failed)."""


class Run:
    """State handed from stage to stage (models in memory, paths, figures)."""

    def __init__(self, recipe: dict[str, Any], out: Path) -> None:
        self.recipe, self.out = recipe, out
        self.base = self.pruned = self.train_ds = self.val_ds = None
        self.figures: dict[str, Any] = {}
        self.paths: dict[str, str] = {}
        # A run folder that already holds a pruned model lets the later stages re-run alone
        # (`--stages base,evaluate,compare`); a prune stage in this run replaces it.
        if (out / "prune" / "model" / "model.json").is_file():
            self.paths["pruned_model"] = str(out / "prune" / "model")


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"{module} is not available: {exc}") from None


def stage_base(run: Run, out: Path) -> dict[str, Any]:
    from compress.data.build import datasets_for
    from compress.models.load import load_detector, save_detector
    from compress.prune.slimming import figures

    r = run.recipe
    run.base = load_detector(r["model"])
    run.base.eval()
    run.train_ds, run.val_ds = datasets_for(
        run.base, r["data"], (r.get("train") or {}).get("augment")
    )
    if len(run.val_ds) == 0:
        raise ValueError(
            f"{r['_source']['path']}: data gives no held-out images (val_fraction: {r['data'].get('val_fraction')})"
        )
    from compress.prune.methods import make_evaluator

    metrics = make_evaluator(run.val_ds, r)(run.base)
    run.figures["base"] = figures(run.base, metrics)
    run.paths["base_model"] = str(save_detector(run.base, out / "model"))
    from compress.models.load import asset_path

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


def stage_prune(run: Run, out: Path) -> dict[str, Any]:
    import copy

    from compress.prune.methods import run_prune

    recipe = dict(run.recipe, _baseline=run.figures.get("base"))
    run.pruned, report = run_prune(copy.deepcopy(run.base), run.train_ds, run.val_ds, recipe, out)
    run.paths["pruned_model"] = report["model"]
    run.figures["prune"] = {
        "stop_reason": report.get("stop_reason"),
        "cycles": len(report.get("cycles", [])),
        "steps": [_cycle_steps(c) for c in report.get("cycles", [])],
    }
    if report.get("threshold_comparison"):
        run.figures["threshold_comparison"] = report["threshold_comparison"]
    # The method's full report (cycles, thresholds, per-layer widths) is this stage's report.
    return report


def _cycle_steps(c: dict[str, Any]) -> dict[str, Any]:
    """AP50 of one slimming cycle after each step, for the summary."""
    refit = (c.get("prune") or {}).get("reconstruct") or {}
    return {
        "cycle": c.get("cycle"),
        "sparse": (c.get("sparse") or {}).get("AP50"),
        "cut": (refit.get("before_refit") or {}).get("AP50"),
        "pruned": (c.get("pruned") or {}).get("AP50"),
        "recovered": (c.get("recovered") or {}).get("AP50"),
        "flops": (c.get("pruned") or {}).get("flops"),
        "note": c.get("recover_kept") or c.get("stopped") or "",
    }


def stage_evaluate(run: Run, out: Path) -> dict[str, Any]:
    from compress.models.load import load_detector_dir
    from compress.prune.methods import make_evaluator
    from compress.prune.slimming import figures

    if "pruned_model" not in run.paths:
        raise Skip("no pruned model (the prune stage did not finish)")
    model = load_detector_dir(run.paths["pruned_model"]).eval()
    metrics = make_evaluator(run.val_ds, run.recipe)(model)
    run.figures["pruned"] = figures(model, metrics)
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


def stage_export(run: Run, out: Path) -> dict[str, Any]:
    onnx_export = _need("export.onnx_export")
    from compress.models.load import load_detector_dir

    if "pruned_model" not in run.paths:
        raise Skip("no pruned model to export")
    cfg = dict(run.recipe.get("export") or {})
    opts = {
        "opset": int(cfg.get("opset", 13)),
        "simplify": bool(cfg.get("simplify", True)),
        "parity_images": cfg.get("parity_images"),
    }
    name = run.recipe["name"]
    reports = {}
    for tag, folder in (("base", run.paths["base_model"]), ("pruned", run.paths["pruned_model"])):
        path = out / f"{name}-{tag}.onnx"
        reports[tag] = onnx_export.export_bundle(
            load_detector_dir(folder).eval(), path, f"{name}-{tag}", **opts
        )
        run.paths[f"{tag}_onnx"] = str(path)
    return {
        "settings": opts,
        "bundles": {t: run.paths[f"{t}_onnx"] for t in reports},
        "reports": reports,
    }


def stage_bench(run: Run, out: Path) -> dict[str, Any]:
    latency = _need("benchmarks.latency")
    if "pruned_onnx" not in run.paths:
        raise Skip("no ONNX bundles (the export stage did not run)")
    cfg = dict(run.recipe.get("bench") or {})
    result = latency.measure_models(
        [run.paths["base_onnx"], run.paths["pruned_onnx"]],
        backend=cfg.get("backend", "ort"),
        threads=cfg.get("threads"),
        warmup=int(cfg.get("warmup", 10)),
        iterations=int(cfg.get("iterations", 100)),
        names=["base", "pruned"],
    )
    write_json(out / "latency.json", result)
    run.figures["latency"] = _latency_summary(result)
    return {
        "settings": cfg,
        "summary": run.figures["latency"],
        "latency": str(out / "latency.json"),
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
        teacher=run.base,
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
    import copy

    from compress.prune.methods import run_prune

    ratio = run.figures["pruned"]["flops"] / run.figures["base"]["flops"]
    prune_cfg = copy.deepcopy(spec)
    prune_cfg.setdefault("fitness", {})["target"] = round(ratio, 4)
    recipe = {**run.recipe, "prune": prune_cfg, "_baseline": run.figures.get("base")}
    _, report = run_prune(copy.deepcopy(run.base), run.train_ds, run.val_ds, recipe, out)
    main = run.recipe["prune"].get("method", "slimming")
    # Every prune method reports its final model's figures on these same held-out images.
    run.figures["versus"] = {main: run.figures["pruned"], prune_cfg["method"]: report["final"]}
    return {"flops_target": ratio, "side_by_side": run.figures["versus"], **report}


def _latency_summary(result: dict[str, Any]) -> dict[str, Any]:
    models = result.get("models") or []
    out: dict[str, Any] = {"threads": result.get("threads"), "backend": result.get("backend")}
    for m in models:
        lat = m.get("latency_ms") or {}
        out[m.get("name", "?")] = {
            "p50_ms": lat.get("p50"),
            "p90_ms": lat.get("p90"),
            "speedup_p50": m.get("speedup_p50"),
        }
    p50 = [(m.get("latency_ms") or {}).get("p50") for m in models]
    if len(p50) == 2 and all(p50):
        out["latency_ratio_p50"] = p50[1] / p50[0]
    return out


STAGES: dict[str, Callable[[Run, Path], dict[str, Any]]] = {
    "base": stage_base,
    "prune": stage_prune,
    "evaluate": stage_evaluate,
    "export": stage_export,
    "bench": stage_bench,
    "compare": stage_compare,
    "versus": stage_versus,
}
REQUIRED = {"base", "prune"}  # later stages cannot run without these


def run_pipeline(
    recipe: dict[str, Any], out: Path, stages: list[str] | None = None
) -> dict[str, Any]:
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
    for name in stages or list(STAGES):
        t0 = time.time()
        sdir = out / name
        entry: dict[str, Any]
        try:
            if broken:
                raise Skip(f"stage {broken!r} failed")
            report = STAGES[name](run, sdir)
            write_json(
                sdir / "report.json",
                {"stage": name, "seconds": round(time.time() - t0, 2), **report},
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
    summary["final_model"] = run.paths.get("pruned_model") or summary.get("final_model")
    summary["targets"] = _targets(summary["figures"], run.recipe.get("targets"))
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    return summary


def _merge_previous(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return summary
    previous = read_json(path)
    stages = {**previous.get("stages", {}), **summary["stages"]}
    return {**previous, **summary, "stages": stages, "figures": previous.get("figures", {})}


TARGET_DEFAULTS = {"flops_ratio": 0.40, "ap50_drop": 0.01, "latency_ratio": 0.45}


def _targets(fig: dict[str, Any], wanted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe's `targets:` (default: the YOLOv3-tiny ones of issue 4), measured by this
    run, met or not. A target set to null is not reported."""
    unknown = sorted(set(wanted or {}) - set(TARGET_DEFAULTS))
    if unknown:
        raise ValueError(
            f"targets: unknown key(s) {', '.join(unknown)}; known: {', '.join(TARGET_DEFAULTS)}"
        )
    t = {**TARGET_DEFAULTS, **(wanted or {})}
    r, lat = fig.get("ratios") or {}, fig.get("latency") or {}
    out = {}
    if r and t["flops_ratio"] is not None:
        out[f"flops_at_most_{t['flops_ratio']:.2f}x"] = {
            "value": round(r["flops_ratio"], 4),
            "met": r["flops_ratio"] <= t["flops_ratio"],
        }
    # pycocotools says AP -1 when there are no people to find
    if r and t["ap50_drop"] is not None and (fig.get("base") or {}).get("AP50", -1) >= 0:
        out[f"AP50_drop_at_most_{t['ap50_drop']}"] = {
            "value": round(r["AP50_delta"], 4),
            "met": r["AP50_delta"] >= -t["ap50_drop"],
        }
    if "latency_ratio_p50" in lat and t["latency_ratio"] is not None:
        out[f"ort_latency_at_most_{t['latency_ratio']:.2f}x"] = {
            "value": round(lat["latency_ratio_p50"], 4),
            "met": lat["latency_ratio_p50"] <= t["latency_ratio"],
        }
    return out


def summary_markdown(s: dict[str, Any]) -> str:
    lines = [
        f"# {s['recipe']} ({s['profile'] or 'base'} profile)",
        "",
        "| stage | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, e in s["stages"].items():
        note = e.get("reason") or e.get("error") or ""
        lines.append(
            f"| {name} | {e['status']} | {e['seconds']} | {note.replace('|', '/')[:120]} |"
        )
    fig = s.get("figures") or {}
    lines += ["", "| model | params | GFLOPs | AP50 | AP50:95 |", "|---|---|---|---|---|"]
    for tag in ("base", "pruned"):
        f = fig.get(tag)
        if f:
            lines.append(
                f"| {tag} | {f['params']:,} | {f['flops'] / 1e9:.3f} | {f.get('AP50', float('nan')):.4f} | {f.get('AP50_95', float('nan')):.4f} |"
            )
    if s.get("targets"):
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [
            f"| {k} | {v['value']} | {'yes' if v['met'] else 'NO'} |"
            for k, v in s["targets"].items()
        ]
    comp = fig.get("threshold_comparison")
    if comp:
        lines += ["", "Adaptive vs fixed-percentile threshold at equal FLOPs, same recovery:", ""]
        lines += [
            "| threshold | value | GFLOPs | AP50 pruned | AP50 recovered |",
            "|---|---|---|---|---|",
        ]
        for tag, c in comp.items():
            rec = c.get("recovered") or {}
            lines.append(
                f"| {tag} ({c['threshold']['method']}) | {c['threshold']['value']:.4g} | {c['pruned']['flops'] / 1e9:.3f} "
                f"| {c['pruned'].get('AP50', float('nan')):.4f} | {rec.get('AP50', float('nan')):.4f} |"
            )
    if (fig.get("prune") or {}).get("cycles"):  # slimming's cycles (a search has none)
        lines += [
            "",
            f"Prune cycles: {fig['prune']['cycles']}, stopped: {fig['prune']['stop_reason']}",
        ]
        steps = fig["prune"].get("steps") or []
        if steps:
            lines += [
                "",
                "AP50 after each step (cut = channels removed, before the least-squares refit):",
                "",
                "| cycle | GFLOPs | sparsity-trained | cut | pruned (refitted) | recovered | note |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {c['cycle']} | {_num(c['flops'] / 1e9 if c.get('flops') else None)} "
                f"| {_num(c['sparse'])} | {_num(c['cut'])} | {_num(c['pruned'])} "
                f"| {_num(c['recovered'])} | {c['note']} |"
                for c in steps
            ]
    lat = fig.get("latency")
    if lat:
        lines += [
            "",
            f"Latency (onnxruntime, {lat.get('threads')} threads): "
            + ", ".join(
                f"{k} p50 {v['p50_ms']:.2f} ms"
                for k, v in lat.items()
                if isinstance(v, dict) and "p50_ms" in v
            ),
        ]
    vs = fig.get("versus")
    if vs:
        lines += [
            "",
            "Prune methods from the same model to the same FLOPs, same recovery:",
            "",
            "| method | GFLOPs | AP50 | AP50:95 |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {f['flops'] / 1e9:.3f} | {_num(f.get('AP50'))} | {_num(f.get('AP50_95'))} |"
            for m, f in vs.items()
        ]
    rc = fig.get("recovery_comparison")
    if rc:
        lines += [
            "",
            f"Recovery methods on the pruned model, {rc['budget_images']} training images each "
            f"(best: {rc['best_method']}):",
            "",
            "| method | AP50 | AP50:95 | wall s | images seen |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['method']} | {_num(r['AP50'])} | {_num(r['AP50_95'])} | {r['wall_s']:.0f} | {r['images_seen']} |"
            for r in rc["table"]
        ]
    lines += ["", f"Final model: `{s.get('final_model')}`", ""]
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run a recipe end to end into one run folder", add_help=add_help
    )
    p.add_argument("--recipe", required=True, help="YAML recipe (configs/*.yaml)")
    p.add_argument("--profile", default=None, help="profile of the recipe: smoke, quick, full")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe name>)")
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stages = args.stages.split(",") if args.stages else None
    bad = [s for s in stages or [] if s not in STAGES]
    if bad:
        raise SystemExit(f"unknown stage(s) {bad}; known: {', '.join(STAGES)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.profile)
    out = Path(args.out or Path("runs") / recipe["name"])
    summary = run_pipeline(recipe, out, stages)
    print((out / "summary.md").read_text())
    return 0 if all(e["status"] != "failed" for e in summary["stages"].values()) else 1
