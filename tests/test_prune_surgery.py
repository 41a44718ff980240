"""Channel and layer surgery on Darknet YOLOs (tiny from the real cfg, v3/SPP structure)."""

from __future__ import annotations

import pytest
import torch

from compress.models.darknet_cfg import parse_cfg
from compress.models.person import specialize
from compress.models.yolo import YOLO
from compress.prune.channel import choose_channels, compact, conv_scores, keep_count, prune_channels
from compress.prune.graph import build_graph, prunable_bns
from compress.prune.importance import BNScale
from compress.prune.layers import prune_layers, residual_units
from compress.prune.thresholds import THRESHOLDS
from tests.conftest import need


def _tiny(assets, size=128) -> YOLO:
    (cfg,) = need(assets, "darknet/yolov3-tiny.cfg")
    torch.manual_seed(0)
    model = YOLO.from_cfg(cfg, size).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _random(assets, name: str, size: int) -> YOLO:
    (cfg,) = need(assets, f"darknet/{name}.cfg")
    torch.manual_seed(0)
    return YOLO.from_cfg(cfg, size).eval()


def _zero_gammas(bns, fraction=0.5, beta_std=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in bns:
            z = torch.rand(bn.num_features, generator=g) < fraction
            bn.weight[z] = 0.0
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * beta_std)


def test_graph_of_tiny_groups_and_fixed_heads(assets):
    model = _tiny(assets)
    g = build_graph(model.blocks)
    # 13 convs; the two head convs (no BN, feeding [yolo]) cannot shrink.
    assert len(g.convs()) == 13
    assert set(g.groups()) - set(g.prunable_groups()) == {15, 22}
    # The conv after route(-1, 8) reads 128 channels of conv 18 then 256 of conv 8, in order.
    assert g.inputs[21] == [(18, 128), (8, 256)]
    assert len(prunable_bns(model)) == 11


@pytest.mark.parametrize(
    "name, importance",
    [("yolov3-tiny", "bn_scale"), ("yolov3-tiny", "bn_scale_next"), ("yolov3", "bn_scale_next")],
)
def test_zero_gamma_channels_prune_without_changing_outputs(assets, name, importance):
    from compress.prune.importance import build_importance

    # yolov3: shortcut-coupled groups, whose members are read through the residual sums
    model = _tiny(assets) if name == "yolov3-tiny" else _random(assets, name, 64)
    _zero_gammas(prunable_bns(model), beta_std=0.0)
    x = torch.rand(2, 3, model.input_size[0], model.input_size[1])
    ref = model(x)
    small, plan, thr = prune_channels(
        model,
        build_importance(importance),
        lambda v: THRESHOLDS["percentile"](v, 0.0),
        round_to=1,
        min_channels=1,
    )
    assert plan.summary()["channels_removed"] > 1000
    out = small(x)
    for a, b in zip(ref, out):
        assert a.shape == b.shape
        assert (a - b).abs().max() < 1e-4
    assert "filters=" in small.to_cfg()


def test_removed_beta_is_folded_into_the_next_layer(assets):
    """Channels of conv 13 (1x1) with gamma 0 but beta != 0 feed conv 14 (3x3) and, through
    route -4, conv 18 (1x1): after folding, the 26x26 head is unchanged and the 13x13 head is
    unchanged away from the zero-padded border; without folding both move."""
    model = _tiny(assets)
    bn = model.module_list[13].bn
    with torch.no_grad():
        bn.weight[::2] = 0.0
        bn.bias.normal_(0, 0.5)
    g = build_graph(model.blocks)
    scores = conv_scores(model, BNScale(), g)
    plan = choose_channels(g, scores, 0.0, round_to=1, min_channels=1)
    assert plan.widths[13] == (256, 128) and all(
        a == b for i, (a, b) in plan.widths.items() if i != 13
    )
    x = torch.rand(1, 3, 128, 128)
    ref = model(x)
    folded = compact(model, plan)(x)
    unfolded = compact(model, plan, fold=False)(x)
    assert (ref[1] - folded[1]).abs().max() < 1e-4
    assert (ref[0] - folded[0])[..., 1:-1, 1:-1].abs().max() < 1e-4
    assert (ref[1] - unfolded[1]).abs().max() > 1e-2


def test_round_to_and_minimum_width():
    assert keep_count(3, 256) == 8
    assert keep_count(17, 256) == 24
    assert keep_count(0, 64, min_fraction=0.25) == 16
    assert keep_count(250, 252) == 252
    assert keep_count(5, 64, round_to=1, min_channels=1) == 5


def test_pruned_widths_are_multiples_of_eight(assets):
    model = _tiny(assets)
    _zero_gammas(prunable_bns(model), fraction=0.6)
    small, plan, _ = prune_channels(model, BNScale(), THRESHOLDS["otsu"])
    prunable = {i for m in build_graph(model.blocks).prunable_groups().values() for i in m}
    assert all(plan.widths[i][1] % 8 == 0 and plan.widths[i][1] >= 8 for i in prunable)
    assert sum(plan.widths[i][1] for i in prunable) < 0.6 * sum(plan.widths[i][0] for i in prunable)
    assert small(torch.rand(1, 3, 128, 128))[0].shape[1] == 255


@pytest.mark.parametrize("name", ["yolov3", "yolov3-spp"])
def test_full_yolov3_channel_and_layer_pruning_cuts_70_percent(assets, tmp_path, name):
    from compress.evaluate import count_flops
    from compress.models.darknet_weights import load_weights, save_weights

    (cfg,) = need(assets, f"darknet/{name}.cfg")
    torch.manual_seed(0)
    model = specialize(
        YOLO.from_cfg(cfg, 64, ["person"] + [f"c{k}" for k in range(79)]), ["person"]
    ).eval()
    # Random weights shaped like a sparsity-trained net: most gammas collapsed near zero.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in prunable_bns(model):
            low = torch.rand(bn.num_features, generator=g) < 0.7
            bn.weight.copy_(
                torch.where(low, 1e-4, 0.5) * (1 + 0.1 * torch.rand(bn.num_features, generator=g))
            )
    units = residual_units(model)
    assert len(units) == 23
    # Make 12 units clearly useless so the layer threshold has something to find.
    with torch.no_grad():
        for u in units[::2]:
            model.module_list[u.convs[1]].bn.weight.mul_(1e-3)
    flops0 = count_flops(model, 64)
    thinner, layer_report = prune_layers(model, THRESHOLDS["otsu"])
    assert len(layer_report["removed_shortcuts"]) == 12
    assert layer_report["layers_after"] == len(model.blocks) - 36
    small, plan, thr = prune_channels(thinner, BNScale(), THRESHOLDS["otsu"])
    flops1 = count_flops(small, 64)
    assert flops1 <= 0.3 * flops0, (flops0, flops1)
    out = small(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in out] == [18, 18, 18]
    # Saves as cfg + weights and reloads to the same outputs.
    (tmp_path / "m.cfg").write_text(small.to_cfg())
    save_weights(small, tmp_path / "m.weights")
    again = YOLO.from_cfg(tmp_path / "m.cfg", 64).eval()
    load_weights(again, tmp_path / "m.weights")
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(small(x), again(x)):
        assert torch.allclose(a, b, atol=1e-5)
    blocks = parse_cfg(tmp_path / "m.cfg")[1:]
    assert sum(b["type"] == "shortcut" for b in blocks) == 11
    # It trains: one loss + backward step reaches every remaining conv.
    small.train()
    target = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 56.0]]), "labels": torch.tensor([0])}]
    loss, _ = small.loss(small(torch.rand(1, 3, 64, 64)), target)
    loss.backward()
    assert all(m.conv.weight.grad is not None for m in small.module_list if hasattr(m, "conv"))
    # It exports: the legacy ONNX exporter at opset 13 (what TensorRT 8.2 takes), and
    # onnxruntime gives PyTorch's boxes and scores.
    ort = pytest.importorskip("onnxruntime")
    x = torch.rand(1, 3, 64, 64)
    wrapped = small.export_module().eval()  # eval: the exporter restores the wrapper's mode
    with torch.no_grad():
        want = wrapped(x)
    torch.onnx.export(
        wrapped, x, tmp_path / "m.onnx", opset_version=13, dynamo=False, input_names=["images"]
    )
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()}
    )
    for a, b in zip(want, got):
        assert torch.allclose(a, torch.from_numpy(b), rtol=1e-3, atol=1e-3)


def test_removed_beta_is_folded_into_a_head_conv_bias(assets):
    """Conv 14 feeds the 13x13 head conv (1x1, bias, no BN): its removed channels' constant
    goes into that bias, exactly."""
    model = _tiny(assets)
    bn = model.module_list[14].bn
    with torch.no_grad():
        bn.weight[:24] = 0.0
        bn.bias.normal_(0, 0.5)
    g = build_graph(model.blocks)
    plan = choose_channels(g, conv_scores(model, BNScale(), g), 0.0, round_to=1, min_channels=1)
    assert {i: w for i, w in plan.widths.items() if w[0] != w[1]} == {14: (512, 488)}
    x = torch.rand(1, 3, 128, 128)
    ref, out = model(x), compact(model, plan)(x)
    assert (ref[0] - out[0]).abs().max() < 1e-4 and torch.equal(ref[1], out[1])


def _rescale_channel(model, i, c, a, graph):
    """Scale conv i's channel c by a after BN (gamma, beta) and the weights reading it by 1/a:
    the network computes the same function (leaky ReLU, max-pool and upsample commute)."""
    from compress.prune.channel import following_weights
    from compress.prune.graph import conv_unit

    _, bn, _ = conv_unit(model.module_list[i])
    with torch.no_grad():
        bn.weight[c] *= a
        bn.bias[c] *= a
        for w in following_weights(model, graph)[i]:
            w[:, c] /= a


def test_bn_scale_next_ignores_the_scale_a_layer_is_free_to_choose(assets):
    from compress.prune.importance import build_importance

    model = _tiny(assets)
    g = build_graph(model.blocks)
    x = torch.rand(1, 3, 128, 128)
    ref = model(x)
    before = {k: conv_scores(model, build_importance(k), g) for k in ("bn_scale", "bn_scale_next")}
    # conv 8 is read through a max-pool (conv 10) and through route 20 (conv 21's channels
    # 128..383); conv 13 by conv 14 and, through route 17, conv 18.
    for i in (8, 13):
        _rescale_channel(model, i, 3, 8.0, g)
    for a, b in zip(ref, model(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    after = {k: conv_scores(model, build_importance(k), g) for k in before}
    for i in (8, 13):
        assert float(after["bn_scale"][i][3]) == pytest.approx(8 * float(before["bn_scale"][i][3]))
        torch.testing.assert_close(after["bn_scale_next"][i], before["bn_scale_next"][i])


def test_bn_scale_next_scores_a_channel_nobody_reads_zero(assets):
    from compress.prune.channel import following_weights
    from compress.prune.importance import build_importance

    model = _tiny(assets)
    g = build_graph(model.blocks)
    reads = following_weights(model, g)
    assert [tuple(w.shape) for w in reads[8]] == [(512, 256, 3, 3), (256, 256, 3, 3)]
    with torch.no_grad():
        for w in reads[8]:
            w[:, 5] = 0.0
    scores = conv_scores(model, build_importance("bn_scale_next"), g)[8]
    assert scores[5] == 0.0 and bool((scores.abs() > 0).sum() == 255)
