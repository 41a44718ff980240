"""Full YOLOv3 (and YOLOv3-SPP) through the seed method: channel + layer pruning with every
registered criterion reaches >= 70% fewer FLOPs, and the cut model saves, loads, runs and
exports.

Random weights (the 237 MB Darknet weights are not shipped), shaped like a sparsity-trained
net: in every prunable BN about 60% of the gammas near zero, the rest spread over 0.1-0.6,
betas spread too, so |gamma| has a split to find and the data-aware criteria see channels
whose output is nearly constant. The input is 128 px and the head is person-only, as in the
recipe's smoke profile. The prune settings are the recipe's own (`configs/yolov3-person.yaml`:
gmm threshold capped at 70% of the channels per cycle, residual-unit removal, up to 3 cycles
toward `target_flops: 0.3`); only what random weights cannot use is switched off here
(sparsity training, recovery; the refit in all but the end-to-end run).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from compress.evaluate import model_figures
from compress.models.load import load_detector, load_detector_dir
from compress.prune.graph import prunable_bns
from compress.prune.importance import IMPORTANCE
from compress.prune.run import Context, prune, prune_rounds, strategy_for
from compress.recipe import load_recipe
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"yolov3": "configs/yolov3-person.yaml", "yolov3-spp": "configs/yolov3-spp-person.yaml"}
# A few real person images: the data-aware criteria read feature maps on them, taylor takes
# loss gradients on their labels, the refit and evaluation run on them.
DATA = {
    "format": "yolo",
    "root": "coco-person-val2017",
    "split": "train",
    "names": "darknet/coco.names",
    "classes": ["person"],
    "val_fraction": 0.5,
    "max_images": 4,
}


def _recipe(name: str, **prune_settings) -> dict:
    """The recipe's smoke profile (128 px, one class) with the recipe's base prune cycles
    (its smoke profile stops after one cycle), no sparsity training and the data above."""
    base = load_recipe(ROOT / RECIPES[name])["prune"]
    return load_recipe(
        ROOT / RECIPES[name],
        "smoke",
        overrides={
            "data": DATA,
            "sparsity": {"epochs": 0},
            "prune": {
                "cycles": base["cycles"],
                "layer_count": base["layer_count"],
                "compare_baseline": False,
                "feature_images": 2,
                **prune_settings,
            },
        },
    )


def _random_yolo(assets: Path, name: str) -> torch.nn.Module:
    """The recipe's model without its weights: random init, sliced to the person class."""
    model_cfg = dict(load_recipe(ROOT / RECIPES[name], "smoke")["model"])
    need(assets, model_cfg["cfg"], model_cfg["names"])
    model_cfg.pop("weights")
    torch.manual_seed(0)
    model = load_detector(model_cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in prunable_bns(model):
            n = bn.num_features
            low = torch.rand(n, generator=g) < 0.6
            spread = 0.2 + torch.rand(n, generator=g)
            bn.weight.copy_(torch.where(low, 1e-3, 0.5) * spread)
            bn.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model


@pytest.fixture(scope="module")
def yolov3(assets):
    return _random_yolo(assets, "yolov3")


@pytest.fixture(scope="module")
def yolov3_figures(yolov3):
    return model_figures(yolov3)


@pytest.fixture(scope="module")
def data(assets, yolov3):
    need(assets, "coco-person-val2017/labels/train")
    from compress.data.build import datasets_for

    return datasets_for(yolov3, DATA)


def _shortcuts(model) -> int:
    return sum(b["type"] == "shortcut" for b in model.blocks)


def _image(dataset, model) -> torch.Tensor:
    from compress.data.build import eval_view

    return eval_view(dataset, model)[0][0][None]


def _same_outputs(a, b, x) -> None:
    with torch.no_grad():
        for p, q in zip(a.eval()(x), b.eval()(x)):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)


def _stand_ins(ctx: Context) -> Context:
    """The recipe's context with nothing to learn: random weights have no AP to keep."""
    return dataclasses.replace(
        ctx, evaluate=lambda model: {}, recover=lambda model, out, teacher: (model, {})
    )


@pytest.mark.assets
@pytest.mark.parametrize("criterion", sorted(IMPORTANCE))
def test_every_criterion_cuts_full_yolov3_by_70_percent(
    yolov3, yolov3_figures, data, criterion, tmp_path
):
    """Slimming's cycles with `criterion` until FLOPs <= 0.30x; the saved model reloads to the
    same outputs and runs on a real image."""
    train_ds, val_ds = data
    recipe = _recipe("yolov3", importance=criterion, reconstruct=False)
    # the unpruned figures once for all criteria, as the pipeline hands them on
    ctx = _stand_ins(Context.from_recipe(recipe, train_ds, val_ds, baseline=yolov3_figures))
    pruned, report = prune_rounds(copy.deepcopy(yolov3), ctx, strategy_for(recipe), tmp_path)
    base, final = yolov3_figures["flops"], model_figures(pruned)["flops"]
    assert final <= 0.30 * base, (criterion, final / base, report["stop_reason"])
    assert report["stop_reason"].startswith("FLOPs target reached")
    assert _shortcuts(pruned) < _shortcuts(yolov3)
    assert report["cycles"][0]["prune"]["layers"]["removed_shortcuts"]
    # the model folder the run saved for its last cycle: what the pipeline hands on
    again = load_detector_dir(report["cycles"][-1]["model"])
    assert again.blocks == pruned.blocks
    x = _image(val_ds, again)
    _same_outputs(pruned, again, x)
    with torch.no_grad():
        boxes, scores = again.decode(again(x))
    assert scores.shape[-1] == 1 and torch.isfinite(boxes).all() and torch.isfinite(scores).all()


# The least-squares refit runs in one of the two: on full YOLOv3 it is some 50 solves of up to
# 4,600 unknowns whatever the input size, most of this module's time if it ran in both.
REFIT = {"images": 2, "positions": 64}


@pytest.mark.assets
@pytest.mark.parametrize(
    "name, refit", [("yolov3", REFIT), ("yolov3-spp", False)], ids=["yolov3-refit", "yolov3-spp"]
)
def test_full_yolov3_prune_run_end_to_end_loads_and_exports(assets, data, name, refit, tmp_path):
    """The whole prune run `python -m compress prune --method slimming` makes (sparsity
    training, cut, least-squares refit, evaluation, fine-tuning, model/ + report.json),
    then the ONNX export with the recipe's export settings and onnxruntime parity."""
    pytest.importorskip("onnxruntime")
    from export.onnx_export import export_bundle

    train_ds, val_ds = data
    model = _random_yolo(assets, name)
    recipe = _recipe(name, reconstruct=refit)
    recipe["sparsity"]["epochs"] = 1
    recipe["recover"]["epochs"] = 1
    recipe["train"].update(batch_size=2, progress=False)
    ctx = Context.from_recipe(recipe, train_ds, val_ds)
    pruned, report = prune(model, ctx, tmp_path, strategy_for(recipe))
    assert report["final"]["flops"] <= 0.30 * report["baseline"]["flops"]
    assert "AP50" in report["final"] and (tmp_path / "report.json").is_file()
    assert _shortcuts(pruned) < _shortcuts(model)
    cycle = report["cycles"][0]
    assert cycle["gamma_log"] and cycle["recover"]["method"] == "finetune"
    assert bool(refit) == bool((cycle["prune"].get("reconstruct") or {}).get("layers"))
    again = load_detector_dir(tmp_path / "model")
    x = _image(val_ds, again)
    _same_outputs(pruned, again, x)
    settings = recipe["export"]
    out = export_bundle(
        again,
        tmp_path / "pruned.onnx",
        f"{name}-pruned",
        opset=settings["opset"],
        simplify=settings["simplify"],
        parity_images=settings["parity_images"],
    )
    size = recipe["model"]["input_size"]
    assert out["parity"]["passed"] and out["meta"]["input_shape"] == [1, 3, size, size]
    assert out["meta"]["classes"] == ["person"] and out["trt_check"]["ok"]
