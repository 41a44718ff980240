"""`python -m nanoprune --recipe R --profile P --out DIR`: what `make prune-yolo` runs.

The compress pipeline's stages (`compress.pipeline.STAGES`: base, specialise, prune, evaluate,
ship, compare, versus) with two more between ship and compare, from the packages that own them:
  export    ONNX bundles of the unpruned and the shipped model (`export.onnx_export`)
  bench     onnxruntime latency of both, interleaved (`benchmarks.latency.measure_models`)
into one run folder with one `summary.json` / `summary.md`. It lives above the three packages
so that compress never imports export or benchmarks; the flags are the pipeline's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from benchmarks.latency import measure_models
from compress.io import write_json
from compress.models.load import load_detector_dir
from compress.pipeline import STAGES, Run, Skip, Stage, get_args_parser, main
from export.onnx_export import export_bundle


def stage_export(run: Run, out: Path) -> dict[str, Any]:
    """ONNX bundles of the unpruned model and of the model the run ships (`ship` stage;
    the pruned model when that stage did not run)."""
    if "base_model" not in run.paths:
        raise Skip("no base model (run the base stage with this one)")
    shipped = run.paths.get("shipped_model") or run.paths.get("pruned_model")
    cfg = dict(run.recipe.get("export") or {})
    opts = {
        "opset": int(cfg.get("opset", 13)),
        "simplify": bool(cfg.get("simplify", True)),
        "parity_images": cfg.get("parity_images"),
    }
    name = run.recipe["name"]
    reports = {}
    # "pruned" is the key later readers (benchmarks run, deploy) take the final bundle from
    # `--stages base,export` on a fresh folder exports the unpruned model alone
    todo = [("base", "base", run.paths["base_model"])]
    if shipped:
        todo.append(("pruned", "shipped", shipped))
    for tag, file_tag, folder in todo:
        path = out / f"{name}-{file_tag}.onnx"
        reports[tag] = export_bundle(
            load_detector_dir(folder).eval(), path, f"{name}-{file_tag}", **opts
        )
        run.paths[f"{tag}_onnx"] = str(path)
    return {
        "settings": opts,
        "bundles": {t: run.paths[f"{t}_onnx"] for t in reports},
        "reports": reports,
    }


def stage_bench(run: Run, out: Path) -> dict[str, Any]:
    if "pruned_onnx" not in run.paths:
        raise Skip("no ONNX bundles (the export stage did not run)")
    cfg = dict(run.recipe.get("bench") or {})
    result = measure_models(
        [run.paths["base_onnx"], run.paths["pruned_onnx"]],
        backend=cfg.get("backend", "ort"),
        threads=cfg.get("threads"),
        warmup=int(cfg.get("warmup", 10)),
        iterations=int(cfg.get("iterations", 100)),
        names=["base", "shipped"],
    )
    write_json(out / "latency.json", result)
    run.figures["latency"] = latency_summary(result)
    return {
        "settings": cfg,
        "summary": run.figures["latency"],
        "latency": str(out / "latency.json"),
    }


def latency_summary(result: dict[str, Any]) -> dict[str, Any]:
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


def stages() -> dict[str, Stage]:
    """compress's stages with export and bench after ship."""
    out: dict[str, Stage] = {}
    for name, fn in STAGES.items():
        out[name] = fn
        if name == "ship":
            out.update({"export": stage_export, "bench": stage_bench})
    return out


def run(argv: list[str] | None = None) -> int:
    registry = stages()
    parser = get_args_parser(registry=registry)
    parser.prog = "python -m nanoprune"
    return main(parser.parse_args(argv), registry)


if __name__ == "__main__":
    sys.exit(run())
