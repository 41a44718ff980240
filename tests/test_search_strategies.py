"""The structure searches behind one interface: pso, ga, random, ddpg and adversarial propose
per-layer ratios,
get their fitness from the same proxy, budget and cache, resume, and log fitness against
evaluations; each runs through `python -m compress prune --method X`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from compress.prune.acp.optimizers import GeneticOptimizer
from compress.prune.acp.search import LOG_FILE, Search, prepare
from compress.prune.acp.strategy import DDPG, GA, PSO, Adversarial, RandomSearch
from tests.test_acp import TINY_CFG, ToyImages

STRATEGY = {
    "pso": PSO,
    "ga": GA,
    "random": RandomSearch,
    "ddpg": DDPG,
    "adversarial": Adversarial,
}
SMALL = {
    "cluster": {"images": 8, "batch_size": 8},
    "fitness": {"images": 4, "batch_size": 4, "bn_batches": 1, "target": 0.5},
    "pso": {"particles": 3},
    "ga": {"population": 4, "elite": 1},
    "random": {"population": 3},
    "ddpg": {"population": 3, "episodes": 12, "warmup": 4, "batch_size": 16, "sim_epochs": 40},
    "adversarial": {"population": 3, "steps": 2, "images": 4, "batch_size": 2},
    "evaluations": 9,
    "progress": False,
}


@pytest.fixture(scope="module")
def yolo():
    from compress.models.yolo import YOLO

    torch.manual_seed(0)
    return YOLO.from_cfg(TINY_CFG, 64, ["person"]).eval()


@pytest.fixture(scope="module")
def data():
    return ToyImages(8, 64, 0), ToyImages(4, 64, 1)


def settings(method: str, **over) -> dict:
    return STRATEGY[method]({"prune": {**SMALL, **over}}).cfg


@pytest.fixture(scope="module")
def prepared(yolo, data):
    return {m: prepare(yolo, *data, settings(m)) for m in STRATEGY}


@pytest.fixture(scope="module")
def runs(yolo, prepared, tmp_path_factory):
    out = {}
    for m in STRATEGY:
        folder = tmp_path_factory.mktemp(m)
        out[m] = (folder, Search(yolo, prepared[m], settings(m), folder).run())
    return out


@pytest.mark.parametrize("method", list(STRATEGY))
def test_each_search_finds_a_structure_within_the_flops_budget(method, runs):
    folder, result = runs[method]
    best = result["best"]
    assert best["cost_ratio"] <= 0.5 + 1e-9 and best["widths"] != [32, 48]
    # the same evaluation budget: whole generations within 9 lookups
    assert 6 <= len(result["log"]) <= 9 and result["finished"]
    assert result["optimizer"] == method
    assert best["fitness"] == result["log"][-1]["best"]
    within = [r["fitness"] for r in result["log"] if r["cost_ratio"] <= 0.5]
    assert best["fitness"] == max(within)  # the fittest within the budget, not just any


@pytest.mark.parametrize("method", ["ga", "random", "ddpg", "adversarial"])
def test_searches_but_pso_propose_only_structures_near_the_budget(method, runs):
    _, result = runs[method]
    ratios = [r["cost_ratio"] for r in result["log"]]
    assert max(ratios) <= 0.5 + 1e-9
    assert min(ratios) > 0.3  # scaled up to the budget, not left where the draw fell


@pytest.mark.parametrize("method", list(STRATEGY))
def test_the_fitness_log_is_written_one_row_per_evaluation(method, runs):
    folder, result = runs[method]
    with open(folder / LOG_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["evaluation"]) for r in rows] == list(range(1, len(result["log"]) + 1))
    best = [float(r["best"]) for r in rows]
    if method != "pso":  # every proposal at the budget: the best so far never falls
        assert best == sorted(best)
    assert best[-1] == pytest.approx(result["best"]["fitness"])
    assert int(rows[-1]["unique"]) == result["evaluated"]


@pytest.mark.parametrize("method", list(STRATEGY))
def test_a_seeded_search_is_deterministic_and_resumes_identically(
    method, yolo, prepared, runs, tmp_path
):
    _, whole = runs[method]
    cfg = settings(method)
    again = Search(yolo, prepared[method], cfg, tmp_path / "again").run()
    assert again["log"] == whole["log"] and again["best"] == whole["best"]
    first = Search(yolo, prepared[method], cfg, tmp_path / "resumed").run(stop_after=1)
    assert not first["finished"]
    rest = Search(yolo, prepared[method], cfg, tmp_path / "resumed").run()
    assert rest["finished"]
    assert rest["log"] == whole["log"] and rest["history"] == whole["history"]
    assert rest["best"] == whole["best"]
    other = settings(method, **{method: {**SMALL[method], "seed": 7}})
    elsewhere = Search(yolo, prepared[method], other, tmp_path / "other").run()
    assert elsewhere["log"] != whole["log"]


def test_ga_ranks_filters_by_correlation_independence(yolo, prepared):
    from compress.prune.acp.groups import build_graph, channel_scores

    prep = prepared["ga"]
    graph, _ = build_graph(yolo)
    l1 = {u.name: channel_scores(yolo, graph, u) for u in prep.units}
    assert set(prep.scores) == {u.name for u in prep.units}
    assert any(not torch.equal(prep.scores[n], l1[n]) for n in l1)
    assert not prep.clusters  # no clustering pass: the GA does not start from clusters


def test_genetic_operators_keep_bounds_elites_and_state():
    lower, upper = np.zeros(4) + 0.1, np.ones(4)
    cfg = {**GeneticOptimizer.defaults, "population": 6, "elite": 2, "seed": 1}
    ga = GeneticOptimizer(lower, upper, cfg, lambda r: r, evaluations=30)
    assert ga.total == 1 + (30 - 6) // 4 and ga.proposals() == 6 + (ga.total - 1) * 4
    ga.start({})
    target = np.full(4, 0.3)
    fitness = lambda batch: [-float(((b - target) ** 2).sum()) for b in batch]  # noqa: E731
    ga.tell(fitness(ga.ask()))
    elite_before = ga.population[np.argsort(-ga.fitness)[:2]].copy()
    state = json.loads(json.dumps(ga.state_dict()))
    children = ga.ask().copy()
    assert children.shape == (4, 4) and (children >= lower).all() and (children <= upper).all()
    ga.tell(fitness(children))
    assert any(np.array_equal(e, p) for e in elite_before for p in ga.population)
    twin = GeneticOptimizer(lower, upper, cfg, lambda r: r, evaluations=30)
    twin.load_state_dict(state)
    np.testing.assert_array_equal(twin.ask(), children)
    while not ga.finished:
        ga.tell(fitness(ga.ask()))
    assert ga.best_fitness > -0.05  # converges towards the optimum at 0.3


def test_flags_of_another_optimiser_are_refused():
    from compress.__main__ import main

    argv = ["prune", "--recipe", "configs/yolov3-tiny-person.yaml", "--out", "x"]
    with pytest.raises(SystemExit, match="--particles is a flag of the pso search"):
        main(argv + ["--method", "ga", "--particles", "3"])
    with pytest.raises(SystemExit, match="--evaluations must be"):
        main(argv + ["--method", "random", "--evaluations", "0"])
    with pytest.raises(SystemExit, match="flags of --method"):
        main(argv + ["--method", "slimming", "--evaluations", "5"])


def test_search_compare_on_the_smoke_recipe_writes_table_and_plot(assets, tmp_path):
    from compress.__main__ import main
    from compress.models.load import load_detector_dir
    from tests.conftest import need

    need(
        assets,
        "darknet/yolov3-tiny.cfg",
        "darknet/yolov3-tiny.weights",
        "darknet/coco.names",
        "coco128/labels/train2017",
    )
    # every search through the prune run (`prune --method M`), at one budget of 4 lookups
    argv = ["search-compare", "--recipe", "configs/yolov3-tiny-person.yaml", "--profile",
            "smoke", "--out", str(tmp_path), "--evaluations", "4", "--population", "3",
            "--target", "0.5", "--no-recover", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((tmp_path / "search_compare.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"pso", "ga", "random", "ddpg", "adversarial"}
    assert result["target"] == 0.5
    for method, r in rows.items():
        assert 2 <= r["lookups"] <= 4 and r["flops_ratio"] <= 0.5 + 1e-6, method
        assert r["ap50_refit"] is not None and r["ap50_recovered"] is None
        assert (tmp_path / method / "search_log.csv").is_file()
        load_detector_dir(tmp_path / method / "model")
    assert rows["ga"]["inherit"] == "correlation" and rows["pso"]["inherit"] == "cluster"
    text = (tmp_path / "search_compare.md").read_text()
    assert "| ga | correlation |" in text and "random search's final AP50" in text
    assert (tmp_path / "search_compare.png").stat().st_size > 1000


def test_ga_searches_ssdlite_within_the_budget(tmp_path):
    from compress.models import ssd

    torch.manual_seed(0)
    model = ssd.build("ssdlite320_mobilenet_v3_large", ["person"], 128).eval()
    cfg = settings("ga", evaluations=6, ga={"population": 3, "elite": 1})
    prep = prepare(model, ToyImages(8, 128, 0), ToyImages(4, 128, 1), cfg)
    result = Search(model, prep, cfg, tmp_path).run()
    assert len(prep.units) > 30 and result["best"]["cost_ratio"] <= 0.5
    assert len(result["log"]) == 3 + 2  # whole generations within 6: 3, then 2 children
    widths = result["best"]["widths"]
    assert any(w < u.width for w, u in zip(widths, prep.units))
