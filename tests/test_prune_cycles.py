"""Slimming's cycles through the prune run: stop rules and records, with stand-in training so
each case takes seconds."""

from __future__ import annotations

import json

import pytest
import torch

from compress.evaluate import model_figures as figures
from compress.models.load import load_detector_dir
from compress.models.yolo import YOLO
from compress.prune.graph import prunable_bns
from compress.prune.run import Context, prune_rounds
from compress.prune.slimming import PRUNE_DEFAULTS, Slimming, settings
from tests.conftest import need


def _model(assets) -> YOLO:
    (cfg,) = need(assets, "darknet/yolov3-tiny.cfg")
    torch.manual_seed(0)
    return YOLO.from_cfg(cfg, 64, [f"c{k}" for k in range(80)]).eval()


class Fake:
    """Sparsify = shrink half the gammas of every prunable BN; recover = nothing; AP falls
    with the FLOPs as `ap_per_flop` says."""

    def __init__(self, flops0: float, ap_per_flop: float = 0.0) -> None:
        self.flops0, self.k, self.calls = flops0, ap_per_flop, {"sparsify": 0, "recover": 0}

    def evaluate(self, model):
        f = figures(model, None)["flops"]
        return {"AP50": 0.5 - self.k * (1 - f / self.flops0), "AP50_95": 0.25}

    def sparsify(self, model, out_dir, hooks, epochs):
        self.calls["sparsify"] += 1
        g = torch.Generator().manual_seed(self.calls["sparsify"])
        with torch.no_grad():
            for bn in prunable_bns(model):
                n = bn.num_features // 2
                bn.weight[:n] *= 1e-3 * (0.5 + torch.rand(n, generator=g))
        for h in hooks:
            h.on_epoch_end(model, 0, {})

    def recover(self, model, out_dir, teacher):
        self.calls["recover"] += 1
        return model, {"method": "none"}


def _run(model, fake, tmp_path, accumulate=None, **prune):
    recipe = {
        "prune": {"layers": False, "compare_baseline": False, "reconstruct": False, **prune},
        "sparsity": {"epochs": 1},
    }
    ctx = Context(fake.evaluate, fake.recover, fake.sparsify, accumulate_grads=accumulate)
    return prune_rounds(model, ctx, Slimming(recipe), tmp_path)


def test_cycles_stop_at_the_flops_target_and_record_each_cycle(assets, tmp_path):
    model = _model(assets)
    fake = Fake(figures(model, None)["flops"])
    final, report = _run(
        model, fake, tmp_path, cycles=5, target_flops=0.3, threshold="otsu", max_fraction=0.2
    )
    flops = [c["recovered"]["flops"] for c in report["cycles"]]
    assert flops == sorted(flops, reverse=True) and len(flops) >= 2
    assert report["stop_reason"].startswith("FLOPs target reached")
    assert flops[-1] <= 0.3 * fake.flops0 < flops[-2]
    assert fake.calls == {"sparsify": len(flops), "recover": len(flops)}
    # every cycle saved a loadable model and logged the gamma distribution
    c1 = report["cycles"][0]
    assert load_detector_dir(c1["model"]).input_size == (64, 64)
    assert len(c1["gamma_log"]) == 2 and c1["prune"]["threshold"]["method"] == "otsu"
    assert figures(final, None)["flops"] == flops[-1]
    json.dumps(report)  # the report is plain JSON


def test_a_cycle_that_crosses_the_ap_limit_is_rejected(assets, tmp_path):
    model = _model(assets)
    fake = Fake(figures(model, None)["flops"], ap_per_flop=0.05)  # -0.05 AP50 per 100% FLOPs
    final, report = _run(
        model,
        fake,
        tmp_path,
        cycles=5,
        target_flops=0.05,
        max_ap_drop=0.03,
        threshold="otsu",
        max_fraction=0.3,
    )
    last = report["cycles"][-1]
    assert last.get("rejected") and "max_ap_drop" in report["stop_reason"]
    kept = report["cycles"][-2]["recovered"]
    assert figures(final, None)["flops"] == kept["flops"]
    assert 0.5 - kept["AP50"] <= 0.03 < 0.5 - last["recovered"]["AP50"]


def test_no_channel_under_the_threshold_stops(assets, tmp_path):
    model = _model(assets)
    fake = Fake(figures(model, None)["flops"])
    fake.sparsify = lambda *a, **k: None  # gammas stay 1.0: nothing is separable
    with torch.no_grad():
        for bn in prunable_bns(model):
            bn.weight.fill_(1.0)
    final, report = _run(
        model,
        fake,
        tmp_path,
        cycles=3,
        threshold="percentile",
        threshold_options={"fraction": 0.0},
        min_channels=1,
        round_to=1,
    )
    assert report["stop_reason"] == "no channel under the threshold"
    assert final is model and len(report["cycles"]) == 1


def test_unknown_settings_are_rejected():
    with pytest.raises(ValueError, match="prune: unknown setting"):
        settings({"treshold": "otsu"}, PRUNE_DEFAULTS, "prune")


def test_prune_cli_help_lists_registries(capsys):
    from compress.__main__ import main

    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = capsys.readouterr().out
    assert "gmm" in out and "bn_scale" in out and "--target-flops" in out


def test_taylor_importance_gets_gradients_from_the_loss(assets, tmp_path):
    model = _model(assets)
    fake = Fake(figures(model, None)["flops"])
    with pytest.raises(ValueError, match="needs gradients"):
        _run(model, fake, tmp_path, cycles=1, importance="taylor", threshold="otsu")

    def accumulate(m):
        m.train()
        target = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 60.0]]), "labels": torch.tensor([0])}]
        loss, _ = m.loss(m(torch.rand(1, 3, 64, 64)), target)
        loss.backward()
        m.eval()

    baseline = figures(model, fake.evaluate(model))
    final, report = _run(
        model, fake, tmp_path, accumulate, cycles=1, importance="taylor", threshold="otsu"
    )
    assert report["cycles"][0]["prune"]["channels"]["channels_removed"] > 0
    assert figures(final, None)["flops"] < baseline["flops"]


def test_cli_overrides_reach_the_recipe():
    from compress.prune.cli import get_args_parser, prune_section

    args = get_args_parser().parse_args(
        ["--recipe", "r.yaml", "--out", "o", "--threshold", "otsu", "--cycles", "2", "--no-layers"]
    )
    section = {"method": "slimming", "threshold": "gmm", "round_to": 8}
    assert prune_section(args, section) == {
        "method": "slimming",
        "threshold": "otsu",
        "round_to": 8,
        "cycles": 2,
        "layers": False,
    }
    # another strategy starts from its own defaults, and refuses slimming's flags
    acp = get_args_parser().parse_args(["--recipe", "r", "--out", "o", "--method", "acp"])
    assert prune_section(acp, section) == {"method": "acp"}
    with pytest.raises(SystemExit, match="flags of --method slimming"):
        prune_section(
            get_args_parser().parse_args(
                ["--recipe", "r", "--out", "o", "--method", "acp", "--cycles", "2"]
            ),
            section,
        )
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--recipe", "r.yaml", "--out", "o", "--threshold", "guess"])


def test_fixed_baseline_is_compared_at_equal_flops(assets, tmp_path):
    model = _model(assets)
    fake = Fake(figures(model, None)["flops"])
    _, report = _run(
        model, fake, tmp_path, cycles=1, compare_baseline=True, threshold="otsu", max_fraction=0.4
    )
    comp = report["threshold_comparison"]
    adaptive, fixed = comp["adaptive"], comp["percentile"]
    assert (
        fixed["threshold"]["method"] == "uniform percentile"
        and 0 < fixed["threshold"]["fraction"] < 1
    )
    assert (
        abs(fixed["pruned"]["flops"] - adaptive["pruned"]["flops"])
        <= 0.1 * adaptive["pruned"]["flops"]
    )
    assert {"AP50", "flops"} <= set(fixed["recovered"]) and {"AP50", "flops"} <= set(
        adaptive["recovered"]
    )
    # the same recovery budget: one recover call for each
    assert fake.calls["recover"] == 2


def test_data_aware_criterion_reads_feature_maps_of_training_images(assets, tmp_path):
    """`prune.importance: reconstruction` (or any criterion that reads feature maps) scores on
    the first `feature_images` training images, and the cycle cuts by those scores."""
    from compress.data.build import datasets_for

    need(assets, "coco128/labels/train2017")
    model = _model(assets)
    train_ds, _ = datasets_for(
        model,
        {"format": "yolo", "root": "coco128", "split": "train2017", "max_images": 8,
         "val_fraction": 0},
    )  # fmt: skip
    fake = Fake(figures(model, None)["flops"])
    recipe = {
        "prune": {
            "layers": False,
            "compare_baseline": False,
            "reconstruct": False,
            "importance": "reconstruction",
            "threshold": "percentile",
            "threshold_options": {"fraction": 0.3},
            "feature_images": 4,
            "cycles": 1,
        },
        "sparsity": {"epochs": 0},
    }
    ctx = Context(fake.evaluate, fake.recover, fake.sparsify, train_ds=train_ds)
    pruned, report = prune_rounds(model, ctx, Slimming(recipe), tmp_path)
    assert report["cycles"][0]["prune"]["channels"]["channels_removed"] > 0
    assert figures(pruned, None)["flops"] < fake.flops0
    with pytest.raises(ValueError, match="reads feature maps"):
        prune_rounds(model, Context(fake.evaluate, fake.recover, fake.sparsify),
                     Slimming(recipe), tmp_path / "no-data")  # fmt: skip
