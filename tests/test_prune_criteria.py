"""The literature's channel criteria, the layer-rate allocators and the criteria table."""

from __future__ import annotations

import json

import pytest
import torch

from compress.evaluate import count_flops
from compress.models.yolo import YOLO
from compress.prune.allocate import (
    ALLOCATORS,
    AllocContext,
    Floors,
    FlopCounter,
    channel_entropy,
    iqr_clip,
)
from compress.prune.channel import compact, conv_scores
from compress.prune.feature_criteria import distillation_taylor
from compress.prune.features import collect_features
from compress.prune.graph import build_graph, conv_unit
from compress.prune.importance import IMPORTANCE, build_importance
from tests.conftest import need

# A small Darknet YOLO with every structure the pruner handles: a shortcut-coupled group,
# max-pools, a route back, an upsample and a route that concatenates, two heads.
TINY_CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
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
mask=3,4,5
anchors=10,14,23,27,37,58,81,82,135,169,344,319
classes=1
num=6

[route]
layers=-3

[upsample]
stride=2

[route]
layers=-1,4

[convolutional]
batch_normalize=1
filters=16
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
anchors=10,14,23,27,37,58,81,82,135,169,344,319
classes=1
num=6
"""


def _tiny(seed: int = 0) -> YOLO:
    torch.manual_seed(seed)
    model = YOLO.from_cfg(TINY_CFG, 64, ["person"]).eval()
    for m in model.modules():  # realistic BN statistics: every channel carries signal
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def _images(n: int = 2, batch: int = 4) -> list[torch.Tensor]:
    return [
        torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(s)) for s in range(n)
    ]


def _maps(seed: int = 0) -> torch.Tensor:
    """[6 images, 5 channels, 8, 8]: 0 random, 1 = 2 x channel 0, 2 constant, 3 dead (0),
    4 random."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 5, 8, 8, generator=g)
    x[:, 1] = 2 * x[:, 0]
    x[:, 2] = 0.7
    x[:, 3] = 0.0
    return x


# ---- criteria ------------------------------------------------------------------------


def test_hrank_gives_a_dead_map_rank_0_a_constant_map_rank_1_a_rich_map_full_rank():
    s = build_importance("hrank")(None, None, features=_maps())
    assert s[3] == 0
    assert 1 <= s[2] < 1.01
    assert s[0] > 7.9 and s[4] > 7.9  # random 8 x 8 maps are full rank


def test_similarity_rank_and_tcfp_keep_one_of_two_duplicate_maps():
    x = _maps()
    for name in ("similarity_rank", "tcfp"):
        s = build_importance(name)(None, None, features=x)
        low, high = sorted([float(s[0]), float(s[1])])
        assert low < 0.05 * high, name  # one copy is judged redundant, the other is not
        assert high >= 0.5 * float(s[4]), name
        assert s[3] == 0 and s[2] < 0.5 * high, name  # dead and constant maps: low


def test_tcfp_representatives_outrank_every_duplicate():
    g = torch.Generator().manual_seed(1)
    base = torch.rand(4, 3, 6, 6, generator=g)
    # three groups of near-duplicates (copies + 1% noise)
    x = torch.cat([base + 0.01 * torch.rand(4, 3, 6, 6, generator=g) for _ in range(3)], 1)
    s = build_importance("tcfp")(None, None, features=x)
    kept = set(torch.topk(s, 3).indices.tolist())
    assert {k % 3 for k in kept} == {0, 1, 2}  # one of each group


def test_correlation_judges_one_channel_of_a_linear_triple_redundant():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 5, 6, 6, generator=g)
    x[:, 2] = x[:, 0] + x[:, 1]  # predictable from 0 and 1 (and 0 from 1 and 2, ...)
    x[:, 4] = 3.0  # constant
    s = build_importance("correlation")(None, None, features=x)
    order = torch.argsort(s).tolist()
    assert order[0] == 4 and s[4] == 0
    assert order[1] in (0, 1, 2) and s[order[1]] < 1e-3  # one of the triple goes
    assert min(s[c] for c in (0, 1, 2) if c != order[1]) > 0.3  # the other two stay
    assert s[3] > 0.5  # the independent one


def test_reconstruction_orders_removals_by_the_refit_error_they_leave():
    g = torch.Generator().manual_seed(3)
    mix = torch.randn(6, 6, generator=g)
    mix[:, 5] = mix[:, 0] + 0.05 * torch.randn(6, generator=g)  # channel 5 is almost 0
    x = torch.einsum("nchw,cd->ndhw", torch.randn(10, 6, 5, 5, generator=g), mix)
    w = torch.randn(7, 6, 1, 1, generator=g)
    w[:, 3] = 0.0  # nobody reads channel 3
    s = build_importance("reconstruction")(None, None, [w], features=x)
    assert int(torch.argmin(s)) == 3

    # the exact least-squares refit error of removing channel c after 3 (1x1 reader)
    xs = x.transpose(0, 1).flatten(1).double()
    xs = xs - xs.mean(1, keepdim=True)
    y = w.flatten(1).double() @ xs
    errors = {}
    for c in (0, 1, 2, 4, 5):
        rest = [j for j in (0, 1, 2, 4, 5) if j != c]
        coef = torch.linalg.lstsq(xs[rest].T, y.T).solution
        errors[c] = float((xs[rest].T @ coef - y.T).pow(2).sum()) / xs.shape[1]
    second = sorted(range(6), key=lambda c: float(s[c]))[1]
    # the cheapest next removal is one of the near-duplicates, the one the exact refit finds
    # cheapest, at the error level the refit leaves
    assert second in (0, 5) and second == min(errors, key=errors.get)
    assert float(s[second]) == pytest.approx(errors[second], rel=1e-3)


def test_feature_criteria_need_features_and_say_so():
    model = _tiny()
    with pytest.raises(ValueError, match="features="):
        conv_scores(model, build_importance("hrank"))


def test_every_criterion_scores_every_prunable_conv_of_a_yolo():
    model = _tiny()
    graph = build_graph(model.blocks)
    feats = collect_features(model, _images(1), max_hw=8)
    assert feats[0].shape == (4, 16, 8, 8)  # subsampled from 64 x 64
    model.zero_grad()
    for name in IMPORTANCE:
        crit = build_importance(name)
        if crit.needs_grad:
            continue
        if crit.needs_teacher:
            crit.prepare(model, model, _images(1))
        scores = conv_scores(model, crit, graph, features=feats)
        members = [i for m in graph.prunable_groups().values() for i in m]
        assert sorted(scores) == sorted(members), name
        for i, s in scores.items():
            assert s.shape == (int(graph.layers[i]["filters"]),) and torch.isfinite(s).all(), name


def test_output_taylor_sees_what_the_person_head_uses():
    teacher = _tiny()
    student = _tiny()
    unit = student.module_list[6]
    with torch.no_grad():
        unit.bn.weight[:4] = 0.0  # channels 0-3 of conv 6 switched off
        unit.bn.bias[:4] = 0.0
    grads = distillation_taylor(teacher, student, _images(2))
    s = grads[unit.bn]
    assert (s[:4] == 0).all() and (s[4:] > 0).all()
    # the unpruned model scoring itself: soft targets would give all zeros, sampled do not
    own = distillation_taylor(teacher, teacher, _images(2))
    assert sum(float(v.sum()) for v in own.values()) > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_existing_criteria_ignore_the_features_they_do_not_need():
    model = _tiny()
    graph = build_graph(model.blocks)
    feats = collect_features(model, _images(1), max_hw=8)
    for name in ("bn_scale", "bn_scale_next", "l1", "fpgm"):
        a = conv_scores(model, build_importance(name), graph)
        b = conv_scores(model, build_importance(name), graph, features=feats)
        assert all(torch.equal(a[i], b[i]) for i in a), name


# ---- allocators ------------------------------------------------------------------------


def _context(model, criterion="l1", fitness=None) -> AllocContext:
    graph = build_graph(model.blocks)
    feats = collect_features(model, _images(1), max_hw=8)
    return AllocContext(
        model=model,
        graph=graph,
        scores=conv_scores(model, build_importance(criterion), graph, features=feats),
        floors=Floors(round_to=2, min_channels=4, min_fraction=0.1),
        flops=FlopCounter(model, graph),
        features=feats,
        fitness=fitness,
        options={"ga": {"population": 4, "generations": 2}},
    )


def test_flop_counter_equals_the_flops_of_the_built_model():
    model = _tiny()
    ctx = _context(model)
    assert ctx.flops.full == count_flops(model, 64)
    alloc = ALLOCATORS["uniform"](ctx, int(0.5 * ctx.flops.full))
    assert ctx.flops(alloc.plan) == count_flops(compact(model, alloc.plan), 64)


@pytest.mark.parametrize("name", sorted(ALLOCATORS))
def test_every_allocator_hits_the_flops_goal_within_the_floors(name):
    model = _tiny()

    def fitness(pruned):
        with torch.no_grad():
            return float(sum((a - b).pow(2).mean() for a, b in zip(pruned(x), ref)))

    x = _images(1)[0]
    with torch.no_grad():
        ref = model(x)
    ctx = _context(model, "correlation" if name == "ga_correlation" else "l1", fitness)
    for goal in (0.7, 0.45):
        alloc = ALLOCATORS[name](ctx, int(goal * ctx.flops.full))
        built = count_flops(compact(model, alloc.plan), 64) / ctx.flops.full
        assert abs(built - goal) < 0.06, (name, goal, built)
        for i, idx in alloc.plan.keep.items():
            width = int(ctx.graph.layers[i]["filters"])
            assert len(idx) == width or (len(idx) % 2 == 0 and len(idx) >= 4), (name, i)
        # shortcut-coupled convs keep the same channels
        assert alloc.plan.keep[2] == alloc.plan.keep[3]


def test_global_ranking_reaches_the_goal_even_when_every_score_is_equal():
    model = _tiny()
    ctx = _context(model)
    ctx.scores = {i: torch.ones_like(s) for i, s in ctx.scores.items()}
    alloc = ALLOCATORS["global"](ctx, int(0.5 * ctx.flops.full))
    assert abs(alloc.flops / ctx.flops.full - 0.5) < 0.06


def test_entropy_allocator_gives_a_layer_of_constant_outputs_less_retention():
    model = _tiny()
    ctx = _context(model)
    ctx.features[6] = torch.full_like(ctx.features[6], 0.3)  # conv 6 says nothing
    alloc = ALLOCATORS["entropy"](ctx, int(0.6 * ctx.flops.full))
    ratios = alloc.ratios(ctx.graph)
    assert ratios[6] == min(ratios.values())
    assert len(alloc.plan.keep[6]) == 4  # down to the floor (0.1 x 32 -> 4)


def test_channel_entropy_and_box_plot_fences():
    x = torch.zeros(2, 2, 4, 4)
    x[:, 1] = torch.rand(2, 4, 4)
    h = channel_entropy(x)
    assert h[0] == 0 and h[1] > 2
    clipped = iqr_clip([1.0, 1.1, 0.9, 1.05, 50.0])
    assert clipped.max() < 2.0 and clipped[0] == 1.0


# ---- the table -------------------------------------------------------------------------


def test_criteria_table_on_real_person_images(assets, tmp_path):
    """Two criteria and one allocator at two FLOPs points on real images: equal FLOPs, refit,
    AP on val, the three files."""
    need(assets, "coco-person-val2017/images/val")
    from compress.data.build import datasets_for
    from compress.prune.criteria_table import run_table, table_settings

    model = _tiny()
    data = {
        "format": "yolo",
        "root": "coco-person-val2017",
        "split": "train",
        "val_split": "val",
        "names": "darknet/coco.names",
        "classes": ["person"],
        "val_fraction": 0,
        "max_images": 8,
    }
    train_ds, val_ds = datasets_for(model, data, None)
    recipe = {
        "prune": {"round_to": 4, "min_channels": 4},
        "criteria": {
            "flops": [0.7, 0.5],
            "criteria": ["l1", "hrank", "output_taylor"],
            "allocators": ["entropy"],
            "allocator_criterion": "l1",
            "val_images": 4,
            "feature_images": 4,
            "grad_images": 4,
            "batch_size": 4,
            "reconstruct": {"images": 4, "positions": 64},
            "recover_steps": 1,
            "adaptive": {"threshold": "otsu", "cycles": 2, "layers": False},
        },
    }
    table = run_table(model, train_ds, val_ds, table_settings(recipe), tmp_path, progress=False)
    rows = table["rows"]
    assert [r["method"] for r in rows] == [
        m for m in ("l1", "hrank", "output_taylor", "entropy/l1") for _ in (0, 1)
    ]
    for r in rows:
        assert "error" not in r, r
        assert abs(r["flops_ratio"] - r["goal"]) < 0.06
        assert 0 <= r["AP50"] <= 1 and "refit_error" in r
    saved = json.loads((tmp_path / "criteria.json").read_text())
    assert len(saved["rows"]) == 8 and saved["ranking"][0]["mean_AP50"] is not None
    md = (tmp_path / "criteria.md").read_text()
    assert "| entropy/l1 |" in md and "0.7x" in md
    assert (tmp_path / "criteria.png").read_bytes()[:4] == b"\x89PNG"

    # the seed method's cycles on the best-ranked criterion, each a point below the last
    seed = table["adaptive"]
    assert "error" not in seed, seed
    assert seed["criterion"] == next(
        r["method"] for r in table["ranking"] if "/" not in r["method"]
    )
    ratios = [p["flops_ratio"] for p in seed["points"]]
    assert 1 <= len(ratios) <= 2 and ratios == sorted(ratios, reverse=True) and ratios[0] < 1
    assert "Seed method (adaptive otsu threshold" in md

    # a second sitting with one more criterion measures only that criterion's cells
    recipe["criteria"]["criteria"] = ["l1", "l2"]
    recipe["criteria"]["allocators"] = []
    again = run_table(model, train_ds, val_ds, table_settings(recipe), tmp_path, progress=False)
    kept = {(r["method"], r["goal"]): r for r in rows}
    assert [r["method"] for r in again["rows"][:4]] == ["l1", "l1", "l2", "l2"]
    assert again["rows"][:2] == [kept[("l1", 0.7)], kept[("l1", 0.5)]]
    assert "AP50" in again["rows"][2] and again["unpruned"] == table["unpruned"]
    # the other methods' cells and the seed method's points are kept, not measured again
    assert again["rows"][4:] == [r for r in rows if r["method"] not in ("l1", "l2")]
    assert again["adaptive"] == seed
    assert "| entropy/l1 |" in (tmp_path / "criteria.md").read_text()


def test_table_settings_reject_unknown_names():
    from compress.prune.criteria_table import table_settings

    with pytest.raises(ValueError, match="unknown nope"):
        table_settings({"criteria": {"criteria": ["l1", "nope"]}})
    with pytest.raises(ValueError, match="unknown setting"):
        table_settings({"criteria": {"flop": [0.5]}})
    cfg = table_settings({"prune": {"min_channels": 32}})
    assert cfg["min_channels"] == 32 and cfg["criteria"] == list(IMPORTANCE)


def test_full_yolov3_structure_runs_the_feature_criteria(assets):
    (cfg,) = need(assets, "darknet/yolov3.cfg")
    torch.manual_seed(0)
    model = YOLO.from_cfg(cfg, 64).eval()
    graph = build_graph(model.blocks)
    feats = collect_features(model, [torch.rand(2, 3, 64, 64)], max_hw=4)
    ctx_scores = conv_scores(model, build_importance("similarity_rank"), graph, features=feats)
    ctx = AllocContext(model, graph, ctx_scores, Floors(8, 8, 0.05), FlopCounter(model, graph))
    alloc = ALLOCATORS["global"](ctx, int(0.5 * ctx.flops.full))
    small = compact(model, alloc.plan)
    assert abs(count_flops(small, 64) / ctx.flops.full - 0.5) < 0.05
    # shortcut partners share their kept channels
    for members in graph.prunable_groups().values():
        assert len({tuple(alloc.plan.keep[i]) for i in members}) == 1
    assert conv_unit(small.module_list[0])[0].out_channels % 8 == 0


def test_gradient_criteria_leave_the_starting_model_as_it_was(assets):
    need(assets, "coco-person-val2017/images/val")
    from compress.data.build import datasets_for
    from compress.prune.criteria_table import Bench, table_settings

    model = _tiny()
    data = {"format": "yolo", "root": "coco-person-val2017", "split": "train",
            "names": "darknet/coco.names", "classes": ["person"], "val_fraction": 0.5,
            "max_images": 8}  # fmt: skip
    train_ds, val_ds = datasets_for(model, data, None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = table_settings({"criteria": {"grad_images": 4, "batch_size": 4}})
    bench = Bench(model, train_ds, val_ds, cfg)
    for name in ("taylor", "output_taylor"):
        scores = bench.scores(name)
        assert any(float(s.sum()) > 0 for s in scores.values()), name
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_score_channels_gives_each_criterion_what_it_reads():
    from compress.prune.scoring import score_channels

    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = _images(1)
    for name in ("l1", "hrank", "reconstruction", "output_taylor"):
        scores = score_channels(model, name, images=images)
        assert scores and all(torch.isfinite(s).all() for s in scores.values()), name
    assert torch.equal(
        score_channels(model, "l1")[0], conv_scores(model, build_importance("l1"))[0]
    )
    with pytest.raises(ValueError, match="labelled"):
        score_channels(model, "taylor", images=images)
    with pytest.raises(ValueError, match="images="):
        score_channels(model, "hrank")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_ranking_compares_methods_on_the_points_all_of_them_have():
    """A table filled in sittings: `b` has an extra 0.7x cell where every method scores high;
    ranking on it would put `b` first although `a` beats it at the shared 0.5x point."""
    from compress.prune.criteria_table import ranking

    rows = [
        {"method": "a", "goal": 0.5, "AP50": 0.20},
        {"method": "b", "goal": 0.5, "AP50": 0.15},
        {"method": "b", "goal": 0.7, "AP50": 0.30},
        {"method": "c", "goal": 0.5, "error": "boom"},
    ]
    ranked = ranking({"rows": rows})
    assert [r["method"] for r in ranked] == ["a", "b", "c"]
    assert ranked[1]["mean_AP50"] == 0.15 and ranked[2]["mean_AP50"] is None
