"""`python -m benchmarks report runs/<recipe>`: Markdown + self-contained HTML of a run.

Reads only files: `<run>/benchmarks/bench.json` (`python -m benchmarks run`), any other latency
or loop JSON in `<run>/benchmarks/` or `<run>/bench/` (the pipeline's latency stage, or a
measurement taken on the Nano and copied back),
`<run>/summary.json` and every `<run>/*/report.json` (the prune report's per-layer widths).
Writes `<run>/report/report.md` (+ PNGs beside it) and `<run>/report/report.html`, whose
plots are embedded as base64 PNG: it opens in a browser with no network. Whatever is absent
is named in a "Not in this report" section instead of failing the report.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import plots
from edge_runtime.power import NOT_MEASURED
from edge_runtime.power import describe as describe_power

BENCH_DIR = "benchmarks"  # where `python -m benchmarks run` writes (benchmarks.run.OUT_DIR)

HTML_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    ".note{color:#8a6d3b}"
)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The model/peer table of a bench JSON (`benchmarks.run.table`)."""
    out = [
        "| model | role | GFLOPs | params (M) | p50 ms | p90 ms | speed-up | video ms/frame | loop FPS | AP50 | AP50:95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lat, vid, loop = r.get("latency_ms") or {}, r.get("video_ms") or {}, r.get("loop") or {}
        out.append(
            f"| {r['name']} | {r['role']} | {_fmt(r['flops'] / 1e9 if r.get('flops') else None)} | "
            f"{_fmt(r['params'] / 1e6 if r.get('params') else None)} | {_fmt(lat.get('p50'))} | "
            f"{_fmt(lat.get('p90'))} | {_fmt(r.get('speedup_p50'))}{'x' if r.get('speedup_p50') else ''} | "
            f"{_fmt(vid.get('p50'))} | {_fmt(loop.get('loop_fps'), '.1f')} | {_fmt(r.get('AP50'), '.3f')} | "
            f"{_fmt(r.get('AP50_95'), '.3f')} |"
        )
    return "\n".join(out)


def _md_generic(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def stage_reports(run: Path) -> dict[str, dict[str, Any]]:
    """{stage folder: report.json} for every stage of the run (bench/ and report/ excluded)."""
    out = {}
    for path in sorted(run.glob("*/report.json")):
        if path.parent.name in (BENCH_DIR, "report"):
            continue
        data = _load(path)
        if isinstance(data, dict):
            out[path.parent.name] = data
    return out


def per_layer_series(prune_report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every `per_layer` list (before/after channels) in a prune report, labelled by cycle."""
    series = []
    for i, cycle in enumerate(prune_report.get("cycles") or []):
        rows = (cycle.get("prune") or {}).get("per_layer")
        if rows:
            series.append((f"after cycle {cycle.get('cycle', i + 1)}", rows))
    if not series:
        rows = prune_report.get("per_layer") or (prune_report.get("prune") or {}).get("per_layer")
        if rows:
            series.append(("after pruning", rows))
    ok = all(
        isinstance(r, dict) and {"layer", "before", "after"} <= set(r)
        for _, rows in series
        for r in rows
    )
    return series if ok else []


def extra_measurements(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """Latency / loop JSONs beside bench.json or in the pipeline's bench stage (e.g. copied
    from the Nano), as (folder/name, data)."""
    out = []
    for folder in (BENCH_DIR, "bench"):
        for path in sorted((run / folder).glob("*.json")):
            data = _load(path)
            kind = data.get("kind") if isinstance(data, dict) else None
            if path.name != "bench.json" and kind in ("latency", "loop"):
                out.append((f"{folder}/{path.name}", data))
    return out


def _stage_figures(summary: dict[str, Any], reports: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Rows (stage, AP50, AP50:95, GFLOPs, params M) from summary.json stages or stage reports."""
    stages = summary.get("stages")
    items: list[tuple[str, dict[str, Any]]] = []
    figs = summary.get("figures")
    if isinstance(figs, dict):
        items = [
            (k, {"figures": v})
            for k, v in figs.items()
            if isinstance(v, dict) and ("flops" in v or "AP50" in v)
        ]
    if items:
        pass
    elif isinstance(stages, dict):
        items = [(k, v) for k, v in stages.items() if isinstance(v, dict)]
    elif isinstance(stages, list):
        items = [
            (str(s.get("name", s.get("stage", i))), s)
            for i, s in enumerate(stages)
            if isinstance(s, dict)
        ]
    if not items:
        items = list(reports.items())
    rows = []
    for name, data in items:
        fig = (
            data.get("figures")
            if isinstance(data.get("figures"), dict)
            else data.get("final", data)
        )
        fig = fig if isinstance(fig, dict) else {}
        flops = fig.get("flops")
        params = fig.get("params")
        rows.append(
            [
                name,
                fig.get("AP50"),
                fig.get("AP50_95"),
                flops / 1e9 if flops else None,
                params / 1e6 if params else None,
            ]
        )
    return rows


def build(run: Path) -> dict[str, Any]:
    """Everything the report shows: sections of Markdown/HTML text and PNG figures."""
    bench = _load(run / BENCH_DIR / "bench.json")
    summary = _load(run / "summary.json") or {}
    reports = stage_reports(run)
    missing: list[str] = []
    figures: dict[str, bytes] = {}
    sections: list[tuple[str, str]] = []

    if not isinstance(bench, dict):
        missing.append(
            f"{run}/bench/bench.json: no benchmark yet (run `python -m benchmarks run {run}`)"
        )
        bench = {}
    missing += bench.get("missing", [])
    rows = bench.get("table") or []
    env = bench.get("environment") or {}
    if rows:
        s = bench.get("settings", {})
        sections.append(
            (
                "Models and peers",
                markdown_table(rows) + "\n\n"
                f"Latency: model only, {s.get('iterations')} A/B-interleaved iterations, "
                f"{s.get('threads')} threads, backend {s.get('backend')}. Video: per-frame "
                f"detect (pre + infer + NMS) on {s.get('video_frames')} frames of the same "
                f"video, interleaved with the HOG peer. AP: {s.get('images')} images of the "
                "recipe, COCO-style (pycocotools), models scored through the edge runtime.",
            )
        )
        lat_rows = [
            {
                "name": r["name"],
                "role": r["role"],
                "p50": r["latency_ms"]["p50"],
                "p90": r["latency_ms"]["p90"],
            }
            for r in rows
            if r.get("latency_ms")
        ]
        vid_rows = [
            {
                "name": r["name"],
                "role": r["role"],
                "p50": r["video_ms"]["p50"],
                "p90": r["video_ms"]["p90"],
            }
            for r in rows
            if r.get("video_ms")
        ]
        figures["latency"] = plots.latency_bars(
            [
                ("model latency (ONNX, infer only)", lat_rows),
                ("per frame on the video (incl. HOG)", vid_rows),
            ]
        )
        speed_key = "video_ms" if vid_rows else "latency_ms"
        ap_rows = [
            {
                "name": r["name"],
                "role": r["role"],
                "AP50": r["AP50"],
                "fps": 1000.0 / r[speed_key]["p50"],
            }
            for r in rows
            if r.get("AP50") is not None and r.get(speed_key)
        ]
        if len(ap_rows) >= 1:
            figures["ap_vs_fps"] = plots.ap_vs_fps(
                ap_rows,
                "FPS per frame on the video (1000 / p50)" if vid_rows else "model FPS (1000 / p50)",
            )
        else:
            missing.append("no AP figures: no AP vs FPS plot")
    loops = {
        r["name"]: r["loop"]["stages"] for r in rows if r.get("loop") and r["loop"].get("stages")
    }
    for name, data in extra_measurements(run):
        if data["kind"] == "loop":
            for m in data.get("models", []):
                loops[f"{m.get('name')} ({name})"] = {
                    k: v.get("mean_ms") for k, v in (m.get("stages") or {}).items()
                }
    if loops:
        figures["stages"] = plots.stage_bars(loops)
    else:
        missing.append("no loop measurements: no per-stage bars")

    prune = reports.get("prune")
    series = per_layer_series(prune) if prune else []
    if series:
        figures["layers"] = plots.layer_widths(series)
    else:
        missing.append(
            f"{run}/prune/report.json: absent or without per-layer channels: no layer-width plot"
        )

    fig_rows = _stage_figures(summary, reports)
    if fig_rows:
        sections.append(
            (
                "Pipeline stages",
                _md_generic(["stage", "AP50", "AP50:95", "GFLOPs", "params (M)"], fig_rows),
            )
        )
    else:
        missing.append(f"{run}: no summary.json stages and no stage report.json: no stage table")
    targets = summary.get("targets")
    if isinstance(targets, dict) and targets:
        sections.append(
            (
                "Targets",
                _md_generic(
                    ["target", "measured", "met"],
                    [
                        [k, v.get("value"), "yes" if v.get("met") else "NO"]
                        for k, v in targets.items()
                        if isinstance(v, dict)
                    ],
                ),
            )
        )
    for name, data in extra_measurements(run):
        sections.append((f"Extra measurement: {name}", _extra_table(data)))
    if env:
        power = env.get("power_mode") or "-"
        watts = [
            f"{r['name']}: {describe_power(r['loop'].get('power'))}"
            for r in rows
            if r.get("loop") and (r["loop"].get("power") or {}).get("measured")
        ]
        sections.append(
            (
                "Environment",
                _md_generic(
                    [
                        "device",
                        "CPU",
                        "usable cores",
                        "GPU",
                        "power mode",
                        "onnxruntime",
                        "TensorRT",
                        "Python",
                    ],
                    [
                        [
                            str(env.get("device")),
                            str(env.get("cpu_model")),
                            str(env.get("cpu_usable")),
                            ", ".join(env.get("gpu") or []) or "-",
                            str(power),
                            str((env.get("libraries") or {}).get("onnxruntime")),
                            str((env.get("libraries") or {}).get("tensorrt")),
                            str((env.get("libraries") or {}).get("python")),
                        ]
                    ],
                )
                + "\n\n"
                + (
                    "; ".join(watts) if watts else NOT_MEASURED + " (no tegrastats or INA3221 here)"
                ),
            )
        )
    return {
        "title": f"nanoprune benchmark report: {bench.get('recipe') or summary.get('name') or run.name}",
        "run": str(run),
        "sections": sections,
        "figures": figures,
        "missing": missing,
    }


def _power_cells(power: dict[str, Any] | None) -> list[Any]:
    """Mean watts, FPS per watt, mJ per frame: dashes where nothing was measured."""
    if not power or not power.get("measured"):
        return ["-", "-", "-"]
    return [
        (power.get("total") or {}).get("mean_w"),
        power.get("fps_per_watt"),
        power.get("mj_per_frame"),
    ]


def _extra_table(data: dict[str, Any]) -> str:
    env = data.get("environment") or {}
    head = f"{env.get('device')}, backend {data.get('backend')}, {data.get('threads')} threads, power mode {env.get('power_mode') or '-'}"
    if data["kind"] == "latency":
        head += f"; {describe_power(data.get('power'))} (all models, interleaved)"
    else:
        measured = [m for m in data.get("models", []) if (m.get("power") or {}).get("measured")]
        if not measured:
            head += f"; {NOT_MEASURED}"
    if data["kind"] == "latency":
        rows = [
            [
                m.get("name"),
                m["latency_ms"]["p50"],
                m["latency_ms"]["p90"],
                m["latency_ms"]["p99"],
                m["latency_ms"]["fps"],
                m.get("speedup_p50"),
            ]
            for m in data.get("models", [])
        ]
        return (
            head
            + "\n\n"
            + _md_generic(["model", "p50 ms", "p90 ms", "p99 ms", "FPS", "speed-up"], rows)
        )
    rows = [
        [m.get("name"), m.get("loop_fps"), (m.get("model_only") or {}).get("fps"), m.get("frames")]
        + _power_cells(m.get("power"))
        for m in data.get("models", [])
    ]
    return (
        head
        + "\n\n"
        + _md_generic(
            ["model", "loop FPS", "model-only FPS", "frames", "mean W", "FPS/W", "mJ/frame"], rows
        )
    )


FIGURE_TITLES = {
    "latency": "Latency (bars p50, whiskers p90)",
    "ap_vs_fps": "AP50 vs FPS (dashed: Pareto front)",
    "stages": "Loop time per stage",
    "layers": "Channels per layer (prune report)",
}


def to_markdown(doc: dict[str, Any], image_dir: str) -> str:
    parts = [f"# {doc['title']}", "", f"Run folder: `{doc['run']}`", ""]
    for title, text in doc["sections"]:
        parts += [f"## {title}", "", text, ""]
    for key, title in FIGURE_TITLES.items():
        if key in doc["figures"]:
            parts += [f"## {title}", "", f"![{title}]({image_dir}/{key}.png)", ""]
    if doc["missing"]:
        parts += ["## Not in this report", ""] + [f"- {m}" for m in doc["missing"]] + [""]
    return "\n".join(parts).rstrip("\n") + "\n"


def _md_table_to_html(text: str) -> str:
    """The Markdown tables and paragraphs this module writes -> HTML (no other Markdown)."""
    out, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
            continue
        if table:
            head, body = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-:")]
            out.append(
                "<table><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
                + "</table>"
            )
            table = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


def to_html(doc: dict[str, Any]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(doc['title'])}</title><style>{HTML_STYLE}</style></head><body>",
        f"<h1>{html.escape(doc['title'])}</h1>",
        f"<p>Run folder: <code>{html.escape(doc['run'])}</code></p>",
    ]
    for title, text in doc["sections"]:
        parts += [f"<h2>{html.escape(title)}</h2>", _md_table_to_html(text)]
    for key, title in FIGURE_TITLES.items():
        if key in doc["figures"]:
            data = base64.b64encode(doc["figures"][key]).decode("ascii")
            parts += [
                f"<h2>{html.escape(title)}</h2>",
                f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">',
            ]
    if doc["missing"]:
        parts.append("<h2>Not in this report</h2><ul>")
        parts += [f'<li class="note">{html.escape(m)}</li>' for m in doc["missing"]]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    from compress.io import atomic_write_bytes, atomic_write_text

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    out = Path(out_dir) if out_dir else run / "report"
    doc = build(run)
    for key, png in doc["figures"].items():
        atomic_write_bytes(out / "report_files" / f"{key}.png", png)
    md = atomic_write_text(out / "report.md", to_markdown(doc, "report_files"))
    page = atomic_write_text(out / "report.html", to_html(doc))
    return {
        "markdown": md,
        "html": page,
        "missing": doc["missing"],
        "figures": sorted(doc["figures"]),
    }


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("run", help="run folder (runs/<recipe>)")
    parser.add_argument("--out", help="output folder (default: <run>/report)")
    return parser


def main(args: argparse.Namespace) -> int:
    try:
        result = write_report(args.run, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {result['markdown']} and {result['html']} ({', '.join(result['figures']) or 'no'} plots)"
    )
    for m in result["missing"]:
        print(f"note: {m}", file=sys.stderr)
    return 0
