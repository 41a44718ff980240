"""ACP: clustering + particle swarm structure search (compress/prune/acp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.prune.acp.cluster import channel_responses, cluster_channels
from compress.prune.acp.pso import Swarm
from compress.prune.acp.search import (
    Search,
    prepare,
    resolve_settings,
    round_width,
    search,
    widths_of_ratios,
)

# --------------------------------------------------------------------------- PSO


def test_swarm_converges_to_known_optimum():
    optimum = np.array([0.2, 0.7, 0.5, 0.9])
    s = Swarm([0.0] * 4, [1.0] * 4, particles=10, cycles=60, seed=3)
    for _ in range(60):
        s.tell([-float(((p - optimum) ** 2).sum()) for p in s.positions])
        s.move()
    np.testing.assert_allclose(s.gbest, optimum, atol=0.02)
    assert s.gbest_fitness > -1e-3


def test_each_dimension_moves_by_its_own_velocity():
    s = Swarm([0.0] * 3, [1.0] * 3, particles=2, cycles=5, c1=2.0, c2=2.0, vmax=10.0, seed=7)
    s.positions = np.array([[0.5, 0.5, 0.5], [0.2, 0.4, 0.6]])
    s.velocities = np.array([[0.0, 0.0, 0.0], [0.01, -0.02, 0.03]])
    s.pbest = np.array([[0.5, 0.6, 0.5], [0.2, 0.4, 0.6]])
    s.pbest_fitness = np.array([1.0, 0.5])
    s.gbest, s.gbest_fitness = s.pbest[0].copy(), 1.0
    # the same random numbers the swarm will draw, from a copy of its generator
    twin = np.random.default_rng()
    twin.bit_generator.state = s.rng.bit_generator.state
    r1, r2 = twin.random((2, 3)), twin.random((2, 3))
    before, v0, w = s.positions.copy(), s.velocities.copy(), s.w()
    s.move()
    expected_v = w * v0 + 2 * r1 * (s.pbest - before) + 2 * r2 * (s.gbest - before)
    np.testing.assert_allclose(s.velocities, expected_v)
    np.testing.assert_allclose(s.positions, np.clip(before + expected_v, 0.0, 1.0))
    # particle 0: only dimension 1 has somewhere to go (its pbest and gbest differ there)
    assert s.positions[0, 0] == 0.5 and s.positions[0, 2] == 0.5
    assert s.positions[0, 1] > 0.5


def test_velocity_clamp_inertia_schedule_and_bounds():
    s = Swarm([0.0, 0.0], [1.0, 2.0], particles=3, cycles=5, vmax=0.1, inertia=(0.9, 0.4), seed=0)
    assert s.w() == pytest.approx(0.9)
    s.tell([0.0, 1.0, 2.0])
    s.gbest = np.array([1.0, 2.0])
    s.move()
    assert np.all(np.abs(s.velocities) <= np.array([0.1, 0.2]) + 1e-12)
    assert np.all((s.positions >= 0) & (s.positions <= [1.0, 2.0]))
    for _ in range(4):
        s.move()
    assert s.cycle == 5 and s.w() == pytest.approx(0.4)


def test_swarm_state_roundtrip_continues_identically():
    a = Swarm([0.0] * 3, [1.0] * 3, particles=4, cycles=6, seed=1)
    f = lambda s: [-float(((p - 0.3) ** 2).sum()) for p in s.positions]  # noqa: E731
    for _ in range(2):
        a.tell(f(a))
        a.move()
    b = Swarm([0.0] * 3, [1.0] * 3, particles=4, cycles=6, seed=99)
    b.load_state_dict(__import__("json").loads(__import__("json").dumps(a.state_dict())))
    for s in (a, b):
        s.tell(f(s))
        s.move()
    np.testing.assert_array_equal(a.positions, b.positions)


# --------------------------------------------------------------------------- clustering


def _synthetic_responses(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 12)) + 3.0  # all-positive means: raw cosine would merge everything
    x[:, 4] = 2.0 * x[:, 1] + 3.0 + rng.normal(scale=1e-3, size=64)
    x[:, 7] = x[:, 1] + rng.normal(scale=1e-3, size=64)
    x[:, 9] = 0.5 * x[:, 2] - 1.0
    return x


@pytest.mark.parametrize("method", ["dbscan", "agglomerative"])
def test_clustering_finds_duplicate_channels(method):
    c = cluster_channels(_synthetic_responses(), {"method": method})
    labels = c.labels
    assert labels[1] == labels[4] == labels[7] != -1
    assert labels[2] == labels[9] != labels[1]
    others = [0, 3, 5, 6, 8, 10, 11]
    assert len({labels[i] for i in others}) == len(others) or all(labels[i] == -1 for i in others)
    assert c.keep == 12 - 2 - 1
    assert len([r for r in c.representatives if r in (1, 4, 7)]) == 1
    assert len([r for r in c.representatives if r in (2, 9)]) == 1


def test_constant_channels_form_one_cluster():
    x = _synthetic_responses()
    x[:, 0] = 5.0
    x[:, 3] = -2.0
    c = cluster_channels(x)
    assert c.labels[0] == c.labels[3] != -1
    assert c.keep == 12 - 2 - 1 - 1


def test_channel_responses_on_a_conv_with_duplicated_filters():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3)
    with torch.no_grad():
        conv.weight[5] = conv.weight[2] * 3.0  # channel 5 = 3 x channel 2 (+ another bias)
    model = nn.Sequential(conv, nn.ReLU())
    resp = channel_responses(model, {"conv": conv}, [torch.rand(8, 3, 16, 16) for _ in range(4)])
    assert resp["conv"].shape == (32, 6)
    c = cluster_channels(resp["conv"])
    assert c.labels[2] == c.labels[5] != -1 and c.keep == 5


# --------------------------------------------------------------------------- search


class ToyImages(torch.utils.data.Dataset):
    """Random images with one box each: enough for teacher agreement and BN statistics."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        self.x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
        self.size = size

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        s = float(self.size)
        return self.x[i], {
            "boxes": torch.tensor([[0.1 * s, 0.2 * s, 0.5 * s, 0.9 * s]]),
            "labels": torch.tensor([0]),
            "image_id": i,
            "orig_size": (self.size, self.size),
            "ratio": (1.0, 1.0),
            "pad": (0.0, 0.0),
        }


SIZE = 128
SMALL = {
    "cluster": {"images": 8, "batch_size": 8},
    "pso": {"particles": 2, "cycles": 2, "seed": 0},
    "fitness": {"images": 4, "batch_size": 4, "bn_batches": 1, "target": 0.5},
    "progress": False,
}


@pytest.fixture(scope="module")
def ssdlite():
    from compress.models import ssd

    torch.manual_seed(0)
    return ssd.build("ssdlite320_mobilenet_v3_large", ["person"], SIZE).eval()


@pytest.fixture(scope="module")
def toy_data():
    return ToyImages(8, SIZE, 0), ToyImages(4, SIZE, 1)


def test_round_width_is_a_multiple_of_8_within_bounds():
    assert round_width(37.0, 64, 8, 8) == 40
    assert round_width(2.0, 64, 8, 8) == 8
    assert round_width(70.0, 72, 8, 8) == 72
    assert round_width(3.0, 6, 8, 8) == 6  # a layer narrower than the floor keeps its width
    cfg = resolve_settings({})
    assert all(w % 8 == 0 for w in widths_of_ratios([0.33, 0.5], _units([96, 120]), cfg))


def _units(widths):
    from compress.prune.acp.groups import Unit

    return [Unit(f"u{i}", w) for i, w in enumerate(widths)]


def test_unknown_settings_are_rejected():
    with pytest.raises(ValueError, match="pso.particle"):
        resolve_settings({"pso": {"particle": 3}})
    with pytest.raises(ValueError, match="proxy"):
        resolve_settings({"fitness": {"proxy": "magic"}})


@pytest.fixture(scope="module")
def prepared(ssdlite, toy_data):
    cfg = resolve_settings(SMALL)
    return cfg, prepare(ssdlite, *toy_data, cfg)


@pytest.fixture(scope="module")
def whole(ssdlite, prepared, tmp_path_factory):
    cfg, prep = prepared
    s = Search(ssdlite, prep, cfg, tmp_path_factory.mktemp("whole"))
    return s, s.run()


def test_search_on_ssdlite_gives_smaller_model_that_reloads(ssdlite, whole, tmp_path):
    from compress.evaluate import count_flops
    from compress.models.load import load_detector_dir, save_detector

    s, result = whole
    model = s.build(result["best"]["widths"])
    base_flops = count_flops(ssdlite, SIZE)
    flops = count_flops(model, SIZE)
    assert flops < base_flops
    assert result["best"]["cost_ratio"] == pytest.approx(flops / base_flops, rel=1e-6)
    assert result["evaluated"] >= 2 and len(result["history"]) == 2
    assert result["evaluated"] + result["cache_hits"] == 4  # 2 particles x 2 cycles
    assert result["history"][1]["best"] >= result["history"][0]["best"]
    widths = [m.out_channels for m in (model.get_submodule(u.name) for u in s.prep.units)]
    assert widths == result["best"]["widths"]
    assert any(w < u.width for w, u in zip(widths, s.prep.units))
    folder = save_detector(model, tmp_path / "model")
    again = load_detector_dir(folder).eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        a, b = model(x), again(x)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)
    boxes, scores = again.decode(b)
    assert boxes.shape == (1, a[0].shape[1], 4) and scores.shape[-1] == 1


def test_units_named_whole_keep_every_channel_in_every_candidate(ssdlite, prepared, tmp_path):
    _, prep = prepared
    names = [u.name for u in prep.units]
    kept = names[::2]
    # a glob and exact names: every other unit is not searched
    cfg = resolve_settings({**SMALL, "whole": [kept[0][:-1] + "*", *kept[1:]]})
    s = Search(ssdlite, prep, cfg, tmp_path)
    result = s.run()
    for record in s.cache.values():
        for u, w in zip(prep.units, record["widths"]):
            if u.name in kept:
                assert w == u.width, u.name
    cut = [w < u.width for u, w in zip(prep.units, result["best"]["widths"])]
    assert any(cut) and result["best"]["cost_ratio"] < 1
    with pytest.raises(ValueError, match="prune.whole"):
        resolve_settings({"whole": "*.project.conv"})


def test_resume_gives_the_same_result_as_an_uninterrupted_search(
    ssdlite, prepared, whole, tmp_path
):
    cfg, prep = prepared
    first = Search(ssdlite, prep, cfg, tmp_path).run(stop_after=1)
    assert not first["finished"] and (tmp_path / "acp_state.json").is_file()
    rest = Search(ssdlite, prep, cfg, tmp_path).run()
    assert rest["finished"]
    assert rest["best"] == whole[1]["best"]
    assert rest["history"] == whole[1]["history"]
    other = resolve_settings({**SMALL, "pso": {**SMALL["pso"], "seed": 5}})
    with pytest.raises(ValueError, match="other settings"):
        Search(ssdlite, prep, other, tmp_path).run()


TINY_CFG = """
[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=48
size=3
stride=1
pad=1
activation=leaky
[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear
[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def test_search_works_on_a_darknet_yolo_and_saves_a_cfg(tmp_path):
    from compress.models.load import load_detector_dir, save_detector
    from compress.models.yolo import YOLO

    torch.manual_seed(0)
    det = YOLO.from_cfg(TINY_CFG, 64, ["person"]).eval()
    cfg = resolve_settings({**SMALL, "pso": {"particles": 3, "cycles": 2}})
    model, report = search(det, ToyImages(8, 64, 0), ToyImages(4, 64, 1), cfg, tmp_path / "s")
    assert [u["layer"] for u in report["per_layer"]] == ["module_list.0.conv", "module_list.2.conv"]
    widths = [u["after"] for u in report["per_layer"]]
    assert widths != [32, 48] and all(w % 8 == 0 for w in widths)
    again = load_detector_dir(save_detector(model, tmp_path / "model"))
    assert f"filters={widths[0]}" in again.to_cfg()
    assert again.module_list[3].conv.out_channels == 18  # the prediction conv keeps its width


def test_search_verb_on_the_smoke_recipe_writes_model_report_and_plots(assets, tmp_path):
    import json

    from compress.__main__ import main
    from compress.models.load import load_detector_dir
    from tests.conftest import need

    need(assets, "coco128/images/train2017", "coco128/labels/train2017", "darknet/coco.names")
    # `search` is `prune --method acp`
    rc = main(
        ["search", "--recipe", "configs/ssdlite-person.yaml", "--profile", "smoke", "--out", str(tmp_path),
         "--particles", "2", "--swarm-cycles", "1", "--target", "0.6", "--no-recover"]
    )  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == "acp" and report["recovered"] is None
    assert report["final"]["flops"] < report["baseline"]["flops"]
    assert report["settings"]["pso"]["particles"] == 2
    assert report["search"]["history"][0]["cycle"] == 1
    assert {"acp_fitness.png", "acp_widths.png"} <= set(report["acp_plots"])
    model = load_detector_dir(tmp_path / "model")
    assert model.input_size == (160, 160)


def test_search_verb_rejects_bad_flags():
    from compress.__main__ import main

    with pytest.raises(SystemExit, match="target"):
        main(["search", "--recipe", "configs/ssdlite-person.yaml", "--out", "x", "--target", "1.5"])


def test_fitness_penalises_only_missing_the_budget():
    from compress.prune.acp.fitness import combine

    cfg = {"target": 0.5, "penalty": 2.0}
    assert combine(0.8, 0.4, cfg) == pytest.approx(0.8)
    assert combine(0.8, 0.5, cfg) == pytest.approx(0.8)
    assert combine(0.8, 0.6, cfg) == pytest.approx(0.8 - 2.0 * 0.2)
    assert combine(0.9, 0.75, cfg) < combine(0.7, 0.5, cfg)  # over budget loses to on budget
