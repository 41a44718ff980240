"""`python -m compress gpu-smoke`: without CUDA one line and exit status 3; its measuring code
(one process as a DDP rank in a group of its own, the step clock, the evaluation) runs here
on the CPU over gloo; the CUDA run itself skips where there is no CUDA."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist

from compress.gpu_smoke import NO_CUDA, StepClock, get_args_parser, run_smoke
from tests.train_support import Rectangles, TinyDetector, tiny_cfg

HAS_CUDA = torch.cuda.is_available()


def test_without_cuda_it_says_why_in_one_line_and_exits_3(monkeypatch, capsys):
    from compress.__main__ import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-smoke"]) == NO_CUDA
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpu-smoke: skipped, no CUDA device")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert main(["gpu-smoke", "--steps", "3"]) == NO_CUDA
    assert "built without CUDA" in capsys.readouterr().err


def test_bad_numbers_are_refused_before_anything_runs():
    from compress.__main__ import main

    with pytest.raises(SystemExit, match="--steps must be >= 1"):
        main(["gpu-smoke", "--steps", "0"])
    with pytest.raises(SystemExit, match="--batch-size must be >= 1"):
        main(["gpu-smoke", "--batch-size", "0"])


def test_it_runs_the_full_profile_of_the_person_recipe_by_default():
    from compress.recipe import load_recipe

    args = get_args_parser().parse_args([])
    assert (args.recipe, args.profile, args.data) == (
        "configs/yolov3-tiny-person.yaml",
        "full",
        "coco-person-val2017",
    )
    recipe = load_recipe(args.recipe, args.profile)
    # the full profile trains with AMP (and the trainer's channels-last default) on CUDA
    assert recipe["train"]["amp"] is True and recipe["train"].get("channels_last", True)


def test_the_step_clock_times_whole_steps_after_the_warm_up():
    clock = StepClock(torch.device("cpu"))
    clock.stamps = [0.0, 5.0, 6.0, 7.0, 8.0]  # a slow first step (warm-up), then 1 s each
    assert clock.images_per_second(warmup=1, steps=3, batch_size=4) == pytest.approx(4.0)
    with pytest.raises(RuntimeError, match="5 steps ran, 6 needed"):
        clock.images_per_second(warmup=2, steps=3, batch_size=4)


@pytest.mark.timeout(120)
def test_one_process_takes_the_ddp_path_in_a_group_of_its_own(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(batch_size=4, device="cpu")
    figures = run_smoke(
        TinyDetector(), Rectangles(32), Rectangles(6, offset=100), cfg, 3, 1, 8, tmp_path
    )
    train, ev = figures["train"], figures["eval"]
    assert train["ddp"] and train["world_size"] == 1 and figures["backend"] == "gloo"
    assert not train["amp"] and not train["channels_last"]  # CUDA only: the CPU path is as it was
    assert train["images_per_second"] > 0 and train["loss"] > 0
    assert ev["images"] == 6 and ev["images_per_second"] > 0 and 0 <= ev["AP50"] <= 1
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["steps"]) == 1 + 3 + 1  # warm-up, timed, and the step closing the last
    assert not dist.is_initialized()  # the group of one is gone again


def test_too_little_data_for_the_steps_is_one_clear_error(tmp_path):
    cfg = tiny_cfg(batch_size=4, device="cpu")
    with pytest.raises(ValueError, match="24 training images needed"):
        run_smoke(TinyDetector(), Rectangles(8), Rectangles(4), cfg, 4, 1, 4, tmp_path)
    assert not dist.is_initialized()


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here: the GPU smoke run needs one")
@pytest.mark.timeout(600)
def test_gpu_smoke_on_the_person_data(assets, tmp_path, capsys):
    from compress.__main__ import main
    from tests.conftest import need

    need(assets, "darknet/yolov3-tiny.cfg", "darknet/yolov3-tiny.weights", "coco-person-val2017")
    argv = ["gpu-smoke", "--steps", "5", "--warmup", "2", "--eval-images", "64", "--out"]
    assert main([*argv, str(tmp_path)]) == 0
    out = capsys.readouterr().out
    figures = json.loads((tmp_path / "gpu_smoke.json").read_text())
    t = figures["train"]
    assert t["ddp"] and t["amp"] and t["channels_last"] and figures["backend"] == "nccl"
    assert t["images_per_second"] > 0 and figures["eval"]["images_per_second"] > 0
    assert "train:" in out and "images/s" in out


def test_the_printed_figures_name_the_path_that_ran():
    from compress.gpu_smoke import lines

    figures = {
        "train": {"ddp": True, "amp": True, "channels_last": True, "world_size": 1,
                  "images_per_second": 812.345, "steps": 20, "batch_size": 32, "warmup": 5,
                  "loss": 3.21},
        "eval": {"images": 256, "batch_size": 32, "images_per_second": 1500.0,
                 "coco_seconds": 0.8, "AP50": 0.31},
        "environment": {"gpu": "GPU X", "gpu_memory_gib": 80.0, "torch": "2.x", "cuda": "12.8",
                        "cudnn": 90100},
        "backend": "nccl",
        "input_size": [416, 416],
    }  # fmt: skip
    head, train, ev = lines(figures)
    assert "DDP x1 on nccl, AMP on, channels-last on" in head and "GPU X" in head
    assert train.startswith("train: 812.3 images/s (20 steps of 32 images") and "416x416" in train
    assert ev.startswith("eval: 1500.0 images/s (256 images") and "AP50 0.310" in ev
