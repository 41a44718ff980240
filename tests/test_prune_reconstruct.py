"""Least-squares reconstruction after channel surgery, and keeping the pre-recovery weights
when recovery makes a cycle worse."""

from __future__ import annotations

import torch

from compress.evaluate import model_figures as figures
from compress.models.yolo import YOLO
from compress.prune.channel import Plan, compact
from compress.prune.graph import build_graph
from compress.prune.reconstruct import reconstruct
from compress.prune.run import Context, recover_or_keep
from tests.conftest import need


def _tiny_with_duplicates(assets) -> tuple[YOLO, Plan]:
    """yolov3-tiny at 128 px whose conv 4 has every channel twice (32 filters, each copied):
    a plan that keeps one copy loses no information, only the layout of the next conv."""
    (cfg,) = need(assets, "darknet/yolov3-tiny.cfg")
    torch.manual_seed(0)
    model = YOLO.from_cfg(cfg, 128).eval()
    unit = model.module_list[4]
    with torch.no_grad():
        unit.conv.weight[32:] = unit.conv.weight[:32]
        for t in (unit.bn.weight, unit.bn.bias, unit.bn.running_mean, unit.bn.running_var):
            t[32:] = t[:32]
        for m in model.modules():  # every channel on: a realistic, non-degenerate signal
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    g = build_graph(model.blocks)
    keep = {i: list(range(int(g.layers[i]["filters"]))) for i in g.convs()}
    keep[4] = list(range(32))
    return model, Plan(keep=keep, widths={i: (len(k), len(k)) for i, k in keep.items()})


def test_reconstruction_restores_the_outputs_a_cut_changed(assets):
    model, plan = _tiny_with_duplicates(assets)
    images = [
        torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(s)) for s in (1, 2)
    ]
    test = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    ref = model(test)
    pruned = compact(model, plan)
    cut = max((a - b).abs().max().item() for a, b in zip(ref, pruned(test)))
    report = reconstruct(model, pruned, plan, images, positions=10_000, ridge=1e-9)
    fixed = max((a - b).abs().max().item() for a, b in zip(ref, pruned(test)))
    # only conv 6 read the cut channels; its relative error goes from large to ~0
    assert list(report) == ["6"]
    assert report["6"]["error_before"] > 0.1 and report["6"]["error_after"] < 1e-6
    scale = max(a.abs().max().item() for a in ref)
    assert cut > 0.02 * scale and fixed < 1e-3 * cut
    assert pruned.module_list[6].conv.in_channels == 32  # the structure is the pruned one


def test_reconstruction_leaves_models_with_uncut_inputs_alone(assets):
    model, plan = _tiny_with_duplicates(assets)
    plan.keep[4] = list(range(64))
    pruned = compact(model, plan)
    assert reconstruct(model, pruned, plan, [torch.rand(1, 3, 128, 128)]) == {}


class _Worse:
    """A recovery that damages the model (zeroes the head) and an evaluator that notices."""

    def recover(self, model, out_dir, teacher):
        with torch.no_grad():
            model.module_list[15].conv.weight.zero_()
        return model, {"method": "damage"}

    def evaluate(self, model):
        dead = model.module_list[15].conv.weight.abs().sum() == 0
        return {"AP50": 0.1 if dead else 0.3, "AP50_95": 0.05}


def test_recovery_that_lowers_ap_keeps_the_weights_it_started_from(assets, tmp_path):
    model, _ = _tiny_with_duplicates(assets)
    w = _Worse()
    before = figures(model, w.evaluate(model))
    ctx = Context(evaluate=w.evaluate, recover=w.recover, sparsify=None)
    kept, report, after, why = recover_or_keep(model, before, ctx, tmp_path, model)
    assert why and "0.3000 to 0.1000" in why
    assert after["AP50"] == 0.3 and report["after"]["AP50"] == 0.1
    assert kept.module_list[15].conv.weight.abs().sum() > 0


def test_torch_pruning_path_records_what_it_cut_and_refits_the_same_way(assets):
    """ACP prunes through Torch-Pruning; the generic targets (found on its graph) refit the
    consumer of the cut channels as well as the Darknet-plan path does."""
    import copy

    from compress.prune.acp.groups import prune_to, refit_targets
    from compress.prune.reconstruct import refit_convs

    model, _ = _tiny_with_duplicates(assets)
    test = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    ref = model(test)
    removed: dict[str, list[int]] = {}
    pruned = prune_to(copy.deepcopy(model), {"module_list.4.conv": list(range(32))}, removed)
    assert removed == {"module_list.4.conv": list(range(32, 64))}
    targets = refit_targets(model, pruned, removed)
    assert [t.name for t in targets] == ["module_list.6.conv"]
    assert targets[0].pruned_bn is pruned.module_list[6].bn
    images = [
        torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(s)) for s in (1, 2)
    ]
    cut = max((a - b).abs().max().item() for a, b in zip(ref, pruned(test)))
    refit_convs(model, pruned, targets, images, positions=10_000, ridge=1e-9)
    fixed = max((a - b).abs().max().item() for a, b in zip(ref, pruned(test)))
    assert fixed < 1e-3 * cut


def test_acp_finds_groups_on_a_frozen_model_and_leaves_it_frozen(assets):
    """The pipeline's unpruned base was a distillation teacher (frozen) before the versus
    stage prunes it with ACP; Torch-Pruning traces autograd, so that once found no groups."""
    from compress.prune.acp.groups import find_units

    model, _ = _tiny_with_duplicates(assets)
    model.requires_grad_(False)
    assert len(find_units(model)) == 11
    assert not any(p.requires_grad for p in model.parameters())


def test_sampled_patches_equal_unfold_columns():
    """The refit reads the conv's input patches at sampled positions only; they must be the
    very columns F.unfold would give, for strides, padding and dilation alike."""
    from torch.nn import functional as F

    from compress.prune.reconstruct import patches

    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 9)
    for conv in (
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),
        torch.nn.Conv2d(3, 4, 1),
        torch.nn.Conv2d(3, 4, 3, padding=2, dilation=2),
    ):
        out = conv(x)
        pick = torch.randperm(out.shape[2] * out.shape[3])[:7]
        full = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
        assert torch.equal(patches(x, conv, pick, out.shape[3]), full[:, :, pick])
