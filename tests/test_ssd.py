"""torchvision SSD300 / SSDLite320 and the TF SSDLite layout as person detectors: build, run,
decode, torchvision's loss, person heads sliced from COCO-91, channel spec + state_dict round
trips, and Torch-Pruning on the traced core (random weights, small inputs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch_pruning as tp
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD
from torchvision.ops import box_iou

from compress.models.load import load_detector, load_detector_dir, save_detector
from compress.models.ssd import build, build_from_config, coco_columns, keep_class_columns

LITE = "ssdlite320_mobilenet_v3_large"
TF = "ssdlite_mobilenet_v2_tf"


def _targets(n: int = 2) -> list[dict[str, torch.Tensor]]:
    one = {
        "boxes": torch.tensor([[10.0, 20.0, 90.0, 150.0], [60.0, 40.0, 120.0, 100.0]]),
        "labels": torch.tensor([0, 0]),
    }
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    return [one, empty][:n]


def _check_round_trip(det, tmp_path, x):
    folder = save_detector(det, tmp_path / "model")
    again = load_detector_dir(folder).eval()
    det.eval()
    with torch.no_grad():
        for a, b in zip(det(x), again(x)):
            torch.testing.assert_close(a, b)
    assert again.variant == det.variant and again.input_size == det.input_size
    return again


def test_ssdlite320_builds_runs_decodes_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    det = load_detector(
        {
            "family": "ssd",
            "variant": LITE,
            "classes": ["person"],
            "input_size": 160,
            "weights": None,
        }
    )
    assert det.resize_mode == "stretch" and det.input_size == (160, 160)
    x = torch.rand(2, 3, 160, 160)
    cls_logits, reg = det(x)
    n = det.anchors.shape[0]
    assert cls_logits.shape == (2, n, 2) and reg.shape == (2, n, 4)
    boxes, scores = det.decode((cls_logits, reg))
    assert boxes.shape == (2, n, 4) and scores.shape == (2, n, 1)
    assert boxes.min() >= 0 and boxes.max() <= 160 and (boxes[..., 2:] >= boxes[..., :2]).all()
    torch.testing.assert_close(scores[..., 0], torch.softmax(cls_logits, -1)[..., 1])
    loss, parts = det.loss((cls_logits, reg), _targets())
    loss.backward()
    assert torch.isfinite(loss) and parts["bbox"] > 0 and parts["cls"] > 0
    grads = [p.grad for p in det.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert not any("Frozen" in type(m).__name__ for m in det.modules())
    _check_round_trip(det, tmp_path, torch.rand(1, 3, 160, 160))


def test_ssd300_vgg16_builds_runs_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    det = build("ssd300_vgg16", ["person"])
    x = torch.rand(1, 3, 300, 300)
    raw = det(x)
    assert det.anchors.shape == (8732, 4) and raw[0].shape == (1, 8732, 2)
    boxes, scores = det.decode(raw)
    assert boxes.shape == (1, 8732, 4) and scores.shape == (1, 8732, 1)
    loss, _ = det.loss(raw, _targets(1))
    loss.backward()
    assert det.core.backbone.scale_weight.grad is not None
    assert det.pruning_kwargs()["unwrapped_parameters"][0][0] is det.core.backbone.scale_weight
    _check_round_trip(det, tmp_path, x)


def test_loss_is_torchvisions_ssd_loss():
    torch.manual_seed(0)
    det = build(TF, ["person"])
    det.score = "softmax"
    n = det.anchors.shape[0]
    raw = (torch.randn(2, n, 2), torch.randn(2, n, 4))
    targets = _targets()
    _, parts = det.loss(raw, targets)
    matcher = det_utils.SSDMatcher(0.5)
    matched = [
        matcher(box_iou(t["boxes"], det.anchors)) if len(t["boxes"]) else torch.full((n,), -1)
        for t in targets
    ]
    tv_targets = [{**t, "labels": t["labels"] + 1} for t in targets]
    ns = SimpleNamespace(box_coder=det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3)
    ref = SSD.compute_loss(
        ns,
        tv_targets,
        {"cls_logits": raw[0], "bbox_regression": raw[1]},
        [det.anchors] * 2,
        matched,
    )
    assert parts["bbox"] == pytest.approx(float(ref["bbox_regression"]), rel=1e-5)
    assert parts["cls"] == pytest.approx(float(ref["classification"]), rel=1e-5)
    # the TF variant trains its sigmoid scores with TF's sigmoid loss: same matching and boxes
    det.score = "sigmoid"
    _, sig = det.loss(raw, targets)
    assert (
        sig["bbox"] == pytest.approx(parts["bbox"])
        and sig["cls"] > 0
        and sig["cls"] != pytest.approx(parts["cls"])
    )


def test_person_head_is_sliced_from_coco91_weights_file(tmp_path):
    torch.manual_seed(0)
    coco = build(LITE, ["person"], 160, columns=91).eval()
    path = tmp_path / "ssdlite_coco.pth"
    torch.save(coco.core.state_dict(), path)  # the layout of torchvision's COCO weights
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        logits91, reg91 = coco(x)
    det = build_from_config(
        {"variant": LITE, "classes": ["person"], "input_size": 160, "weights": str(path)}
    ).eval()
    with torch.no_grad():
        logits, reg = det(x)
    assert coco_columns(["person"]) == [0, 1]
    torch.testing.assert_close(logits, logits91[..., [0, 1]])
    torch.testing.assert_close(reg, reg91)
    assert det.core.head.classification_head.num_columns == 2
    with pytest.raises(ValueError, match="not COCO categories"):
        coco_columns(["pedestrian"])


def test_keep_class_columns_keeps_logits_exactly():
    torch.manual_seed(0)
    det = build("ssd300_vgg16", ["person", "car"], columns=91).eval()
    head = det.core.head  # SSDHead: plain convs, unlike SSDLite's blocks; small maps suffice
    feats = [torch.rand(1, c, 2, 2) for c in (512, 1024, 512, 256, 256, 256)]
    with torch.no_grad():
        before = head(feats)["cls_logits"]
        keep_class_columns(det.core, coco_columns(["person", "car"]))
        after = head(feats)["cls_logits"]
    torch.testing.assert_close(after, before[..., [0, 1, 3]])


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown SSD variant 'ssd512'"):
        build("ssd512", ["person"])
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights.pth"):
        build_from_config({"variant": TF, "classes": ["person"], "weights": str(bad)})
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_from_config(
            {"variant": TF, "classes": ["person"], "weights": str(tmp_path / "missing.pth")}
        )


@pytest.mark.parametrize("variant,size", [(TF, 300), (LITE, 160)])
def test_torch_pruning_prunes_core_and_pruned_model_reloads_from_spec(tmp_path, variant, size):
    torch.manual_seed(0)
    det = build(variant, ["person"], size).eval()
    x = torch.rand(1, 3, size, size)
    macs0, params0 = tp.utils.count_ops_and_params(det.core, x)
    pruner = tp.pruner.MagnitudePruner(
        det.core,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.3,
        round_to=8,
        **det.pruning_kwargs(),
    )
    pruner.step()
    macs1, params1 = tp.utils.count_ops_and_params(det.core, x)
    assert macs1 < 0.75 * macs0 and params1 < 0.75 * params0
    with torch.no_grad():
        cls_logits, reg = det(x)
    assert cls_logits.shape == (1, det.anchors.shape[0], 2)  # the heads' outputs are untouched
    again = _check_round_trip(det, tmp_path, x)
    assert tp.utils.count_ops_and_params(again.core, x)[1] == params1


def test_tf_same_padding_is_asymmetric_for_even_inputs():
    from compress.models.ssd_tf_mobilenet import tf_same_pads

    assert tf_same_pads(300, 3, 2) == (0, 1, 150)  # TF pads bottom/right only
    assert tf_same_pads(19, 3, 2) == (1, 1, 10)
    assert tf_same_pads(2, 3, 2) == (0, 1, 1)
    det = build(TF, ["person"], 300).eval()
    stem = det.core.backbone.stem
    assert isinstance(stem.pad, torch.nn.ZeroPad2d) and stem.pad.padding == (0, 1, 0, 1)
    sizes = [f.shape[-1] for f in det.core.backbone(torch.rand(1, 3, 300, 300))]
    assert sizes == [19, 10, 5, 3, 2, 1] and det.anchors.shape == (1917, 4)


@pytest.mark.parametrize("recipe", ["ssdlite-person", "ssd300-person", "ssdlite-pedestrian-tf"])
def test_recipes_load_every_profile(recipe):
    from pathlib import Path

    from compress.recipe import load_recipe

    path = Path(__file__).resolve().parents[1] / "configs" / f"{recipe}.yaml"
    for profile in ("smoke", "quick", "full"):
        r = load_recipe(path, profile)
        assert r["model"]["family"] == "ssd" and r["model"]["resize"] == "stretch"
        assert r["data"]["classes"] == ["person"] and r["train"]["epochs"] >= 1


def test_ssdlite_person_smoke_recipe_builds_offline(tmp_path):
    from pathlib import Path

    from compress.recipe import load_recipe

    r = load_recipe(
        Path(__file__).resolve().parents[1] / "configs" / "ssdlite-person.yaml", "smoke"
    )
    det = load_detector(r["model"])
    assert (
        det.variant == LITE and det.input_size == (160, 160) and det.default_score_threshold == 0.3
    )


def test_frozen_batchnorm_becomes_trainable_batchnorm_with_same_output():
    from torchvision.ops import FrozenBatchNorm2d

    from compress.models.ssd import replace_frozen_bn

    torch.manual_seed(0)
    frozen = FrozenBatchNorm2d(8)
    frozen.weight.uniform_(0.5, 1.5)
    frozen.running_mean.uniform_(-1, 1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), frozen)
    x = torch.rand(1, 3, 8, 8)
    before = model(x)
    replace_frozen_bn(model).eval()
    assert isinstance(model[1], torch.nn.BatchNorm2d) and model[1].weight.requires_grad
    torch.testing.assert_close(model(x), before)


def test_torchvision_variants_name_their_coco_weights_enum():
    # `weights: DEFAULT` resolves through this name (a positional slip once made it None).
    import torchvision.models.detection as tvd

    from compress.models.ssd import VARIANTS

    for name in ("ssd300_vgg16", "ssdlite320_mobilenet_v3_large"):
        enum = getattr(tvd, VARIANTS[name].coco_weights)
        assert "COCO_V1" in enum.__members__ and VARIANTS[name].clip_boxes is True
    assert VARIANTS["ssdlite_mobilenet_v2_tf"].clip_boxes is False


def test_make_prune_ssd_default_is_the_offline_tf_recipe_on_the_person_data():
    from pathlib import Path

    from compress.recipe import load_recipe

    root = Path(__file__).resolve().parents[1]
    make = (root / "Makefile").read_text()
    assert "SSD_RECIPE ?= configs/ssdlite-pedestrian-tf.yaml" in make
    r = load_recipe(root / "configs" / "ssdlite-pedestrian-tf.yaml", "quick")
    assert r["model"]["tf_graph"].startswith("tf/") and "weights" not in r["model"]
    assert (r["data"]["root"], r["data"]["split"], r["data"]["val_split"]) == (
        "coco-person-val2017",
        "train",
        "val",
    )
    assert r["recover"]["method"] == "distill" and r["targets"]["flops_ratio"] == 0.5


def test_tf_ssdlite_smoke_pipeline_ships_a_model_by_the_rule(assets, tmp_path):
    """The SSD chain (base, search, refit, evaluate, ship) on the real graph:
    what ships is the pruned model only when it holds AP50 within 0.01 of the original."""
    from pathlib import Path

    from compress.io import read_json
    from compress.pipeline import run_pipeline
    from compress.recipe import load_recipe
    from tests.conftest import need

    need(assets, "tf/pedestrian_ssdlite_frozen_inference_graph.pb", "coco128/images/train2017")
    root = Path(__file__).resolve().parents[1]
    r = load_recipe(root / "configs" / "ssdlite-pedestrian-tf.yaml", "smoke")
    # a small refit and no recovery epoch: the rule, not the accuracy, is under test
    r["prune"].update(reconstruct={"images": 4, "positions": 64}, recover=False)
    summary = run_pipeline(r, tmp_path, ["base", "prune", "evaluate", "ship"])
    assert all(s["status"] == "done" for s in summary["stages"].values()), summary["stages"]
    ship = read_json(tmp_path / "ship" / "report.json")
    fig = summary["figures"]
    assert fig["pruned"]["flops"] < fig["base"]["flops"]
    names = {c["name"] for c in ship["candidates"]}
    assert names == {"base", "pruned"}
    floor = fig["base"]["AP50"] - 0.01
    if ship["holds"]:
        assert ship["shipped"]["name"] == "pruned" and ship["shipped"]["ap50"] >= floor
    else:
        assert ship["shipped"]["name"] == "base" and fig["pruned"]["AP50"] < floor
    assert (tmp_path / "ship" / "model" / "model.json").is_file()
