"""Recovery methods on tiny models: each changes the weights the way it claims."""

from __future__ import annotations

import math

import pytest
import torch

from compress.recover.grafting import coefficient, conv_bn_pairs, entropy, graft
from compress.recover.methods import RECOVERY_METHODS, get_method
from compress.recover.multinet import combination_weights, combine
from tests.train_support import Rectangles, TinyDetector


def tiny(seed: int) -> TinyDetector:
    torch.manual_seed(seed)
    det = TinyDetector()
    with torch.no_grad():  # distinct BN statistics, so grafting them is visible
        for m in det.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return det


def recover_cfg(**over) -> dict:
    return {"epochs": 2, "batch_size": 4, "lr": 0.02, "progress": False, "seed": 1, **over}


def test_entropy_and_coefficient_follow_the_formula():
    assert entropy(torch.ones(50)) == 0.0
    assert entropy(torch.arange(1000.0)) == pytest.approx(math.log(10), rel=1e-3)
    a = coefficient(1.01, 1.0, A=0.4, c=500)
    assert float(a) == pytest.approx(0.4 / math.pi * math.atan(5.0) + 0.5)
    assert float(coefficient(1.0, 1.01, 0.4, 500)) == pytest.approx(
        1 - float(a)
    )  # the pair sums to 1


def test_conv_bn_pairs_find_each_conv_and_its_bn():
    pairs = {name: bn_name for name, _, bn_name, _ in conv_bn_pairs(TinyDetector())}
    assert pairs == {
        "backbone.0.conv": "backbone.0.bn",
        "backbone.2.conv": "backbone.2.bn",
        "neck.conv": "neck.bn",
        "head": None,
    }


@pytest.mark.parametrize("filter_level", [False, True])
def test_graft_applies_the_entropy_coefficient_to_conv_and_its_bn(filter_level):
    nets = [tiny(0), tiny(1)]
    before = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    log = graft(nets, A=0.4, c=500, filter_level=filter_level)
    for i, j in ((0, 1), (1, 0)):  # a ring: each network takes from the other
        own, other, now = before[i], before[j], nets[i].state_dict()
        for conv, bn in (("neck.conv", "neck.bn"), ("backbone.0.conv", "backbone.0.bn")):
            if filter_level:
                a = coefficient(
                    own[f"{bn}.weight"].abs(), other[f"{bn}.weight"].abs(), 0.4, 500
                ).float()
            else:
                a = coefficient(
                    entropy(own[f"{conv}.weight"]), entropy(other[f"{conv}.weight"]), 0.4, 500
                ).float()
            conv_a = a.view(-1, 1, 1, 1) if a.ndim else a
            want = conv_a * own[f"{conv}.weight"] + (1 - conv_a) * other[f"{conv}.weight"]
            assert torch.allclose(now[f"{conv}.weight"], want, atol=1e-6)
            for key in ("weight", "bias", "running_mean", "running_var"):  # the same a on the BN
                want = a * own[f"{bn}.{key}"] + (1 - a) * other[f"{bn}.{key}"]
                assert torch.allclose(now[f"{bn}.{key}"], want, atol=1e-6), (bn, key)
        # the head conv has no BN: layer-level coefficient on weight and bias
        a = coefficient(
            entropy(own["head.weight"]), entropy(other["head.weight"]), 0.4, 500
        ).float()
        assert torch.allclose(
            now["head.bias"], a * own["head.bias"] + (1 - a) * other["head.bias"], atol=1e-6
        )
    entry = log["layers"]["neck.conv"][0]
    assert entry["network"] == 0 and entry["from"] == 1 and 0.1 <= entry["a"] <= 0.9


def test_multinet_weights_favour_the_lower_validation_loss():
    w = combination_weights([1.0, 1.05], temperature=0.05)
    assert w.sum().item() == pytest.approx(1.0)
    assert w[0].item() == pytest.approx(1 / (1 + math.exp(-1 / 1.025)), rel=1e-6)
    nets = [tiny(0), tiny(1)]
    before = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    combine(nets, w, pull=0.5)
    cons = w[0] * before[0]["neck.conv.weight"] + w[1] * before[1]["neck.conv.weight"]
    for k in range(2):
        want = 0.5 * before[k]["neck.conv.weight"] + 0.5 * cons
        assert torch.allclose(nets[k].state_dict()["neck.conv.weight"], want.float(), atol=1e-6)
    # integer buffers are left alone
    assert torch.equal(
        nets[0].neck.bn.num_batches_tracked, before[0]["neck.bn.num_batches_tracked"]
    )


@pytest.mark.parametrize("method", ["finetune", "grafting", "multinet"])
def test_each_method_recovers_a_tiny_model_and_reports_its_curve(tmp_path, method):
    det = tiny(0)
    start = {k: v.clone() for k, v in det.state_dict().items()}
    cfg = recover_cfg(**({"multinet": {"networks": 2}} if method == "multinet" else {}))
    model, report = get_method(method)(det, Rectangles(12), Rectangles(8, offset=50), cfg, tmp_path)
    assert report["method"] == method
    assert [p["AP50"] is not None for p in report["curve"]] == [True, True]
    assert report["best"]["AP50"] == max(p["AP50"] for p in report["curve"])
    assert report["images_seen"] == 12 * 2 * (1 if method == "finetune" else 2)
    assert not torch.equal(model.state_dict()["neck.conv.weight"], start["neck.conv.weight"])
    if method != "finetune":
        assert len(report["mixes"]) == 1 and report["chosen_network"] in (0, 1)
        assert {n["lr"] for n in report["networks"]} == {0.02, 0.04}


def test_distillation_pulls_the_student_toward_the_teacher(tmp_path):
    teacher, student = tiny(0), tiny(1)
    from compress.train.engine import train

    train(
        teacher, Rectangles(16), None, recover_cfg(epochs=4, lr=0.05), tmp_path / "teacher"
    )  # a teacher that knows
    images = torch.stack([Rectangles(8)[i][0] for i in range(8)])

    def gap() -> float:
        teacher.eval(), student.eval()
        with torch.no_grad():
            return float(
                (student.decode(student(images))[1] - teacher.decode(teacher(images))[1])
                .abs()
                .mean()
            )

    before = gap()
    cfg = recover_cfg(
        epochs=6, lr=0.05, distill={"label_weight": 0.0, "feature_layers": ["neck.conv"]}
    )
    model, report = RECOVERY_METHODS["distill"](
        student, Rectangles(16), None, cfg, tmp_path, teacher
    )
    assert model is student and report["feature_layers"] == ["neck.conv"]
    assert gap() < 0.5 * before
    losses = [e["kd_feature"] for e in _epochs(tmp_path)]
    assert losses[-1] < losses[0]


def _epochs(folder):
    import json

    return json.loads((folder / "history.json").read_text())["epochs"]


def test_distill_without_teacher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="teacher"):
        RECOVERY_METHODS["distill"](tiny(0), Rectangles(4), None, recover_cfg(), tmp_path)


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="finetune, grafting"):
        get_method("magic")


def test_recovery_settings_precedence():
    from compress.recover.common import budget_epochs, recovery_train_cfg

    nested = recovery_train_cfg(
        {"epochs": 3, "train": {"lr": 0.1, "warmup_epochs": 2, "batch_size": 16}}
    )
    assert (
        nested["lr"] == 0.002 and nested["warmup_epochs"] == 0.0
    )  # recovery schedule, not training's
    assert nested["batch_size"] == 16 and nested["epochs"] == 3
    flat = recovery_train_cfg({"lr": 0.005, "epochs": 2, "grafting": {"A": 0.3}})
    assert flat["lr"] == 0.005 and "grafting" not in flat
    assert budget_epochs({"budget_images": 400}, 100, networks=2) == {"epochs": 2}
    assert budget_epochs({}, 100) == {}
