"""Threshold estimators, importance criteria and the sparsity hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.prune.importance import IMPORTANCE, build_importance
from compress.prune.sparsity import BNL1Sparsity, gamma_stats
from compress.prune.thresholds import THRESHOLDS, estimate


def _bimodal(n_low=300, n_high=200, seed=0):
    rng = np.random.default_rng(seed)
    low = 10 ** rng.normal(-4, 0.3, n_low)
    high = 10 ** rng.normal(-0.5, 0.2, n_high)
    return np.r_[low, high]


@pytest.mark.parametrize("name", ["otsu", "gmm", "gap", "knee"])
def test_adaptive_thresholds_split_sparse_from_useful_channels(name):
    scores = _bimodal()
    t = estimate(name, scores)
    below = int((scores < t.value).sum())
    # The sparse crowd (300 channels around 1e-4) and only it falls under the threshold.
    assert 280 <= below <= 320, (name, t.value, below)
    assert t.method == name and "log10_threshold" in t.as_dict()


def test_estimators_say_whether_the_scores_are_split():
    rng = np.random.default_rng(0)
    one = 10 ** rng.normal(-0.2, 0.1, 500)  # un-sparsified gammas: one population
    two = _bimodal()
    assert estimate("gmm", two).details["two_populations"]
    assert not estimate("gmm", one).details["two_populations"]
    assert (
        estimate("otsu", two).details["separability"]
        > 0.9
        > estimate("otsu", one).details["separability"]
    )


def test_percentile_prunes_exactly_the_fraction():
    scores = np.arange(1, 101) / 100.0
    t = THRESHOLDS["percentile"](scores, fraction=0.3)
    assert int((scores < t.value).sum()) == 30
    assert t.as_dict() == {"value": t.value, "method": "percentile", "fraction": 0.3}


def test_threshold_errors_are_clear():
    with pytest.raises(ValueError, match="unknown threshold 'nope'"):
        estimate("nope", [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        estimate("otsu", [1.0, float("nan")])
    with pytest.raises(ValueError, match="all scores are equal"):
        estimate("gmm", [0.5] * 10)


def test_importance_criteria_rank_channels():
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[2] = 1.0  # filter 2 is the large one
        conv.weight[3] = -1.0
        bn.weight.copy_(torch.tensor([0.1, -0.9, 0.0, 0.3]))
    assert torch.equal(build_importance("bn_scale")(conv, bn), torch.tensor([0.1, 0.9, 0.0, 0.3]))
    assert build_importance("l1")(conv, bn).tolist() == [0.0, 0.0, 27.0, 27.0]
    assert int(build_importance("l2")(conv, bn).argmin()) in (0, 1)
    # FPGM: filters 0 and 1 are identical (both zero) -> closest to the rest, lowest scores.
    fpgm = build_importance("fpgm")(conv, bn)
    assert fpgm[0] == fpgm[1] < fpgm[2] == fpgm[3]
    with pytest.raises(ValueError, match="gradients"):
        build_importance("taylor")(conv, bn)
    out = bn(conv(torch.rand(2, 3, 8, 8)))
    out.sum().backward()
    assert build_importance("taylor")(conv, bn).shape == (4,)
    assert set(IMPORTANCE) >= {"bn_scale", "l1", "l2", "taylor", "fpgm"}


def test_sparsity_hook_pulls_gammas_to_zero_with_schedule():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 1))
    hook = BNL1Sparsity([net[1]], s=0.05, epochs=4, schedule="step", at=0.5, factor=0.1)
    assert [hook.strength(e) for e in range(4)] == [
        0.05,
        0.05,
        pytest.approx(0.005),
        pytest.approx(0.005),
    ]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x = torch.rand(4, 3, 8, 8)
    for epoch in range(4):
        for step in range(5):
            opt.zero_grad()
            net(x).pow(2).mean().mul(0).backward()  # only the L1 term moves gammas
            hook.after_backward(net, epoch, step)
            opt.step()
        hook.on_epoch_end(net, epoch, {})
    # s * lr * steps = 0.05*0.5*10 + 0.005*0.5*10 = 0.275: every gamma (1.0 at init) fell by it.
    assert torch.allclose(net[1].weight, torch.full((16,), 1 - 0.275), atol=1e-5)
    assert [e["epoch"] for e in hook.log] == [-1, 0, 1, 2, 3]
    assert hook.log[-1]["quantiles"]["0.5"] < hook.log[0]["quantiles"]["0.5"]
    assert sum(hook.log[-1]["log10_hist"]["counts"]) == 16


def test_sparsity_rejects_bad_settings():
    with pytest.raises(ValueError, match="schedule"):
        BNL1Sparsity([nn.BatchNorm2d(2)], 1e-3, 3, schedule="cosine-ish")
    with pytest.raises(ValueError, match="no BN"):
        BNL1Sparsity([], 1e-3, 3)
    assert gamma_stats([nn.BatchNorm2d(5)])["channels"] == 5
