"""Every channel criterion (and layer-rate allocator) side by side, one protocol.

From the same starting model, for every registered criterion and every FLOPs point: cut to
that fraction of the starting model's FLOPs (the criterion's own global ranking; the
allocators set per-layer ratios and a criterion picks the filters inside), apply the same
least-squares refit (`reconstruct`, on the same training images), optionally the same number
of recovery steps, and score held-out AP50 / AP50:95 with `evaluate_detector`. Writes
`criteria.json` (after every cut, so an interrupted run keeps what it measured),
`criteria.md` (the table, methods ranked by mean AP50) and `criteria.png` (AP50 vs FLOPs).
A run into a folder that already holds a criteria.json of the same protocol keeps its measured
cells and measures only the missing ones, so the table can be filled in several sittings.

Beside the equal-FLOPs cuts, the seed method itself (`adaptive`): the Slimming strategy with a
learned threshold on the best-ranked criterion, cut in cycles through the same refit (and
recovery steps), each cycle's point on the plot, so the report shows where adaptive lands.

Settings: the recipe's `criteria:` section over `TABLE_DEFAULTS`; the floors (`round_to`,
`min_channels`, `min_fraction`) default to the recipe's `prune:` section.

    table = run_table(model, train_ds, val_ds, table_settings(recipe), out_dir, teacher=None)
"""

from __future__ import annotations

import copy
import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.io import atomic_write_bytes, atomic_write_text, write_json
from compress.prune.allocate import (
    ALLOCATORS,
    GA_DEFAULTS,
    AllocContext,
    Floors,
    FlopCounter,
)
from compress.prune.channel import compact
from compress.prune.features import collect_features
from compress.prune.graph import build_graph
from compress.prune.importance import IMPORTANCE, build_importance
from compress.prune.reconstruct import REFIT_DEFAULTS, reconstruct
from compress.prune.scoring import score_channels

log = logging.getLogger(__name__)

TABLE_DEFAULTS: dict[str, Any] = {
    "flops": [0.7, 0.6, 0.5, 0.4],  # fractions of the starting model's FLOPs
    "criteria": None,  # None: every registered criterion
    # rows beside each criterion's global ranking: allocator + `allocator_criterion` (the
    # GA always chooses filters by correlation independence, as its method does)
    "allocators": ["uniform", "entropy", "boxplot", "ga_correlation"],
    "allocator_criterion": "bn_scale_next",
    "val_images": None,  # None: the whole validation set
    "feature_images": 16,  # training images whose feature maps the data-aware criteria read
    "feature_hw": 16,  # feature maps kept on at most this grid (memory bound)
    "grad_images": 16,  # images for the gradient criteria (taylor, output_taylor)
    "batch_size": 8,
    "recover_steps": 0,  # equal recovery budget per cut, in SGD steps (0: refit only)
    "recover_lr": 1.0e-4,
    "reconstruct": REFIT_DEFAULTS,  # false: no refit
    "ga": {**GA_DEFAULTS, "images": 8},  # ga_correlation; `images` score its fitness
    "round_to": None,  # None: from the recipe's prune section (else 8)
    "min_channels": None,  # (else 8)
    "min_fraction": None,  # (else 0.05)
    # the seed method's cycles beside the table (false: off); criterion None = the table's
    # best-ranked criterion (global ranking); no sparsity epochs, AP drop not a stop here
    "adaptive": {"threshold": "otsu", "cycles": 3, "criterion": None, "layers": True},
}
# Settings that do not change what a measured cell means (resume keeps cells across them).
_LIST_KEYS = ("flops", "criteria", "allocators", "adaptive")
_FLOOR_DEFAULTS = {"round_to": 8, "min_channels": 8, "min_fraction": 0.05}
GA_CRITERION = "correlation"


def table_settings(recipe: dict[str, Any], **override: Any) -> dict[str, Any]:
    """The recipe's `criteria:` section over the defaults, floors from `prune:`; `override`
    (e.g. from the command line) last. Unknown keys are an error."""
    section = {
        **(recipe.get("criteria") or {}),
        **{k: v for k, v in override.items() if v is not None},
    }
    unknown = sorted(set(section) - set(TABLE_DEFAULTS))
    if unknown:
        raise ValueError(
            f"criteria: unknown setting(s) {', '.join(unknown)}; known: {', '.join(TABLE_DEFAULTS)}"
        )
    cfg = {**TABLE_DEFAULTS, **section}
    prune = recipe.get("prune") or {}
    for k, default in _FLOOR_DEFAULTS.items():
        if cfg[k] is None:
            cfg[k] = prune.get(k, default)
    if cfg["reconstruct"]:
        extra = cfg["reconstruct"] if isinstance(cfg["reconstruct"], dict) else {}
        cfg["reconstruct"] = {**REFIT_DEFAULTS, **extra}
    cfg["ga"] = {**TABLE_DEFAULTS["ga"], **(section.get("ga") or {})}
    if cfg["adaptive"]:
        extra = cfg["adaptive"] if isinstance(cfg["adaptive"], dict) else {}
        cfg["adaptive"] = {**TABLE_DEFAULTS["adaptive"], **extra}
    cfg["flops"] = [float(f) for f in cfg["flops"]]
    if not cfg["flops"] or not all(0 < f < 1 for f in cfg["flops"]):
        raise ValueError(f"criteria.flops: fractions in (0, 1), got {cfg['flops']}")
    criteria = cfg["criteria"] or list(IMPORTANCE)
    bad = [c for c in [*criteria, cfg["allocator_criterion"]] if c not in IMPORTANCE]
    bad += [a for a in cfg["allocators"] if a not in ALLOCATORS]
    if bad:
        raise ValueError(
            f"criteria: unknown {', '.join(bad)}; criteria: {', '.join(IMPORTANCE)}; "
            f"allocators: {', '.join(ALLOCATORS)}"
        )
    cfg["criteria"] = list(criteria)
    return cfg


def methods(cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(row name, criterion, allocator) for every row of the table."""
    rows = [(c, c, "global") for c in cfg["criteria"]]
    for a in cfg["allocators"]:
        if a == "global":
            continue
        crit = GA_CRITERION if a == "ga_correlation" else cfg["allocator_criterion"]
        rows.append((f"{a}/{crit}", crit, a))
    return rows


def _eval_batches(dataset: Any, detector: nn.Module, n: int, batch: int) -> list[tuple]:
    from compress.data.build import batches, eval_view, first_images

    return batches(first_images(eval_view(dataset, detector), n), batch)


class Bench:
    """The starting model and everything every cut shares: images, feature maps, scores (each
    computed once, on first use)."""

    def __init__(
        self,
        model: nn.Module,
        train_ds: Any,
        val_ds: Any,
        cfg: dict[str, Any],
        teacher: nn.Module | None = None,
    ) -> None:
        from compress.data.build import first_images

        self.model, self.train_ds, self.cfg = model.eval(), train_ds, cfg
        self.teacher = (teacher if teacher is not None else model).eval()
        self.val = first_images(val_ds, cfg["val_images"]) if cfg["val_images"] else val_ds
        self.graph = build_graph(model.blocks)
        self.flops = FlopCounter(model, self.graph)
        self.floors = Floors(
            int(cfg["round_to"]), int(cfg["min_channels"]), float(cfg["min_fraction"])
        )
        self.device = next(model.parameters()).device
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def images(self, n: int) -> list[torch.Tensor]:
        return [
            x.to(self.device)
            for x, _ in self._once(
                f"batches{n}",
                lambda: _eval_batches(self.train_ds, self.model, n, int(self.cfg["batch_size"])),
            )
        ]

    def features(self) -> dict[int, torch.Tensor]:
        return self._once(
            "features",
            lambda: collect_features(
                self.model,
                self.images(int(self.cfg["feature_images"])),
                max_hw=int(self.cfg["feature_hw"]),
            ),
        )

    def scores(self, name: str) -> dict[int, torch.Tensor]:
        return self._once(f"scores:{name}", lambda: self._score(name))

    def _score(self, name: str) -> dict[int, torch.Tensor]:
        n = int(self.cfg["grad_images"])
        crit = build_importance(name)
        labelled = []
        if crit.needs_grad:
            raw = self._once(
                "labelled",
                lambda: _eval_batches(self.train_ds, self.model, n, int(self.cfg["batch_size"])),
            )
            labelled = [(x.to(self.device), t) for x, t in raw]
        return score_channels(
            self.model,
            crit,
            images=self.images(n) if crit.needs_teacher else [],
            labelled=labelled,
            teacher=self.teacher,
            features=self.features() if crit.needs_features else None,
            graph=self.graph,
        )

    def fitness(self, pruned: nn.Module) -> float:
        """Distillation loss of a cut model against the teacher on the GA's images (lower =
        closer): the GA's cheap proxy for AP."""
        from compress.recover.distill import response_loss

        images = self.images(int(self.cfg["ga"]["images"]))
        targets = self._once("teacher_out", lambda: [self._decode(self.teacher, x) for x in images])
        total = 0.0
        for x, (tb, ts) in zip(images, targets):
            sb, ss = self._decode(pruned, x)
            score, box = response_loss(sb, ss, tb, ts, float(max(x.shape[-2:])), 1.0)
            total += float(score + box)
        return total / max(1, len(images))

    @staticmethod
    @torch.no_grad()
    def _decode(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        return model.decode(model(images))

    def cut(self, criterion: str, allocator: str, goal: float) -> tuple[nn.Module, dict[str, Any]]:
        """The starting model cut to `goal` x its FLOPs (not refitted)."""
        ctx = AllocContext(
            model=self.model,
            graph=self.graph,
            scores=self.scores(criterion),
            floors=self.floors,
            flops=self.flops,
            features=self.features() if allocator in ("entropy", "boxplot") else None,
            fitness=self.fitness,
            options={"ga": self.cfg["ga"]},
        )
        alloc = ALLOCATORS[allocator](ctx, int(goal * self.flops.full))
        info = {
            "flops_ratio": round(alloc.flops / self.flops.full, 4),
            "channels": alloc.plan.summary(),
            "allocator": {k: v for k, v in alloc.details.items() if not isinstance(v, dict)},
        }
        pruned = compact(self.model, alloc.plan)
        if self.cfg["reconstruct"]:
            r = self.cfg["reconstruct"]
            layers = reconstruct(
                self.model,
                pruned,
                alloc.plan,
                self.images(int(r["images"])),
                positions=int(r["positions"]),
                ridge=float(r["ridge"]),
            )
            errs = [v["error_after"] for v in layers.values()]
            info["refit_error"] = round(sum(errs) / len(errs), 5) if errs else 0.0
        return pruned, info

    def recover(self, model: nn.Module, steps: int, seed: int = 0) -> None:
        """`steps` SGD steps of the detection loss on the training set (the same for every
        cut): the table's optional equal recovery budget."""
        from compress.data.build import collate

        loader = torch.utils.data.DataLoader(
            self.train_ds,
            batch_size=int(self.cfg["batch_size"]),
            shuffle=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )
        opt = torch.optim.SGD(model.parameters(), lr=float(self.cfg["recover_lr"]), momentum=0.9)
        model.train()
        done = 0
        while done < steps:
            for images, targets in loader:
                loss, _ = model.loss(model(images.to(self.device)), targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done >= steps:
                    break
        model.eval()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        from compress.evaluate import evaluate_detector

        m = evaluate_detector(model.eval(), self.val, batch_size=int(self.cfg["batch_size"]))
        return {"AP50": round(m["AP50"], 4), "AP50_95": round(m["AP50_95"], 4)}


def run_table(
    model: nn.Module,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    teacher: nn.Module | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Cut, refit, (recover,) evaluate every method at every FLOPs point (module docstring).
    `cfg` = `table_settings(recipe)`; `teacher` (default: `model`) is what output_taylor and
    the GA's fitness distil from. Returns the table dict also written to criteria.json."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    bench = Bench(model, train_ds, val_ds, cfg, teacher)
    earlier = measured_before(out_dir / "criteria.json", cfg, bench.flops.full)
    table: dict[str, Any] = {
        "settings": {k: v for k, v in cfg.items()},
        "unpruned": earlier["unpruned"] if earlier else None,
        "rows": [],
    }
    if table["unpruned"] is None:
        table["unpruned"] = {"flops": bench.flops.full, **bench.evaluate(model)}
    done = {(r["method"], r["goal"]): r for r in (earlier or {}).get("rows", []) if "AP50" in r}
    jobs = [(m, g) for m in methods(cfg) for g in cfg["flops"]]
    asked = {(m[0], g) for m, g in jobs}
    # cells an earlier sitting measured at other points or for other methods stay in the
    # table, on disk too while this sitting runs (an interrupted sitting loses none of them)
    others = [r for key, r in done.items() if key not in asked]
    if earlier and earlier.get("adaptive"):
        table["adaptive"] = earlier["adaptive"]
    bar = tqdm(jobs, desc="criteria", unit="cut", disable=not progress)
    for (name, crit, alloc), goal in bar:
        if (name, goal) in done:
            table["rows"].append(done[(name, goal)])
            continue
        bar.set_postfix_str(f"{name} @ {goal:g}")
        row: dict[str, Any] = {"method": name, "criterion": crit, "allocator": alloc, "goal": goal}
        t0 = time.perf_counter()
        try:
            pruned, info = bench.cut(crit, alloc, goal)
            row.update(info)
            if int(cfg["recover_steps"]) > 0:
                bench.recover(pruned, int(cfg["recover_steps"]))
            row.update(bench.evaluate(pruned))
        except Exception as exc:  # one criterion's failure must not lose the others' rows
            log.warning("%s at %.2fx: %s", name, goal, exc)
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["seconds"] = round(time.perf_counter() - t0, 2)
        table["rows"].append(row)
        write_json(out_dir / "criteria.json", {**table, "rows": table["rows"] + others})
    table["rows"] += others
    table["settings"]["flops"] = sorted({r["goal"] for r in table["rows"]}, reverse=True)
    table["ranking"] = ranking(table)
    write_json(out_dir / "criteria.json", table)
    if cfg["adaptive"]:
        table["adaptive"] = _adaptive_once(bench, table, earlier, out_dir)
        write_json(out_dir / "criteria.json", table)

    atomic_write_text(out_dir / "criteria.md", markdown(table))
    try:
        table["plot"] = str(plot(table, out_dir / "criteria.png"))
    except Exception as exc:  # a plot must never lose the numbers
        log.warning("criteria plot failed: %s", exc)
        table["plot_error"] = repr(exc)
    write_json(out_dir / "criteria.json", table)
    return table


def measured_before(path: Path, cfg: dict[str, Any], flops: int) -> dict[str, Any] | None:
    """An earlier criteria.json in the output folder when it was measured with the same
    protocol (refit, images, floors, recovery steps) from a model of the same FLOPs; else None
    (a different protocol is measured afresh, never mixed in)."""
    if not path.is_file():
        return None
    import json

    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        same = all(old["settings"].get(k) == v for k, v in cfg.items() if k not in _LIST_KEYS)
        if same and old["unpruned"]["flops"] == flops:
            return old
    except (ValueError, KeyError, TypeError):
        pass
    log.warning("%s: another protocol or model; measuring every cell afresh", path)
    return None


def _adaptive_once(
    bench: Bench, table: dict[str, Any], earlier: dict[str, Any] | None, out_dir: Path
) -> dict[str, Any]:
    """The seed method's cycles (kept from an earlier run with the same adaptive settings)."""
    a = bench.cfg["adaptive"]
    crit = a["criterion"] or next(
        (r["method"] for r in table["ranking"] if r["method"] in IMPORTANCE), None
    )
    old = (earlier or {}).get("adaptive") or {}
    if old.get("criterion") == crit and old.get("settings") == a and old.get("points"):
        return old
    try:
        return adaptive_points(bench, crit, out_dir / "adaptive", table["unpruned"])
    except Exception as exc:  # the table's cells stay whatever the seed run does
        log.warning("adaptive run failed: %s", exc)
        return {"criterion": crit, "settings": a, "error": f"{type(exc).__name__}: {exc}"}


def adaptive_points(
    bench: Bench, criterion: str, out_dir: Path, unpruned: dict[str, Any]
) -> dict[str, Any]:
    """Run the Slimming strategy (the seed method: learned threshold, channel + layer
    pruning, cycles) from the table's model with the table's protocol; one point per cycle."""
    from compress.evaluate import model_figures
    from compress.prune.reconstruct import REFIT_DEFAULTS as _REFIT
    from compress.prune.run import Context, prune_rounds
    from compress.prune.slimming import Slimming

    a, cfg = bench.cfg["adaptive"], bench.cfg
    steps = int(cfg["recover_steps"])
    prune_cfg = {
        "importance": criterion,
        "threshold": a["threshold"],
        "cycles": int(a["cycles"]),
        "layers": bool(a["layers"]),
        "round_to": cfg["round_to"],
        "min_channels": cfg["min_channels"],
        "min_fraction": cfg["min_fraction"],
        "feature_images": cfg["feature_images"],
        "target_flops": min(cfg["flops"]),
        "max_ap_drop": 1.0,  # every cycle is a point; the table is not a shipping decision
        "compare_baseline": False,
    }
    strategy = Slimming({"prune": prune_cfg, "sparsity": {"epochs": 0}})
    strategy.recovers = steps > 0

    def recover(model: nn.Module, _out: Path, _teacher: nn.Module) -> tuple[nn.Module, dict]:
        bench.recover(model, steps)
        return model, {"steps": steps}

    ctx = Context(
        evaluate=bench.evaluate,
        recover=recover,
        sparsify=lambda *_: {},
        accumulate_grads=None,
        train_ds=bench.train_ds,
        refit={**_REFIT, **cfg["reconstruct"]} if cfg["reconstruct"] else None,
        baseline=model_figures(bench.model, unpruned),
        teacher=bench.teacher,
    )
    _, report = prune_rounds(copy.deepcopy(bench.model), ctx, strategy, out_dir)
    points = []
    for c in report["cycles"]:
        if "recovered" not in c:
            continue
        fig = c["recovered"]
        points.append(
            {
                "cycle": c["cycle"],
                "flops_ratio": round(fig["flops"] / bench.flops.full, 4),
                "AP50": fig.get("AP50"),
                "AP50_95": fig.get("AP50_95"),
                "threshold": c["prune"].get("threshold", {}).get("value"),
                "removed_shortcuts": len(c["prune"].get("layers", {}).get("removed_shortcuts", [])),
            }
        )
    return {
        "criterion": criterion,
        "settings": a,
        "stop_reason": report["stop_reason"],
        "points": points,
    }


def ranking(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Methods by mean AP50 over the FLOPs points every method has measured (a table filled
    in sittings may hold a point for some methods only; ranking on it would compare methods
    on different points). A method that failed anywhere goes last."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in table["rows"]:
        by.setdefault(r["method"], []).append(r)
    goals = {r["goal"] for r in table["rows"]}
    shared = [g for g in goals if all(any(r["goal"] == g for r in rows) for rows in by.values())]
    out = []
    for name, rows in by.items():
        ok = [r for r in rows if "AP50" in r and (r["goal"] in shared or not shared)]
        failed = any("AP50" not in r for r in rows)
        mean = None if failed or not ok else round(sum(r["AP50"] for r in ok) / len(ok), 4)
        out.append({"method": name, "mean_AP50": mean})
    return sorted(
        out, key=lambda r: -math.inf if r["mean_AP50"] is None else r["mean_AP50"], reverse=True
    )


def markdown(table: dict[str, Any]) -> str:
    goals = table["settings"]["flops"]
    cells: dict[tuple[str, float], str] = {}
    for r in table["rows"]:
        cells[(r["method"], r["goal"])] = (
            f"{r['AP50']:.3f} / {r['AP50_95']:.3f} ({r['flops_ratio']:.2f}x)"
            if "AP50" in r
            else "error"
        )
    u = table["unpruned"]
    lines = [
        f"Unpruned: AP50 {u['AP50']:.3f} / AP50:95 {u['AP50_95']:.3f} at {u['flops'] / 1e9:.2f} GFLOPs. "
        f"Cells: AP50 / AP50:95 (FLOPs reached), after the least-squares refit"
        + (
            f" and {table['settings']['recover_steps']} recovery steps."
            if table["settings"]["recover_steps"]
            else "."
        ),
        "",
        "| method | mean AP50 (points all methods have) | "
        + " | ".join(f"{g:g}x" for g in goals)
        + " |",
        "|---|---|" + "---|" * len(goals),
    ]
    for r in table.get("ranking") or ranking(table):
        mean = "-" if r["mean_AP50"] is None else f"{r['mean_AP50']:.3f}"
        lines.append(
            f"| {r['method']} | {mean} | "
            + " | ".join(cells.get((r["method"], g), "") for g in goals)
            + " |"
        )
    errors = [
        f"- {r['method']} @ {r['goal']:g}x: {r['error']}" for r in table["rows"] if "error" in r
    ]
    return "\n".join(lines + adaptive_lines(table) + ([""] + errors if errors else [])) + "\n"


def adaptive_lines(table: dict[str, Any]) -> list[str]:
    a = table.get("adaptive")
    if not a:
        return []
    head = f"Seed method (adaptive {a['settings']['threshold']} threshold on {a['criterion']}, channel + layer pruning in cycles, same refit)"
    if "error" in a:
        return ["", f"{head}: failed: {a['error']}"]
    cells = [
        f"cycle {p['cycle']}: {p['AP50']:.3f} / {p['AP50_95']:.3f} ({p['flops_ratio']:.2f}x)"
        for p in a["points"]
    ]
    return ["", f"{head}: " + "; ".join(cells) + "."]


def plot(table: dict[str, Any], path: Path) -> Path:
    """AP50 against FLOPs (fraction of the unpruned model), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    by: dict[str, list[tuple[float, float]]] = {}
    for r in table["rows"]:
        if "AP50" in r:
            by.setdefault(r["method"], []).append((r["flops_ratio"], r["AP50"]))
    colours = plt.get_cmap("tab20").colors  # 17+ lines: the default 10 colours repeat
    for k, (name, pts) in enumerate(by.items()):
        pts.sort()
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "--" if "/" in name else "-",  # allocator rows dashed
            color=colours[k % len(colours)],
            marker="osD^v<>"[k % 7],
            ms=4,
            label=name,
        )
    a = table.get("adaptive") or {}
    if a.get("points"):
        pts = [(1.0, table["unpruned"]["AP50"])] + [
            (p["flops_ratio"], p["AP50"]) for p in a["points"]
        ]
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "k:",
            marker="X",
            ms=8,
            label=f"adaptive {a['settings']['threshold']} ({a['criterion']}), cycles",
        )
    ax.plot([1.0], [table["unpruned"]["AP50"]], "k*", ms=12, label="unpruned")
    ax.set_xlabel("FLOPs (fraction of the unpruned model)")
    ax.set_ylabel("val AP50")
    ax.set_title("Channel criteria at equal FLOPs (refitted)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
