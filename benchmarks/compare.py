"""`python -m benchmarks compare a.json b.json ...`: speed-up and AP-delta table across runs.

Every model of every file becomes a row; the baseline is the first model of the first file
(or `--baseline NAME`). Speed-up is the baseline's median latency over the row's median
latency. Files measured on another device, thread count, power mode or backend are flagged,
because their ratio compares machines, not models. `--fail-below RATIO` exits 1 when a
non-baseline model is less than RATIO times faster, so CI can guard a speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.environment import COMPARABLE_KEYS
from edge_runtime.files import atomic_write_json


class CompareError(ValueError):
    pass


def load_models(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A latency JSON (or a bench run JSON holding one under "latency") -> (models, environment)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompareError(f"{path}: no such file") from None
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
    models = []
    for i, model in enumerate(data["models"]):
        lat = model.get("latency_ms") or {}
        if "p50" not in lat:
            raise CompareError(f"{path}: model #{i} ({model.get('name')}) has no latency_ms.p50")
        models.append(dict(model, _file=str(path)))
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


def build_table(models: list[dict[str, Any]], baseline: str | None = None) -> list[dict[str, Any]]:
    if baseline is None:
        base = models[0]
    else:
        matches = [m for m in models if m.get("name") == baseline]
        if not matches:
            names = ", ".join(str(m.get("name")) for m in models)
            raise CompareError(f"--baseline {baseline!r} is none of the models: {names}")
        base = matches[0]
    base_lat = base["latency_ms"]["p50"]
    base_ap = ap_of(base)
    rows = []
    for m in models:
        lat = m["latency_ms"]
        ap = ap_of(m)
        rows.append(
            {
                "name": m.get("name"),
                "file": m["_file"],
                "baseline": m is base,
                "p50_ms": lat["p50"],
                "p90_ms": lat.get("p90"),
                "fps": lat.get("fps", m.get("fps")),
                "speedup": base_lat / lat["p50"] if lat["p50"] > 0 else float("inf"),
                "flops": m.get("flops"),
                "AP50": ap,
                "AP50_delta": (ap - base_ap) if ap is not None and base_ap is not None else None,
            }
        )
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (reads as plain text in a terminal too)."""
    lines = [
        "| model | p50 ms | p90 ms | FPS | speed-up | GFLOPs | AP50 | dAP50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = f"{r['name']}{' (baseline)' if r['baseline'] else ''}"
        gflops = r["flops"] / 1e9 if r["flops"] else None
        delta = None if r["AP50_delta"] is None else f"{r['AP50_delta']:+.3f}"
        lines.append(
            f"| {name} | {_fmt(r['p50_ms'], '.2f')} | {_fmt(r['p90_ms'], '.2f')} | "
            f"{_fmt(r['fps'], '.1f')} | {_fmt(r['speedup'], '.2f')}x | {_fmt(gflops, '.2f')} | "
            f"{_fmt(r['AP50'], '.3f')} | {delta or '-'} |"
        )
    return "\n".join(lines)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("files", nargs="+", help="latency or bench JSON files")
    parser.add_argument("--baseline", help="model name to divide by (default: the first model)")
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
    warnings = environment_warnings(envs)
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
