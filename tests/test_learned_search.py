"""The learned searches: ddpg (double-actor DDPG + LSTM fitness simulator) and adversarial
(GAL gate generator against a discriminator, Pareto selection), and the model-side view they
share (space.py: layer features, the FLOPs model, the gated model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compress.prune.acp.adversarial import AdversarialOptimizer, fronts
from compress.prune.acp.ddpg import DDPGOptimizer
from compress.prune.acp.groups import Unit
from compress.prune.acp.inherit import inherit
from compress.prune.acp.search import Search, prepare
from compress.prune.acp.space import FlopsModel, Space
from compress.prune.acp.strategy import Adversarial
from tests.test_acp import TINY_CFG, ToyImages


@pytest.fixture(scope="module")
def yolo():
    from compress.models.yolo import YOLO

    torch.manual_seed(0)
    return YOLO.from_cfg(TINY_CFG, 64, ["person"]).eval()


@pytest.fixture(scope="module")
def prepared(yolo):
    cfg = Adversarial(
        {"prune": {"fitness": {"images": 4, "batch_size": 4, "bn_batches": 2}, "progress": False}}
    ).cfg
    return cfg, prepare(yolo, ToyImages(8, 64, 0), ToyImages(4, 64, 1), cfg)


@pytest.fixture(scope="module")
def space(yolo, prepared):
    _, prep = prepared
    return Space(yolo, prep.units, prep.scores, None, prep.calib, target=0.5)


# --------------------------------------------------------------------------- the space


def test_the_flops_model_equals_the_counted_flops_of_cut_models(yolo, prepared, space, tmp_path):
    cfg, prep = prepared
    exact = {**cfg, "round_to": 1, "min_channels": 1}
    search = Search(yolo, prep, exact, tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(4):
        widths = [int(rng.integers(1, u.width + 1)) for u in prep.units]
        ratios = np.array(widths) / space.widths
        assert space.flops.ratio(ratios) == pytest.approx(search.flops_ratio(widths), rel=1e-9)
        r = torch.tensor(ratios, requires_grad=True)
        modelled = space.flops.ratio_torch(r)
        modelled.backward()
        assert modelled.item() == pytest.approx(space.flops.ratio(ratios))
        assert (r.grad > 0).all()  # more channels, more FLOPs
    assert space.features.shape == (2, 8) and np.abs(space.features).max() == 1.0


def test_gates_at_low_temperature_are_the_cut_model(yolo, prepared, space):
    _, prep = prepared
    gated = space.gated()
    x = ToyImages(2, 64, 5).x
    widths = [8, 24]
    cut = inherit(yolo, prep.units, widths, prep.scores)
    with torch.no_grad():
        assert torch.allclose(gated.scores(x, None), yolo.decode(yolo(x))[1])
        ratios = torch.tensor([[w / u.width for w, u in zip(widths, prep.units)]] * 2)
        soft = gated.scores(x, ratios, temperature=1e-3)
        assert torch.allclose(soft, cut.decode(cut(x))[1], atol=1e-5)
        assert not torch.allclose(soft, gated.scores(x, None), atol=1e-3)


# --------------------------------------------------------------------------- ddpg


def toy_space(units: int = 6, target: float = 0.5) -> Space:
    """A chain of convs without a model: conv i reads unit i-1 and writes unit i."""
    space = Space(None, [Unit(f"conv{i}", 32) for i in range(units)], {}, target=target)
    eye = np.eye(units)
    space.flops = FlopsModel(
        base=np.linspace(1.0, 2.0, units), out_units=eye, in_share=np.eye(units, k=-1), rest=0.5
    )
    rng = np.random.default_rng(1)
    space.features = np.c_[np.linspace(0, 1, units), rng.random((units, 7))]
    return space


def ddpg(space: Space, project=lambda r: r, **cfg) -> DDPGOptimizer:
    settings = {**DDPGOptimizer.defaults, "population": 4, "episodes": 30, "sim_epochs": 150}
    n = len(space.units)
    opt = DDPGOptimizer(np.full(n, 0.1), np.ones(n), {**settings, **cfg}, project, evaluations=40)
    opt.bind(space)
    return opt


def quadratic(batch: np.ndarray, centre: np.ndarray) -> list[float]:
    return [-float(((b - centre) ** 2).sum()) for b in batch]


def test_the_simulator_learns_the_fitness_of_evaluated_structures():
    opt = ddpg(toy_space())
    rng = np.random.default_rng(0)
    centre = np.linspace(0.3, 0.8, 6)
    train, held = rng.uniform(0.1, 1.0, (40, 6)), rng.uniform(0.1, 1.0, (20, 6))
    opt.X, opt.y = train.tolist(), quadratic(train, centre)
    before = np.mean((opt.predict(train) - np.array(opt.y)) ** 2)
    losses = opt.train_simulator()
    after = np.mean((opt.predict(train) - np.array(opt.y)) ** 2)
    assert losses[-1] < 0.2 * losses[0] and after < 0.2 * before
    # it generalises: structures it never saw are ranked as their fitness ranks them
    rho = np.corrcoef(
        np.argsort(np.argsort(opt.predict(held))), np.argsort(np.argsort(quadratic(held, centre)))
    )
    assert rho[0, 1] > 0.7


def test_agents_keep_the_budget_and_evaluate_only_the_simulators_best():
    space = toy_space(target=0.5)
    opt = ddpg(space)
    ratios, states, actions = opt.rollout(explore=True)
    assert len(states) == 6 and all(0.0 <= a <= 1.0 for a in actions)
    assert space.flops.ratio(ratios) <= 0.5 + 1e-9  # AMC's cap leaves the budget reachable
    assert space.flops.ratio(opt.to_budget(ratios)) == pytest.approx(0.5, abs=1e-6)
    centre = np.linspace(0.3, 0.8, 6)
    opt.start({})
    opt.tell(quadratic(opt.ask(), centre))
    assert opt.buffer.size > 6 * 30  # real structures and simulated episodes replayed
    chosen = opt.predict(opt.ask())
    rng = np.random.default_rng(3)
    others = opt.predict(np.stack([opt.to_budget(r) for r in rng.uniform(0.1, 1, (50, 6))]))
    assert chosen.min() >= np.median(others)


def test_ddpg_beats_random_structures_on_a_known_optimum():
    """The whole loop on a fitness whose optimum is known (one seeded run): the agents, led
    by the simulator, end nearer it than the best of as many random structures at the budget."""
    space = toy_space(target=0.6)
    centre = np.array([0.9, 0.3, 0.9, 0.3, 0.9, 0.3])
    opt = ddpg(space, lambda r: DDPGOptimizer.to_budget(opt, r), population=5, episodes=20)
    opt.start({})
    while not opt.finished:
        opt.tell(quadratic(opt.ask(), centre))
    rng = np.random.default_rng(0)
    randoms = [opt.to_budget(r) for r in rng.uniform(0.1, 1.0, (len(opt.y), 6))]
    assert opt.best_fitness > max(quadratic(np.stack(randoms), centre))


def test_ddpg_state_is_json_and_continues_identically():
    space = toy_space()
    centre = np.linspace(0.3, 0.8, 6)
    a = ddpg(space, episodes=10)
    a.start({})
    a.tell(quadratic(a.ask(), centre))
    state = json.loads(json.dumps(a.state_dict()))
    b = ddpg(space, episodes=10, seed=5)  # other weights: all of them must come from the state
    b.load_state_dict(state)
    np.testing.assert_array_equal(a.ask(), b.ask())
    for opt in (a, b):
        opt.tell(quadratic(opt.ask(), centre))
    np.testing.assert_array_equal(a.ask(), b.ask())
    assert a.sim_loss == b.sim_loss and a.noise == b.noise


# --------------------------------------------------------------------------- adversarial


def gal(space: Space, **cfg) -> AdversarialOptimizer:
    n = len(space.units)
    settings = {**AdversarialOptimizer.defaults, "images": 4, "batch_size": 2, **cfg}
    lower = np.array([8 / u.width for u in space.units])
    opt = AdversarialOptimizer(lower, np.ones(n), settings, lambda r: r, evaluations=12)
    opt.bind(space)
    return opt


def test_the_sparsity_term_moves_the_gates_to_the_flops_budget(space):
    opt = gal(space, adversarial=0.0, steer=0.0, lr=0.1)
    opt.mu = torch.full((2,), 3.0)  # nearly full width: far above the budget
    start = space.flops.ratio(opt.mean_structure())
    opt.train(steps=30)
    end = space.flops.ratio(opt.mean_structure())
    assert start > 0.8 and abs(end - 0.5) < 0.1 and abs(end - 0.5) < abs(start - 0.5) / 3


def test_the_generator_fights_the_discriminator_loss(space):
    """The discriminator, trained alone, learns to tell the gated outputs from the unpruned
    ones (its loss falls); then, with it fixed and no other term, generator steps raise that
    loss again (it is fooled): the generator's gradient comes through the discriminator."""
    opt = gal(space, sparsity=0.0, steer=0.0, lr=0.0, d_lr=1e-3)
    _ = opt.gates  # the unpruned model's outputs on the training images

    noise = torch.randn(8, 2, 2, generator=torch.Generator().manual_seed(0))

    def d_loss() -> float:
        """The discriminator's loss on the generator's structures (fixed draws), all images."""
        losses = []
        with torch.no_grad():
            for eps in noise:
                for x, real in zip(opt.batches, opt.real):
                    fake = opt.gates.scores(x, opt.ratios(eps), 1.0)
                    losses.append(float(opt.discriminator_loss(real, fake)))
        return sum(losses) / len(losses)

    start = d_loss()
    opt.train(steps=40)
    learned = d_loss()
    assert learned < start - 0.3
    mu = opt.mu.clone()
    opt.cfg.update(lr=0.1, d_lr=0.0)  # now only the generator moves
    opt.train(steps=10)
    assert d_loss() > learned + 0.01 and not torch.equal(opt.mu, mu)


def test_non_dominated_sorting_and_the_two_indicator_selection(space):
    objectives = np.array([[1, 5], [2, 4], [3, 1], [1, 4], [0, 0], [2, 1]], dtype=float)
    assert fronts(objectives) == [[0, 1, 2], [3, 5], [4]]
    opt = gal(space, survivors=3)
    # (unit widths 32, 48): more channels pruned vs fitness
    opt.X = [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25], [0.5, 1.0], [0.25, 0.5]]
    opt.y = [0.9, 0.7, 0.4, 0.6, 0.3]
    survivors = opt.select()
    assert sorted(survivors[:3]) == [0, 1, 2]  # the Pareto set, not the three fittest
    assert 3 not in survivors and 4 not in survivors


def test_adversarial_state_is_json_and_continues_identically(space):
    a = gal(space, steps=2, population=3)
    a.start({"budget": np.array([0.5, 0.5])})
    fit = lambda batch: [float(b.sum()) for b in batch]  # noqa: E731
    a.tell(fit(a.ask()))
    state = json.loads(json.dumps(a.state_dict()))
    b = gal(space, steps=2, population=3, seed=9)
    b.load_state_dict(state)
    np.testing.assert_array_equal(a.ask(), b.ask())
    for opt in (a, b):
        opt.tell(fit(opt.ask()))
    np.testing.assert_array_equal(a.ask(), b.ask())
    assert torch.equal(a.mu, b.mu)


# --------------------------------------------------------------------------- the verb


def test_prune_verb_runs_ddpg_to_a_structure_at_the_budget(assets, tmp_path):
    """`prune --method ddpg` end to end (search-compare's test runs adversarial through the
    same prune run)."""
    from compress.__main__ import main
    from tests.conftest import need

    need(
        assets,
        "darknet/yolov3-tiny.cfg",
        "darknet/yolov3-tiny.weights",
        "darknet/coco.names",
        "coco128/labels/train2017",
    )
    argv = ["prune", "--method", "ddpg", "--recipe", "configs/yolov3-tiny-person.yaml",
            "--profile", "smoke", "--out", str(tmp_path), "--evaluations", "4",
            "--population", "2", "--episodes", "8", "--target", "0.5", "--no-recover"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == "ddpg" and report["flops_ratio"] <= 0.5 + 1e-6
    assert report["settings"]["ddpg"]["episodes"] == 8
    search = report["search"]
    assert len(search["log"]) == 4 and search["finished"] and search["history"][-1]["cycle"] == 2


@pytest.mark.parametrize(
    ("method", "flag", "key"),
    [("ddpg", "--episodes", "episodes"), ("adversarial", "--gan-steps", "steps")],
)
def test_each_learned_search_has_its_own_flag(method, flag, key):
    import argparse

    from compress.prune.acp.strategy import SearchStrategy
    from compress.prune.run import STRATEGIES

    parser = argparse.ArgumentParser()
    SearchStrategy.add_arguments(parser.add_argument_group())
    args = parser.parse_args([flag, "3", "--population", "2"])
    assert STRATEGIES[method].overrides(args)[method] == {key: 3, "population": 2}
    with pytest.raises(SystemExit, match=f"{flag} is a flag of the {method} search"):
        STRATEGIES["ga"].overrides(parser.parse_args([flag, "3"]))


def test_the_space_of_ssdlite_models_depthwise_convs_and_gates():
    """SSDLite (depthwise convs, several BatchNorms per unit): the FLOPs model still equals the
    counted FLOPs of a cut, and the gated model at low temperature is that cut."""
    from compress.evaluate import count_flops
    from compress.models import ssd
    from compress.prune.acp.groups import build_graph, channel_scores, find_units

    torch.manual_seed(0)
    model = ssd.build("ssdlite320_mobilenet_v3_large", ["person"], 128).eval()
    graph, _ = build_graph(model)
    units = find_units(model, graph)
    scores = {u.name: channel_scores(model, graph, u) for u in units}
    space = Space(model, units, scores)
    rng = np.random.default_rng(0)
    widths = [int(rng.integers(max(1, u.width // 4), u.width + 1)) for u in units]
    cut = inherit(model, units, widths, scores)
    counted = count_flops(cut, model.input_size) / count_flops(model, model.input_size)
    assert space.flops.ratio(np.array(widths) / space.widths) == pytest.approx(counted, rel=1e-9)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    ratios = torch.as_tensor(np.array(widths) / space.widths, dtype=torch.float32)[None]
    gated = space.gated()
    gated.gates = gated.gates_of(ratios, temperature=1e-3)
    with torch.no_grad():
        soft, full = torch.cat(_flat(gated.model(x))), torch.cat(_flat(model(x)))
        pruned = torch.cat(_flat(cut(x)))
    # relative: the untrained heads' outputs are tiny
    assert (soft - pruned).norm() < 1e-4 * pruned.norm()
    assert (full - pruned).norm() > 1e-2 * pruned.norm()


def _flat(out) -> list[torch.Tensor]:
    if torch.is_tensor(out):
        return [out.flatten()]
    items = out.values() if isinstance(out, dict) else out
    return [t for o in items for t in _flat(o)]
