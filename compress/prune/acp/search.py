"""The structure search: cluster -> optimiser over per-unit keep ratios -> best structure.

The optimiser (`optimizer`: pso, ga, random, ddpg or adversarial, optimizers.py; the last two
also see the model through `space.Space`) proposes ratio vectors; this
loop turns each into widths, gets its fitness from the one proxy + budget + cache (fitness.py),
tells the optimiser, and records every lookup in the fitness-vs-evaluations log
(`<out_dir>/search_log.csv`). `evaluations` is the one budget setting all optimisers share: the
number of fitness lookups, turned into whole generations (none set: each optimiser's own).

Channels inside a unit (`inherit`): cluster representatives first (`cluster`), top group L1
(`l1`), or the correlation-independence criterion on the unit's conv outputs over the
clustering images (`correlation`, feature_criteria.py; BN's per-channel affine leaves the
correlations as they are, so the conv's output stands for the block's).

Search space: one keep ratio per unit (prunable channel group), bounded below by
`min_ratio` and `min_channels`; a unit whose root conv name matches a `whole` glob pattern
keeps every channel (e.g. `*.project.conv`: MobileNetV2's linear bottlenecks, which the
residual sums carry through a whole stage and no refit can restore). A particle's widths are
its ratios times the unit widths, rounded to `round_to` (8: what TensorRT's kernels and the
Nano's tensor layout reward), never under `min_channels` (or the full width when that is
smaller). Candidates are cached by their
rounded widths, so particles that land on one structure are evaluated once.
The chosen structure is the fittest within the budget (the fittest of all when none is).

The swarm starts around two points: the clustered structure (clusters + noise per unit) and
that structure scaled uniformly until it meets the FLOPs budget (`to_budget`: a common scale),
because the clustered start alone is usually far above any useful budget.

The state (optimiser, cache, history, log, counters) is written atomically after every cycle to
`<out_dir>/acp_state.json`; a search started again on the same out_dir with `resume: true`
goes on from there and gives the same result as an uninterrupted one.

Under torchrun each batch's new structures are evaluated over the ranks (spread.py): rank 0
runs this loop and writes every file, the others `serve`; the result is the one-process
result, and a state written by N ranks resumes on any number.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from compress.data.build import batches, eval_view, first_images
from compress.io import atomic_write_bytes, read_json, write_json
from compress.prune.acp import fitness as fit
from compress.prune.acp.adversarial import ADVERSARIAL_DEFAULTS
from compress.prune.acp.cluster import (
    CLUSTER_DEFAULTS,
    Clusters,
    channel_responses,
    cluster_channels,
)
from compress.prune.acp.ddpg import DDPG_DEFAULTS
from compress.prune.acp.groups import (
    Unit,
    build_graph,
    channel_scores,
    find_units,
    refit_targets,
)
from compress.prune.acp.inherit import batchnorms, inherit, recalibrate_bn, train_steps
from compress.prune.acp.optimizers import GA_DEFAULTS, OPTIMIZERS, RANDOM_DEFAULTS
from compress.prune.acp.pso import PSO_DEFAULTS
from compress.prune.acp.space import Space
from compress.prune.acp.spread import Ranks
from compress.prune.reconstruct import REFIT_DEFAULTS, refit_convs, refit_images
from compress.train.distributed import DistInfo

log = logging.getLogger(__name__)

ACP_DEFAULTS: dict[str, Any] = {
    "round_to": 8,
    "min_channels": 8,
    "min_ratio": 0.1,
    "whole": [],  # glob patterns of unit (root conv) names that are not cut
    "inherit": "cluster",  # cluster (representatives first) | l1 | correlation
    "optimizer": "pso",  # pso | ga | random | ddpg | adversarial (optimizers.py)
    "evaluations": None,  # fitness lookups for any optimiser (None: its own generations)
    "recover": True,  # fine-tune the found structure with the recipe's recover: section
    "resume": True,  # go on from <out_dir>/acp_state.json when its settings match
    "progress": True,
    "cluster": CLUSTER_DEFAULTS,
    "pso": PSO_DEFAULTS,
    "ga": GA_DEFAULTS,
    "random": RANDOM_DEFAULTS,
    "ddpg": DDPG_DEFAULTS,
    "adversarial": ADVERSARIAL_DEFAULTS,
    "fitness": fit.FITNESS_DEFAULTS,
    # The chosen structure only (candidates are judged on inherit + BN recalibration, which is
    # seconds, not a minute): least-squares refit of the cut convs on that many training
    # images (reconstruct.py); `reconstruct: false` or images: 0 turns it off.
    "reconstruct": REFIT_DEFAULTS,
}
STATE_FILE = "acp_state.json"
LOG_FILE = "search_log.csv"
INHERIT = ("cluster", "l1", "correlation")


def resolve_settings(
    section: dict[str, Any] | None, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The recipe's `prune:` section over ACP_DEFAULTS (nested cluster/pso/fitness), checked.
    `defaults`: a strategy's own defaults over ACP_DEFAULTS (e.g. the optimiser)."""
    section = {k: v for k, v in (section or {}).items() if k != "method"}
    base = {
        k: {**v, **(defaults or {}).get(k, {})} if isinstance(v, dict) else v
        for k, v in ACP_DEFAULTS.items()
    }
    base.update({k: v for k, v in (defaults or {}).items() if not isinstance(v, dict)})
    out: dict[str, Any] = {}
    unknown = sorted(set(section) - set(ACP_DEFAULTS))
    for key, default in base.items():
        if key == "reconstruct" and section.get(key) is False:
            out[key] = {**default, "images": 0}
        elif isinstance(default, dict):
            sub = dict(section.get(key) or {})
            unknown += [f"{key}.{k}" for k in sorted(set(sub) - set(default))]
            out[key] = {**default, **sub}
        else:
            out[key] = section.get(key, default)
    if unknown:
        known = [
            f"{k}.{sub}" if isinstance(v, dict) else k
            for k, v in ACP_DEFAULTS.items()
            for sub in (v if isinstance(v, dict) else [k])
        ]
        raise ValueError(
            f"prune (method acp): unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    if out["inherit"] not in INHERIT:
        raise ValueError(f"prune.inherit {out['inherit']!r}; known: {', '.join(INHERIT)}")
    if out["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"prune.optimizer {out['optimizer']!r}; known: {', '.join(OPTIMIZERS)}")
    if isinstance(out["whole"], str) or not all(isinstance(p, str) for p in out["whole"]):
        raise ValueError(f"prune.whole {out['whole']!r}: a list of glob patterns of conv names")
    if out["evaluations"] is not None and int(out["evaluations"]) < 1:
        raise ValueError(f"prune.evaluations {out['evaluations']}: at least 1 (or null)")
    fit.check(out["fitness"])
    return out


# --------------------------------------------------------------------------- structures


def round_width(value: float, width: int, round_to: int, min_channels: int) -> int:
    """Channels for a keep of `value` channels of `width`: a multiple of round_to, at least
    min_channels, at most width (a full layer keeps its own width even if not a multiple)."""
    floor = min(width, max(min_channels, round_to))
    w = int(round(value / round_to)) * round_to if round_to > 1 else int(round(value))
    return int(min(width, max(floor, w)))


def widths_of_ratios(
    ratios: Sequence[float], units: Sequence[Unit], cfg: dict[str, Any]
) -> list[int]:
    return [
        round_width(r * u.width, u.width, int(cfg["round_to"]), int(cfg["min_channels"]))
        for r, u in zip(ratios, units)
    ]


def kept_whole(name: str, cfg: dict[str, Any]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in cfg.get("whole") or [])


def ratio_bounds(units: Sequence[Unit], cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    lower = [
        1.0
        if kept_whole(u.name, cfg)
        else min(1.0, max(float(cfg["min_ratio"]), int(cfg["min_channels"]) / u.width))
        for u in units
    ]
    return np.asarray(lower), np.ones(len(units))


def key_of(widths: Sequence[int]) -> str:
    return ",".join(str(int(w)) for w in widths)


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- the search


@dataclass
class Prepared:
    """Everything computed once before the search runs."""

    units: list[Unit]
    scores: dict[str, torch.Tensor]
    clusters: dict[str, Clusters]
    calib: list[torch.Tensor]
    labelled_train: list[tuple[torch.Tensor, list[dict]]]
    ctx: fit.Context
    seconds: float


def prepare(detector: nn.Module, train_ds: Any, val_ds: Any, cfg: dict[str, Any]) -> Prepared:
    t0 = time.time()
    detector.eval()
    graph, _ = build_graph(detector)
    units = find_units(detector, graph)
    if not units:
        raise ValueError(f"{type(detector).__name__}: no prunable channel groups found")
    scores = {u.name: channel_scores(detector, graph, u) for u in units}
    log.info(
        "ACP: %d prunable channel groups, %d channels", len(units), sum(u.width for u in units)
    )
    ccfg, fcfg = cfg["cluster"], cfg["fitness"]
    train_view = eval_view(train_ds, detector)
    clusters: dict[str, Clusters] = {}
    if cfg["inherit"] == "cluster" or ccfg["method"] != "none":
        data = [x for x, _ in batches(first_images(train_view, ccfg["images"]), ccfg["batch_size"])]
        responses = channel_responses(detector, {u.name: u.module(detector) for u in units}, data)
        clusters = {u.name: cluster_channels(responses[u.name], ccfg) for u in units}
        log.info(
            "ACP: clustered on %d images (%s): %d of %d channels are cluster representatives",
            len(next(iter(responses.values()))),
            ccfg["method"],
            sum(c.keep for c in clusters.values()),
            sum(u.width for u in units),
        )
    if cfg["inherit"] == "correlation":
        data = [x for x, _ in batches(first_images(train_view, ccfg["images"]), ccfg["batch_size"])]
        scores = correlation_scores(detector, units, data)
        log.info(
            "search: channels ranked by correlation independence on %d images",
            sum(len(x) for x in data),
        )
    labelled_train = batches(
        first_images(train_view, fcfg["bn_batches"] * fcfg["batch_size"]), fcfg["batch_size"]
    )
    fit_ds = first_images(eval_view(val_ds, detector), fcfg["images"])
    labelled = batches(fit_ds, fcfg["batch_size"])
    ctx = fit.Context(
        input_size=tuple(detector.input_size),
        images=[x for x, _ in labelled],
        labelled=labelled,
        dataset=fit_ds,
        latency_runs=int(fcfg["latency_runs"]),
    )
    if not ctx.images:
        raise ValueError("ACP: the held-out set has no images for the fitness")
    ctx.teacher_scores = fit._scores(detector, ctx.images)
    ctx.base_cost = fit.COSTS[fcfg["budget"]](detector, ctx)
    return Prepared(
        units,
        scores,
        clusters,
        [x for x, _ in labelled_train],
        labelled_train,
        ctx,
        time.time() - t0,
    )


@torch.no_grad()
def correlation_scores(
    detector: nn.Module, units: Sequence[Unit], data: Sequence[torch.Tensor], max_hw: int = 16
) -> dict[str, torch.Tensor]:
    """Per unit: the correlation-independence score of each channel of its root conv's output
    on `data` (positions subsampled to max_hw x max_hw), higher = keep."""
    from compress.prune.feature_criteria import CorrelationIndependence
    from compress.prune.features import subsample

    store: dict[str, list[torch.Tensor]] = {u.name: [] for u in units}
    hooks = [
        u.module(detector).register_forward_hook(
            lambda _m, _i, out, name=u.name: store[name].append(subsample(out, max_hw).float())
        )
        for u in units
    ]
    param = next(detector.parameters())
    was_training = detector.training
    detector.eval()
    try:
        for images in data:
            detector(images.to(param.device, param.dtype))
    finally:
        for h in hooks:
            h.remove()
        detector.train(was_training)
    criterion = CorrelationIndependence()
    return {
        u.name: criterion(u.module(detector), None, features=torch.cat(store[u.name]).cpu())
        for u in units
    }


class Search:
    """Evaluate structures (cached) and run the optimiser, resumably."""

    def __init__(
        self,
        detector: nn.Module,
        prep: Prepared,
        cfg: dict[str, Any],
        out_dir: str | Path,
        info: DistInfo | None = None,
    ) -> None:
        """`info`: torchrun's ranks the evaluations spread over (default: this process)."""
        self.detector, self.prep, self.cfg = detector, prep, cfg
        self.ranks = Ranks(info or DistInfo())
        self.world_size = self.ranks.info.world_size
        self.out_dir = Path(out_dir)
        self.state_path = self.out_dir / STATE_FILE
        self.cache: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.evaluated = self.hits = 0
        self.eval_seconds = 0.0
        self.start: dict[str, Any] = {}
        self._base_flops: float | None = None
        self._flops: dict[str, float] = {}
        self.log: list[dict[str, Any]] = []  # one row per fitness lookup
        self.lower, self.upper = ratio_bounds(prep.units, cfg)
        name = cfg["optimizer"]
        evaluations = None if cfg["evaluations"] is None else int(cfg["evaluations"])
        self.opt = OPTIMIZERS[name](self.lower, self.upper, cfg[name], self.to_budget, evaluations)
        clusters = prep.clusters if cfg["inherit"] == "cluster" else None
        target = float(cfg["fitness"]["target"])
        key = lambda r: key_of(widths_of_ratios(r, prep.units, cfg))  # noqa: E731
        space = Space(detector, prep.units, prep.scores, clusters, prep.calib, target, key)
        self.opt.bind(space)

    # ---- candidates ---------------------------------------------------------------------
    def build(self, widths: Sequence[int]) -> nn.Module:
        """The candidate's model: inherited weights + BN recalibration (+ training steps)."""
        clusters = self.prep.clusters if self.cfg["inherit"] == "cluster" else None
        model = inherit(self.detector, self.prep.units, widths, self.prep.scores, clusters)
        recalibrate_bn(model, self.prep.calib)
        f = self.cfg["fitness"]
        if int(f["train_steps"]) > 0:
            # Seeded alike for every candidate, inside a fork of the CPU generator: the training
            # is the same on any rank, and the caller's generator (an optimiser may draw from
            # it) does not depend on how many candidates this rank evaluated.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self.cfg[self.cfg["optimizer"]]["seed"]))
                train_steps(
                    model, self.prep.labelled_train, int(f["train_steps"]), float(f["train_lr"])
                )
        return model.eval()

    def build_final(self, widths: Sequence[int], train_ds: Any) -> tuple[nn.Module, dict[str, Any]]:
        """The chosen structure: inherited weights refitted by least squares to the unpruned
        model's outputs (when `reconstruct.images` > 0), else `build`."""
        r = self.cfg["reconstruct"]
        if int(r["images"]) <= 0:
            return self.build(widths), {"reconstruct": "off"}
        clusters = self.prep.clusters if self.cfg["inherit"] == "cluster" else None
        removed: dict[str, list[int]] = {}
        model = inherit(self.detector, self.prep.units, widths, self.prep.scores, clusters, removed)
        images = refit_images(train_ds, self.detector, int(r["images"]), int(r["batch_size"]))
        layers = refit_convs(
            self.detector,
            model,
            refit_targets(self.detector, model, removed),
            images,
            int(r["positions"]),
            float(r["ridge"]),
        )
        seen = sum(len(x) for x in images)
        return model.eval(), {"reconstruct": {"images": seen, "layers": layers}}

    def fitness(self, widths: Sequence[int]) -> dict[str, Any]:
        """The record of one structure, uncached: a function of `widths` alone, so any rank
        may compute it."""
        f = self.cfg["fitness"]
        model = self.build(widths)
        accuracy = fit.PROXIES[f["proxy"]](model, self.prep.ctx)
        cost = fit.COSTS[f["budget"]](model, self.prep.ctx) / self.prep.ctx.base_cost
        return {
            "widths": [int(w) for w in widths],
            "accuracy": float(accuracy),
            "cost_ratio": float(cost),
            "fitness": float(fit.combine(accuracy, cost, f)),
        }

    def prefetch(self, batch: Sequence[Sequence[int]]) -> dict[str, dict[str, Any]]:
        """The records of the batch's structures that are not cached yet, each computed once,
        spread over the ranks; `evaluate` then takes them in the batch's order, so the cache,
        the counters and the log come out as in one process. One process: none (`evaluate`
        computes each in turn, and the progress bar moves per structure)."""
        if not self.ranks.open:
            return {}
        todo = {key_of(w): [int(x) for x in w] for w in batch}
        todo = {k: w for k, w in todo.items() if k not in self.cache}
        if not todo:
            return {}
        t0 = time.time()
        records = self.ranks.map(self.fitness, list(todo.values()))
        self.eval_seconds += time.time() - t0
        return dict(zip(todo, records))

    def evaluate(
        self, widths: Sequence[int], ready: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The cached record of `widths` (`ready`: records `prefetch` computed)."""
        key = key_of(widths)
        if key in self.cache:
            self.hits += 1
            return self.cache[key]
        if ready and key in ready:
            record = ready[key]
        else:
            t0 = time.time()
            record = self.fitness(widths)
            self.eval_seconds += time.time() - t0
        self.cache[key] = record
        self.evaluated += 1
        return record

    def flops_ratio(self, widths: Sequence[int]) -> float:
        key = key_of(widths)
        if key not in self._flops:
            if self._base_flops is None:
                self._base_flops = fit.cost_flops(self.detector, self.prep.ctx)
            model = inherit(self.detector, self.prep.units, widths, self.prep.scores, None)
            self._flops[key] = fit.cost_flops(model, self.prep.ctx) / self._base_flops
        return self._flops[key]

    def to_budget(self, ratios: np.ndarray, steps: int = 6) -> np.ndarray:
        """`ratios` times the common factor that brings the FLOPs closest to the target from
        below (up or down: a uniform random draw keeps ~55% of each unit, far under most
        budgets). FLOPs grow about as s^2, so s moves by sqrt(target / f) a few times; the
        widest structure within the target seen wins (the narrowest when none is)."""
        target = float(self.cfg["fitness"]["target"])
        ratios = np.clip(np.asarray(ratios, dtype=np.float64), self.lower, self.upper)
        top = float(np.max(self.upper / np.maximum(ratios, 1e-9)))

        def at(s: float) -> tuple[np.ndarray, float]:
            r = np.clip(ratios * s, self.lower, self.upper)
            return r, self.flops_ratio(widths_of_ratios(r, self.prep.units, self.cfg))

        scale = 1.0
        r, f = at(scale)
        best, best_f = (r, f) if f <= target else (None, -1.0)
        low, low_f = r, f
        for _ in range(steps):
            if target * 0.98 <= f <= target:
                break
            scale = min(top, scale * math.sqrt(target / f) * (0.99 if f > target else 1.0))
            r, f = at(scale)
            if f <= target and f > best_f:
                best, best_f = r, f
            if f < low_f:
                low, low_f = r, f
        return best if best is not None else low

    # ---- state ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        what = {
            "settings": {
                k: v
                for k, v in self.cfg.items()
                if k not in ("resume", "progress", "recover", "reconstruct")
            },
            "units": [[u.name, u.width] for u in self.prep.units],
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()

    def save_state(self) -> None:
        write_json(
            self.state_path,
            {
                "fingerprint": self.fingerprint(),
                "optimizer": self.opt.state_dict(),
                "start": self.start,
                "cache": self.cache,
                "history": self.history,
                "log": self.log,
                "evaluated": self.evaluated,
                "cache_hits": self.hits,
                "eval_seconds": self.eval_seconds,
            },
        )

    def load_state(self) -> bool:
        if not (self.cfg["resume"] and self.state_path.is_file()):
            return False
        state = read_json(self.state_path)
        if state.get("fingerprint") != self.fingerprint():
            raise ValueError(
                f"{self.state_path}: written by a search with other settings or another model; "
                "delete it, use another out dir, or set prune.resume: false"
            )
        self.opt.load_state_dict(state["optimizer"])
        self.start, self.cache, self.history = state["start"], state["cache"], state["history"]
        self.log = state["log"]
        self.evaluated, self.hits = int(state["evaluated"]), int(state["cache_hits"])
        self.eval_seconds = float(state["eval_seconds"])
        log.info("search: resumed %s at generation %d", self.state_path, self.opt.generation)
        return True

    # ---- the optimiser --------------------------------------------------------------------
    def initialise(self) -> None:
        units = self.prep.units
        if self.prep.clusters:
            cluster_ratios = np.array([self.prep.clusters[u.name].keep / u.width for u in units])
        else:
            cluster_ratios = np.ones(len(units))
        cluster_ratios = np.clip(cluster_ratios, self.lower, self.upper)
        budget_ratios = self.to_budget(cluster_ratios)
        log.info("search (%s): %d lookups planned", self.opt.name, self.opt.proposals())
        self.opt.start({"cluster": cluster_ratios, "budget": budget_ratios})
        self.start = {
            "cluster_widths": widths_of_ratios(cluster_ratios, units, self.cfg),
            "budget_widths": widths_of_ratios(budget_ratios, units, self.cfg),
        }

    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Run until the optimiser's generations are done (or `stop_after` in this call).
        Under torchrun this is rank 0's; when it returns, the serving ranks are released and
        the group left (spread.py)."""
        if not self.ranks.info.is_main:
            raise RuntimeError(f"rank {self.ranks.info.rank}: the search runs on rank 0; serve()")
        try:
            return self._run(stop_after)
        finally:
            self.ranks.close()

    def serve(self) -> int:
        """A rank other than 0: evaluate this rank's share of rank 0's batches until its search
        ends. Writes nothing. Returns the number of batches served."""
        return self.ranks.serve(self.fitness)

    def _run(self, stop_after: int | None) -> dict[str, Any]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self.load_state():
            self.initialise()
        opt = self.opt
        bar = tqdm(
            total=opt.proposals(),
            initial=len(self.log),
            desc=f"search ({opt.name})",
            disable=not self.cfg["progress"],
            leave=False,
        )
        done = 0
        while not opt.finished and (stop_after is None or done < stop_after):
            records = []
            batch = [widths_of_ratios(pos, self.prep.units, self.cfg) for pos in opt.ask()]
            ready = self.prefetch(batch)
            for widths in batch:
                record = self.evaluate(widths, ready)
                records.append(record)
                self.note(record, opt.generation + 1)
                bar.update(1)
                bar.set_postfix(best=f"{self.log[-1]['best']:.4f}", hits=self.hits)
            fits = [r["fitness"] for r in records]
            opt.tell(fits)
            self.history.append(
                {
                    "cycle": opt.generation,
                    **opt.log_fields(),
                    "best": opt.best_fitness,
                    "mean": float(np.mean(fits)),
                    "best_widths": widths_of_ratios(opt.best_position, self.prep.units, self.cfg),
                }
            )
            done += 1
            self.save_state()
            self.write_log()
        bar.close()
        return self.result()

    def feasible(self, record: dict[str, Any]) -> bool:
        return record["cost_ratio"] <= float(self.cfg["fitness"]["target"]) * (1 + 1e-9)

    def note(self, record: dict[str, Any], generation: int) -> None:
        """One row of the fitness-vs-evaluations log; `best`: what `best()` would choose now."""
        best = record["fitness"]
        if self.log:
            last, ok = self.log[-1], self.log[-1]["feasible_seen"]
            if ok and not self.feasible(record):
                best = last["best"]
            elif ok == self.feasible(record):
                best = max(best, last["best"])
        self.log.append(
            {
                "evaluation": len(self.log) + 1,
                "unique": self.evaluated,
                "generation": generation,
                "fitness": record["fitness"],
                "accuracy": record["accuracy"],
                "cost_ratio": record["cost_ratio"],
                "best": best,
                "feasible_seen": self.feasible(record)
                or bool(self.log and self.log[-1]["feasible_seen"]),
            }
        )

    def write_log(self) -> None:
        buf = io.StringIO()
        fields = ["evaluation", "unique", "generation", "fitness", "accuracy", "cost_ratio", "best"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.log)
        atomic_write_bytes(self.out_dir / LOG_FILE, buf.getvalue().encode())

    def best(self) -> dict[str, Any]:
        """The fittest structure within the budget (the fittest of all when none is): the
        penalty alone would let a slightly-over structure win on accuracy."""
        within = [r for r in self.cache.values() if self.feasible(r)]
        return max(within or self.cache.values(), key=lambda r: r["fitness"])

    def result(self) -> dict[str, Any]:
        lookups = self.evaluated + self.hits
        return {
            "optimizer": self.opt.name,
            "finished": self.opt.finished,
            "cycles_done": self.opt.generation,
            "best": self.best(),
            "start": {k: self.cache.get(key_of(v), {"widths": v}) for k, v in self.start.items()},
            "history": self.history,
            "log": self.log,
            "evaluated": self.evaluated,
            "cache_hits": self.hits,
            "cache_hit_rate": self.hits / lookups if lookups else 0.0,
            "eval_seconds": round(self.eval_seconds, 2),
            "world_size": self.world_size,
            "candidates_per_minute": 60.0 * self.evaluated / self.eval_seconds
            if self.eval_seconds
            else None,
        }


def check_ranks(cfg: dict[str, Any], info: DistInfo | None) -> None:
    """A search that cannot be spread is refused before any work: the latency budget times
    each candidate on the CPU, where N ranks timing side by side (and each its own unpruned
    model) would make the fitness depend on the rank."""
    if info is not None and info.distributed and cfg["fitness"]["budget"] == "latency":
        raise ValueError(
            "prune.fitness.budget latency cannot be spread over ranks (each rank would time "
            "candidates while the others run): use budget flops under torchrun, or one process"
        )


def run_search(
    detector: nn.Module,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    stop_after: int | None = None,
    info: DistInfo | None = None,
) -> tuple[Search, dict[str, Any]]:
    """Cluster and run the optimiser. Returns the search (its best structure is
    `report["best"]["widths"]`) and its report. `cfg` is `resolve_settings(prune_section)`;
    `info`: the ranks to spread the evaluations over (rank 0 calls this, the others
    `serve_search`)."""
    check_ranks(cfg, info)
    prep = prepare(detector, train_ds, val_ds, cfg)
    s = Search(detector, prep, cfg, out_dir, info)
    result = s.run(stop_after)
    best = result["best"]["widths"]
    units = [
        {
            "layer": u.name,
            "before": u.width,
            "cluster": prep.clusters[u.name].summary() if u.name in prep.clusters else None,
            "after": w,
        }
        for u, w in zip(prep.units, best)
    ]
    report = {
        "prepare_seconds": round(prep.seconds, 2),
        # SSD300-VGG16 has no BatchNorm: candidates are judged on inherited weights alone
        "bn_recalibration": "done"
        if batchnorms(detector)
        else "skipped: the model has no BatchNorm",
        **result,
        "per_layer": units,
    }
    return s, report


def serve_search(
    detector: nn.Module,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    info: DistInfo,
) -> int:
    """A rank other than 0: prepare as rank 0 does (the same clusters, scores and fitness
    images: all deterministic), then evaluate this rank's share of each batch until rank 0's
    search ends. Writes nothing; returns the batches served."""
    check_ranks(cfg, info)
    prep = prepare(detector, train_ds, val_ds, cfg)
    return Search(detector, prep, cfg, Path("."), info).serve()  # out_dir unused: no writes


def search(
    detector: nn.Module,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    out_dir: str | Path,
    stop_after: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """`run_search`, then the best structure built (refitted, or inherited + BN recalibrated).
    Returns (pruned detector, search report)."""
    s, report = run_search(detector, train_ds, val_ds, cfg, out_dir, stop_after)
    model, refit = s.build_final(report["best"]["widths"], train_ds)
    return model, {**report, **refit}
