"""A run's summary for people: the recipe's `targets:` measured, and `summary.md`.

It reads only the summary's figures (plain JSON), whatever stages or packages produced them,
so a summary can be rendered again from `summary.json` alone.
"""

from __future__ import annotations

from typing import Any

TARGET_DEFAULTS = {"flops_ratio": 0.40, "ap50_drop": 0.01, "latency_ratio": 0.45}


def targets(fig: dict[str, Any], wanted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe's `targets:` (default: 0.40x FLOPs, AP50 within 0.01, 0.45x latency),
    measured by this run, met or not. A target set to null is not reported."""
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


def markdown(s: dict[str, Any]) -> str:
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
    labels = {
        "base": "original (unpruned)",
        "specialised": "person-tuned (unpruned)",
        "pruned": "pruned (prune stage's final)",
    }
    for tag, label in labels.items():
        f = fig.get(tag)
        if f:
            lines.append(
                f"| {label} | {f['params']:,} | {f['flops'] / 1e9:.3f} | {f.get('AP50', float('nan')):.4f} | {f.get('AP50_95', float('nan')):.4f} |"
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
    lines += ["", f"Final model: `{s.get('final_model')}`"]
    lines += shipped_lines(fig.get("shipped"), fig.get("base"))
    lines.append("")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def shipped_lines(shipped: dict[str, Any] | None, base: dict[str, Any] | None) -> list[str]:
    """The last lines of a summary: what ships, and loudly when no pruned model held up."""
    if not shipped:
        return []
    ratio = shipped["flops"] / base["flops"] if base else float("nan")
    head = (
        f"Shipped: {shipped['name']} ({ratio:.3f}x FLOPs, AP50 {_num(shipped.get('AP50'))}, "
        f"AP50:95 {_num(shipped.get('AP50_95'))})"
    )
    if shipped.get("holds"):
        return ["", head, f"Why: {shipped['reason']}"]
    return ["", head, f"**WARNING: no pruned model is shipped.** {shipped['reason']}"]
