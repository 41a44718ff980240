"""Several copies of one network trained side by side, epoch by epoch, with a step that mixes
their weights after each epoch (grafting, multi-network training).

Each network has its own trainer (own lr, seed, optionally augmentation, own out folder). With
several GPUs network k trains on GPU k mod n and the networks of one epoch run in parallel
threads; with one device they take turns. The kept model is the network whose best evaluated
epoch has the highest val AP50 (its best weights).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from compress.models.base import Detector
from compress.train.engine import Trainer, load_best


def variant_dataset(train_ds: Any, detector: Detector, augment: dict[str, Any] | None) -> Any:
    """train_ds with another augmentation (DetectionDataset only), or train_ds itself."""
    if augment is None:
        return train_ds
    if not hasattr(train_ds, "with_transform"):
        raise ValueError("per-network augmentation needs a DetectionDataset (with_transform)")
    from compress.data.transforms import build_transform

    tf = build_transform(
        tuple(detector.input_size),
        detector.resize_mode,
        train=True,
        augment=augment,
        pad_value=detector.pad_value,
    )
    return train_ds.with_transform(tf)


def network_settings(base: dict[str, Any], k: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Network k's trainer settings: lr x lr_scale[k], seed + k, its own device with several GPUs."""
    scales = list(opts["lr_scale"])
    cfg = {
        **base,
        "lr": base["lr"] * float(scales[k % len(scales)]),
        "seed": int(base.get("seed", 0)) + k,
    }
    cfg["ema"] = False  # mixing weights behind an EMA's back would make the two disagree
    gpus = torch.cuda.device_count()
    if gpus > 1 and str(base.get("device", "auto")) in ("auto", "cuda"):
        cfg["device"] = f"cuda:{k % gpus}"
    return cfg


def train_together(
    detector: Detector,
    train_ds: Any,
    val_ds: Any,
    base_cfg: dict[str, Any],
    opts: dict[str, Any],
    out_dir: str | Path,
    mix: Callable[[list[Detector], int], dict[str, Any]],
) -> tuple[Detector, dict[str, Any]]:
    """Train opts["networks"] copies; after every epoch but the last call `mix(nets, epoch)`."""
    n = int(opts["networks"])
    if n < 2:
        raise ValueError(f"training together needs networks >= 2, got {n}")
    augments = list(opts.get("augment") or [])
    trainers = []
    for k in range(n):
        net = detector if k == 0 else copy.deepcopy(detector)
        data = variant_dataset(
            train_ds, detector, augments[k % len(augments)] if augments else None
        )
        trainers.append(
            Trainer(
                net, data, val_ds, network_settings(base_cfg, k, opts), Path(out_dir) / f"net{k}"
            )
        )
    for t in trainers:
        t.begin()
    parallel = len({t.device for t in trainers}) > 1
    curve, mixes, mix_time = [], [], 0.0
    for epoch in range(base_cfg["epochs"]):
        if parallel:
            with ThreadPoolExecutor(len(trainers)) as pool:
                records = list(pool.map(lambda t: t.run_epoch(), trainers))
        else:
            records = [t.run_epoch() for t in trainers]
        if epoch < base_cfg["epochs"] - 1:
            start = time.perf_counter()
            log = mix([t.detector for t in trainers], epoch)
            mix_time += time.perf_counter() - start
            mixes.append({"epoch": epoch, **log})
        curve.append(curve_point(epoch, trainers, records, mix_time, parallel))
    for t in trainers:
        t.finish()
    chosen, k = pick_best(trainers)
    return chosen, {
        "curve": curve,
        "mixes": mixes,
        "networks": network_summaries(trainers),
        "chosen_network": k,
    }


def curve_point(
    epoch: int, trainers: list[Trainer], records: list[dict], mix_time: float, parallel: bool
) -> dict:
    times = [t.elapsed for t in trainers]
    aps = [r.get("AP50") for r in records]
    best = max(range(len(records)), key=lambda k: -1.0 if aps[k] is None else aps[k])
    return {
        "epoch": epoch,
        "wall_s": round((max(times) if parallel else sum(times)) + mix_time, 3),
        "images_seen": sum(t.images_seen() for t in trainers),
        "AP50": records[best].get("AP50"),
        "AP50_95": records[best].get("AP50_95"),
        "network": best,
        "loss": records[best].get("loss"),
    }


def pick_best(trainers: list[Trainer]) -> tuple[Detector, int]:
    """The network with the highest best-epoch AP50 (and its index), best weights loaded."""
    scored = [
        (t.best["metrics"].get("AP50", -1.0) if t.best else -1.0, k) for k, t in enumerate(trainers)
    ]
    _, k = max(scored)
    chosen = trainers[k].detector.cpu()
    load_best(chosen, trainers[k].out_dir)
    return chosen, k


def network_summaries(trainers: list[Trainer]) -> list[dict[str, Any]]:
    return [
        {
            "network": k,
            "lr": t.cfg["lr"],
            "seed": t.cfg["seed"],
            "device": str(t.device),
            "best": t.best,
            "images_seen": t.images_seen(),
            "wall_s": round(t.elapsed, 3),
        }
        for k, t in enumerate(trainers)
    ]
