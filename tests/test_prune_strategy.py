"""A new prune strategy is one class and one registry line: it only chooses, and the prune
verb cuts, refits, recovers, evaluates and saves it like slimming or ACP."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from compress.models.load import load_detector_dir
from compress.prune.channel import choose_uniform, compact, conv_scores
from compress.prune.graph import build_graph
from compress.prune.importance import build_importance
from compress.prune.reconstruct import reconstruct
from compress.prune.run import STRATEGIES
from compress.prune.slimming import layer_widths
from compress.prune.strategy import Choice, Strategy
from tests.conftest import need


class Uniform(Strategy):
    """Every layer drops the same fraction of its lowest-L1 channels."""

    name = "uniform"
    help = "the same fraction of channels out of every layer"

    def resolve(self, recipe: dict[str, Any]) -> dict[str, Any]:
        section = {k: v for k, v in (recipe.get("prune") or {}).items() if k != "method"}
        return {"ratio": 0.5, "round_to": 8, "min_channels": 8, **section}

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--ratio", type=float, default=None, help="fraction removed")

    @classmethod
    def overrides(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {} if args.ratio is None else {"ratio": args.ratio}

    def choose(self, model, ctx, out_dir) -> Choice:
        graph = build_graph(model.blocks)
        scores = conv_scores(model, build_importance("l1"), graph)
        cfg = self.cfg
        plan = choose_uniform(
            graph, scores, float(cfg["ratio"]), int(cfg["round_to"]), int(cfg["min_channels"])
        )

        def refit(pruned, images, positions, ridge):
            return reconstruct(model, pruned, plan, images, positions=positions, ridge=ridge)

        report = {"channels": plan.summary(), "per_layer": layer_widths(plan)}
        return Choice(model, lambda: compact(model, plan), refit, report)


def test_a_new_strategy_runs_through_the_prune_verb(assets, tmp_path, monkeypatch):
    need(
        assets,
        "darknet/yolov3-tiny.cfg",
        "darknet/yolov3-tiny.weights",
        "darknet/coco.names",
        "coco128/labels/train2017",
    )
    from compress.__main__ import main

    monkeypatch.setitem(STRATEGIES, "uniform", Uniform)
    out = tmp_path / "uniform"
    argv = ["prune", "--recipe", "configs/yolov3-tiny-person.yaml", "--profile", "smoke"]
    rc = main(argv + ["--out", str(out), "--method", "uniform", "--ratio", "0.5"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "uniform" and report["settings"]["ratio"] == 0.5
    (one,) = report["rounds"]
    # the run cut, refitted, evaluated and recovered the choice
    assert one["prune"]["reconstruct"]["images"] > 0
    assert "AP50" in one["prune"]["reconstruct"]["before_refit"]
    assert {"AP50", "flops", "params"} <= set(one["pruned"]) and "recover" in one
    assert report["final"]["flops"] < 0.5 * report["baseline"]["flops"]
    # half of a 256-channel layer is what the saved model holds
    widths = {w["layer"]: w for w in one["prune"]["per_layer"]}
    assert any(w["before"] == 256 and w["after"] == 128 for w in widths.values())
    model = load_detector_dir(out / "model")
    assert f"filters={widths[min(widths)]['after']}" in model.to_cfg()


def test_a_strategy_flag_given_to_another_strategy_is_refused(monkeypatch):
    from compress.__main__ import main

    monkeypatch.setitem(STRATEGIES, "uniform", Uniform)
    argv = ["prune", "--recipe", "configs/yolov3-tiny-person.yaml", "--out", "x"]
    with pytest.raises(SystemExit, match="flags of --method uniform"):
        main(argv + ["--ratio", "0.3"])  # the recipe's method is slimming


def test_no_import_circle_inside_compress_prune():
    """Strategies depend on the run's types, the run on the strategies: with a circle, the
    package's modules could only be imported in one order (or a lazy import hides it)."""
    import ast
    from pathlib import Path

    import compress.prune

    root = Path(compress.prune.__file__).parent
    modules = {
        ".".join(("compress.prune", *p.relative_to(root).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): p
        for p in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        deps = set()
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, ast.ImportFrom) or node.level:
                continue
            target = node.module or ""
            for alias in node.names:
                for cand in (f"{target}.{alias.name}", target):
                    if cand in modules and cand != name:
                        deps.add(cand)
                        break
        graph[name] = deps

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for dep in graph[node]:
            if dep == start:
                return (*seen, dep)
            if dep not in seen:
                found = cycle_from(start, dep, (*seen, dep))
                if found:
                    return found
        return None

    circles = [c for m in graph if (c := cycle_from(m, m, (m,)))]
    assert not circles, circles[0]
