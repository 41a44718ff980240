"""`python -m benchmarks compare a.json b.json ...`: speed-up and AP-delta table across runs.

Every model of every file becomes a row. Like is compared with like: a row's speed-up is over
the baseline model (the first model of the first file, or `--baseline NAME`) measured in the
SAME file when that file has it, so two runs that each carry their own baseline are each
judged against it; only a file without the baseline borrows the first file's. A second ratio,
"vs first", divides the same model name's latency in the first file by this row's, so a run
compared with an earlier run of itself reads 1.00x per model. Files measured on another
device, thread count, power mode or backend, with other input sizes, iteration counts or
another set of models are flagged, because their ratio is not the models'. `--fail-below
RATIO` exits 1 when a non-baseline model is less than RATIO times faster than its baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.environment import COMPARABLE_KEYS
from edge_runtime.files import atomic_write_json
from edge_runtime.user_errors import UserError


class CompareError(UserError, ValueError):
    pass


def load_models(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A latency JSON (or a bench run JSON holding one under "latency") -> (models, environment)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompareError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CompareError(f"{path}: a binary file, not a benchmark JSON") from None
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path}: not JSON (line {exc.lineno}): {exc.msg}") from None
    if isinstance(data, dict) and "models" not in data and isinstance(data.get("latency"), dict):
        data = data["latency"]
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise CompareError(
            f"{path}: not a benchmark JSON (expected a 'models' list from "
            "`python -m benchmarks latency` or a bench run's 'latency' section)"
        )
    env = dict(data.get("environment") or {})
    # The run's settings live at top level; they decide comparability as much as the device.
    for key in ("backend", "threads"):
        if data.get(key) is not None:
            env[key] = data[key]
    # Not the machine's but the run's: a ratio across files with other values is not the models'.
    run = {"iterations": data.get("iterations")}
    models = []
    for i, model in enumerate(data["models"]):
        lat = model.get("latency_ms") or {}
        if "p50" not in lat:
            raise CompareError(f"{path}: model #{i} ({model.get('name')}) has no latency_ms.p50")
        models.append(dict(model, _file=str(path), _run=run))
    return models, env


def environment_warnings(envs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One line per comparable field that differs from the first file's environment."""
    if len(envs) < 2:
        return []
    ref_name, ref = envs[0]
    warnings = []
    for name, env in envs[1:]:
        for key in COMPARABLE_KEYS:
            if env.get(key) != ref.get(key):
                warnings.append(
                    f"{name}: {key} = {env.get(key)!r} differs from {ref_name} ({ref.get(key)!r}); "
                    "the ratio mixes machines or settings"
                )
    return warnings


def ap_of(model: dict[str, Any], key: str = "AP50") -> float | None:
    ap = model.get("ap") or {}
    value = ap.get(key)
    return float(value) if value is not None else None


def _p50(model: dict[str, Any] | None) -> float | None:
    return None if model is None else model["latency_ms"]["p50"]


def _ratio(reference: float | None, value: float) -> float | None:
    if reference is None:
        return None
    return reference / value if value > 0 else float("inf")


def _load_id(model: dict[str, Any]) -> int:
    return id(model.get("_run")) if "_run" in model else hash(model["_file"])


def build_table(models: list[dict[str, Any]], baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per model; speed-up over the baseline of the same file (else the first file's)
    and "vs_first" over the same model name in the first file."""
    name = models[0].get("name") if baseline is None else baseline
    # Files are told apart by the load that read them (a file may be given twice).
    by_file: dict[int, dict[Any, dict[str, Any]]] = {}
    for m in models:
        by_file.setdefault(_load_id(m), {}).setdefault(m.get("name"), m)
    first = next(iter(by_file.values()))
    fallback = next((f[name] for f in by_file.values() if name in f), None)
    if fallback is None:
        names = ", ".join(str(m.get("name")) for m in models)
        raise CompareError(f"--baseline {baseline!r} is none of the models: {names}")
    rows = []
    for m in models:
        base = by_file[_load_id(m)].get(name, fallback)
        lat, ap, base_ap = m["latency_ms"], ap_of(m), ap_of(base)
        same = first.get(m.get("name"))
        rows.append(
            {
                "name": m.get("name"),
                "file": m["_file"],
                "baseline": m is base,
                "baseline_file": base["_file"],
                "p50_ms": lat["p50"],
                "p90_ms": lat.get("p90"),
                "fps": lat.get("fps", m.get("fps")),
                "speedup": _ratio(_p50(base), lat["p50"]),
                "vs_first": None if same is None or same is m else _ratio(_p50(same), lat["p50"]),
                "flops": m.get("flops"),
                "AP50": ap,
                "AP50_delta": (ap - base_ap) if ap is not None and base_ap is not None else None,
            }
        )
    return rows


def run_warnings(models: list[dict[str, Any]]) -> list[str]:
    """Lines for files whose models, input sizes or iteration counts differ from the first's."""
    files: dict[int, list[dict[str, Any]]] = {}
    for m in models:
        files.setdefault(_load_id(m), []).append(m)
    if len(files) < 2:
        return []
    ref, *others = files.values()
    ref_name = ref[0]["_file"]
    ref_shapes = {m.get("name"): m.get("input_shape") for m in ref}
    warnings = []
    for group in others:
        name = group[0]["_file"]
        missing = sorted(set(map(str, ref_shapes)) - {str(m.get("name")) for m in group})
        extra = sorted({str(m.get("name")) for m in group} - set(map(str, ref_shapes)))
        if missing or extra:
            warnings.append(
                f"{name}: models differ from {ref_name} (only in {ref_name}: "
                f"{', '.join(missing) or '-'}; only here: {', '.join(extra) or '-'})"
            )
        for m in group:
            ref_shape = ref_shapes.get(m.get("name"))
            if m.get("name") in ref_shapes and m.get("input_shape") != ref_shape:
                warnings.append(
                    f"{name}: {m.get('name')} input {m.get('input_shape')} differs from "
                    f"{ref_name} ({ref_shape}); the ratio mixes input sizes"
                )
        iters = (group[0].get("_run") or {}).get("iterations")
        ref_iters = (ref[0].get("_run") or {}).get("iterations")
        if iters != ref_iters:
            warnings.append(
                f"{name}: {iters} iterations against {ref_iters} in {ref_name}; "
                "medians over other sample sizes"
            )
    return warnings


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (reads as plain text in a terminal too)."""
    lines = [
        "| file | model | p50 ms | p90 ms | FPS | speed-up | vs first | GFLOPs | AP50 | dAP50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = f"{r['name']}{' (baseline)' if r['baseline'] else ''}"
        vs_first = "-" if r["vs_first"] is None else f"{r['vs_first']:.2f}x"
        gflops = r["flops"] / 1e9 if r["flops"] else None
        delta = None if r["AP50_delta"] is None else f"{r['AP50_delta']:+.3f}"
        lines.append(
            f"| {Path(r['file']).name} | {name} | {_fmt(r['p50_ms'], '.2f')} | "
            f"{_fmt(r['p90_ms'], '.2f')} | {_fmt(r['fps'], '.1f')} | {_fmt(r['speedup'], '.2f')}x "
            f"| {vs_first} | {_fmt(gflops, '.2f')} | "
            f"{_fmt(r['AP50'], '.3f')} | {delta or '-'} |"
        )
    return "\n".join(lines)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("files", nargs="+", help="latency or bench JSON files")
    parser.add_argument(
        "--baseline",
        help="model name each file's rows are divided by (default: the first file's first model)",
    )
    parser.add_argument(
        "--fail-below",
        type=float,
        metavar="RATIO",
        help="exit 1 if a non-baseline model's speed-up is below RATIO",
    )
    parser.add_argument(
        "--strict-env",
        action="store_true",
        help="exit 1 when environments differ (instead of warning)",
    )
    parser.add_argument("--json", dest="json_out", help="also write the table as JSON here")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.fail_below is not None and args.fail_below <= 0:
        raise SystemExit("--fail-below must be a positive ratio, e.g. 1.5")
    models: list[dict[str, Any]] = []
    envs = []
    try:
        for f in args.files:
            file_models, env = load_models(f)
            models.extend(file_models)
            envs.append((f, env))
        rows = build_table(models, args.baseline)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    warnings = environment_warnings(envs) + run_warnings(models)
    print(format_table(rows))
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    failing = [
        r
        for r in rows
        if not r["baseline"] and args.fail_below is not None and r["speedup"] < args.fail_below
    ]
    if args.json_out:
        atomic_write_json(
            args.json_out,
            {
                "rows": rows,
                "warnings": warnings,
                "fail_below": args.fail_below,
                "failing": [r["name"] for r in failing],
            },
        )
    for r in failing:
        print(
            f"FAIL: {r['name']} is {r['speedup']:.2f}x the baseline, below --fail-below "
            f"{args.fail_below}",
            file=sys.stderr,
        )
    if failing:
        return 1
    if warnings and args.strict_env:
        return 1
    return 0
