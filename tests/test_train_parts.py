"""Trainer parts: data order and augmentation seeding, EMA, and the CUDA-only paths."""

from __future__ import annotations

import math

import pytest
import torch

from compress.train.ema import build_ema
from compress.train.engine import train
from compress.train.sampling import ResumableSampler, SeededSamples
from tests.train_support import Rectangles, TinyDetector, collate, tiny_cfg


def test_sampler_splits_ranks_and_resumes_mid_epoch():
    data = list(range(10))
    full = ResumableSampler(data, 1, 0, shuffle=True, seed=4)
    full.set_position(epoch=2)
    order = list(full)
    assert sorted(order) == data
    ranks = [ResumableSampler(data, 2, r, shuffle=True, seed=4) for r in range(2)]
    for s in ranks:
        s.set_position(epoch=2)
    assert sorted(list(ranks[0]) + list(ranks[1])) == data  # the ranks share the same epoch order
    full.set_position(epoch=2, start=6)
    assert list(full) == order[6:] and len(full) == 4
    full.set_position(epoch=3)
    assert list(full) != order  # a new order each epoch


def test_seeded_samples_give_the_same_augmentation_whatever_came_before():
    data = SeededSamples(Rectangles(6, hflip=0.5), seed=1)
    first = [data[i][1]["boxes"] for i in range(6)]
    torch.rand(100)  # the global RNG moves on ...
    again = [data[i][1]["boxes"] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # ... the samples do not
    data.set_epoch(1)
    flips = [data[i][1]["boxes"] for i in range(6)]
    assert any(not torch.equal(a, b) for a, b in zip(first, flips))  # new epoch, new draws


def test_dataloader_workers_do_not_change_the_result(tmp_path):
    runs = []
    for workers in (0, 2):
        torch.manual_seed(0)
        det = TinyDetector()
        cfg = tiny_cfg(epochs=1, workers=workers)
        train(det, Rectangles(8, hflip=0.5), None, cfg, tmp_path / str(workers), collate_fn=collate)
        runs.append(det.state_dict())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_ema_follows_the_ramped_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = build_ema(model, decay=0.9, tau=1.0)
    ema.update_parameters(model)  # first update copies
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update_parameters(model)
    d = 0.9 * (1 - math.exp(-1.0))
    assert ema.module.weight.item() == pytest.approx(d * 1.0 + (1 - d) * 3.0)


def test_ema_weights_become_the_model(tmp_path):
    torch.manual_seed(0)
    det = TinyDetector()
    history = train(
        det, Rectangles(8), None, tiny_cfg(epochs=1, ema=True), tmp_path, collate_fn=collate
    )
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    ema_weight = ckpt["ema"]["module.neck.conv.weight"]
    assert torch.equal(det.neck.conv.weight, ema_weight)
    assert not torch.equal(ckpt["model"]["neck.conv.weight"], ema_weight)
    assert history["config"]["ema"] is True


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (AMP + channels-last path)"
)
def test_cuda_amp_channels_last_training(tmp_path):
    torch.manual_seed(0)
    det = TinyDetector()
    cfg = tiny_cfg(epochs=2, amp=True, channels_last=True, device="cuda")
    history = train(det, Rectangles(16), None, cfg, tmp_path, collate_fn=collate)
    assert history["device"].startswith("cuda")
    assert all(math.isfinite(s["loss"]) for s in history["steps"])
    assert history["epochs"][-1]["loss"] < history["epochs"][0]["loss"]
    assert det.neck.conv.weight.is_contiguous()  # handed back in the default layout
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0  # the AMP scaler state is in the checkpoint
