"""`python -m compress gpu-smoke`: the full profile's training and evaluation on CUDA for a few
iterations, in images per second.

    python -m compress gpu-smoke                          # YOLOv3-tiny person, one GPU
    torchrun --nproc_per_node 2 -m compress gpu-smoke     # the same on 2 GPUs (global figures)
    make gpu-smoke

What runs is what `--profile full` trains and evaluates with: the recipe's `train:` settings
under that profile (its batch, AMP, channels-last, loader workers) through the one trainer,
wrapped in DDP on NCCL (outside torchrun in a process group of its one rank, so a single GPU
takes the code path every rank of a multi-GPU run takes), then the held-out evaluation on the
GPU through the evaluator the trainer calls. The data is the shared person set
(`--data coco-person-val2017`: its train and val splits), not the full profile's COCO.

Train: `--warmup` optimizer steps (cuDNN autotuning, AMP's first loss scales, the loader's
start) are left out; the next `--steps` are timed with the GPU synchronised at each step, and
images/second is the global batch times those steps over their time. Eval: `--eval-images`
held-out images after one warm-up batch, predictions only (the COCO scoring on the CPU is
timed apart). Rank 0 prints the figures (and writes `OUT/gpu_smoke.json` with `--out`).

Without CUDA it prints one line saying why and exits with status 3 (NO_CUDA): no figure is
taken on a CPU, where it would say nothing about the GPU path.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

NO_CUDA = 3  # exit status: nothing run, no CUDA device here


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--recipe", default="configs/yolov3-tiny-person.yaml", help="YAML recipe")
    p.add_argument("--profile", default="full", help="the recipe profile whose path runs")
    p.add_argument(
        "--data",
        default="coco-person-val2017",
        help="data root with train and val splits (under NANOPRUNE_ASSETS)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="optimizer steps before the timing")
    p.add_argument("--eval-images", type=int, default=256, help="held-out images evaluated")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (the profile's)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (the profile's)")
    p.add_argument("--out", default=None, help="keep the trainer's files and gpu_smoke.json here")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Bad numbers are refused before anything loads."""
    for flag, value, least in (
        ("--steps", args.steps, 1),
        ("--warmup", args.warmup, 0),
        ("--eval-images", args.eval_images, 1),
        ("--batch-size", args.batch_size, 1),
        ("--workers", args.workers, 0),
    ):
        if value is not None and value < least:
            raise SystemExit(f"gpu-smoke: {flag} must be >= {least} (got {value})")


def no_cuda_reason() -> str | None:
    """Why this process cannot run the smoke test (None: it can)."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    if not torch.cuda.is_available():
        return (
            f"no CUDA device visible to torch {torch.__version__} (CUDA {torch.version.cuda}); "
            "check the driver and CUDA_VISIBLE_DEVICES"
        )
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Trainer hook: the time at each optimizer step (after its backward), the device
    synchronised first so a step's queued GPU work is inside its interval."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def after_backward(self, model: Any, epoch: int, step: int) -> None:
        _sync(self.device)
        self.stamps.append(time.perf_counter())

    def images_per_second(self, warmup: int, steps: int, batch_size: int) -> float:
        """Global images per second over `steps` steps after `warmup` (stamps[warmup] to
        stamps[warmup + steps]: each interval one whole step)."""
        if len(self.stamps) < warmup + steps + 1:
            raise RuntimeError(
                f"gpu-smoke: {len(self.stamps)} steps ran, {warmup + steps + 1} needed"
            )
        seconds = self.stamps[warmup + steps] - self.stamps[warmup]
        return steps * batch_size / seconds


def train_figures(
    detector: Any, train_ds: Any, cfg: dict[str, Any], steps: int, warmup: int, out: Path
) -> dict[str, Any]:
    """Train `warmup + steps + 1` optimizer steps through the trainer; its throughput."""
    from compress.data.build import first_images
    from compress.train.engine import Trainer

    batch = int(cfg.get("batch_size") or 8)
    need = (warmup + steps + 1) * batch * int(cfg.get("accumulate") or 1)
    if len(train_ds) < need:
        raise ValueError(
            f"gpu-smoke: {need} training images needed ({warmup} + {steps} + 1 steps of "
            f"{batch}), the data has {len(train_ds)}"
        )
    cfg = {**cfg, "epochs": 1, "eval_every": 0, "checkpoint_every": 0, "resume": False}
    cfg.update(warmup_epochs=0.0, progress=False)
    trainer = Trainer(detector, first_images(train_ds, need), None, cfg, out)
    clock = StepClock(trainer.device)
    trainer.hooks.append(clock)
    history = trainer.fit()
    return {
        "ddp": trainer.net is not trainer.detector,
        "amp": trainer.amp,
        "channels_last": trainer.cuda and bool(trainer.cfg["channels_last"]),
        "world_size": trainer.info.world_size,
        "rank": trainer.info.rank,
        "device": str(trainer.device),
        "batch_size": batch,
        "steps": steps,
        "warmup": warmup,
        "loss": (history.get("final") or {}).get("loss"),
        "images_per_second": clock.images_per_second(warmup, steps, batch),
    }


def eval_figures(
    detector: Any, val_ds: Any, images: int, batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Predictions on `images` held-out images on `device` (the evaluator's path), timed
    after one warm-up batch; then their COCO scores (timed apart)."""
    from compress.data.build import first_images
    from compress.evaluate import coco_evaluate, predict

    subset = val_ds if len(val_ds) <= images else first_images(val_ds, images)
    h, w = detector.input_size
    with torch.no_grad():  # warm-up: cuDNN picks its kernels for this batch shape
        detector.eval().to(device)(torch.zeros(batch_size, 3, h, w, device=device))
    _sync(device)
    t0 = time.perf_counter()
    results = predict(detector, subset, batch_size, device=device)
    _sync(device)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = coco_evaluate(subset.to_coco(), results)
    return {
        "images": len(subset),
        "batch_size": batch_size,
        "images_per_second": len(subset) / seconds,
        "coco_seconds": round(time.perf_counter() - t1, 3),
        "AP50": scores.get("AP50"),
    }


def run_smoke(
    detector: Any,
    train_ds: Any,
    val_ds: Any,
    cfg: dict[str, Any],
    steps: int,
    warmup: int,
    eval_images: int,
    out: Path,
) -> dict[str, Any]:
    """The training and evaluation figures of one smoke run (rank 0 evaluates; the others
    return their training figures). Joins torchrun's group, or makes one of this process,
    and leaves it at the end."""
    from compress.train.distributed import cleanup_distributed, one_rank_group

    info = one_rank_group(cfg.get("device", "auto"))
    try:
        figures: dict[str, Any] = {
            "train": train_figures(detector, train_ds, cfg, steps, warmup, out)
        }
        if info.is_main:
            batch = int(cfg.get("eval_batch_size") or cfg.get("batch_size") or 8)
            figures["eval"] = eval_figures(detector, val_ds, eval_images, batch, info.device)
    finally:
        cleanup_distributed()
    figures["backend"] = "nccl" if info.device.type == "cuda" else "gloo"
    return figures


def environment() -> dict[str, Any]:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "gpu": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def lines(figures: dict[str, Any]) -> list[str]:
    t, e, env = figures["train"], figures["eval"], figures["environment"]
    path = (
        f"{'DDP' if t['ddp'] else 'no DDP'} x{t['world_size']} on {figures['backend']}, "
        f"AMP {'on' if t['amp'] else 'off'}, channels-last {'on' if t['channels_last'] else 'off'}"
    )
    return [
        f"gpu-smoke: {env['gpu']} ({env['gpu_memory_gib']} GiB), torch {env['torch']}, "
        f"CUDA {env['cuda']}, cuDNN {env['cudnn']}; {path}",
        f"train: {t['images_per_second']:.1f} images/s ({t['steps']} steps of {t['batch_size']} "
        f"images after {t['warmup']} warm-up steps, {'x'.join(map(str, figures['input_size']))} "
        "px), "
        f"last loss {t['loss']:.4g}",
        f"eval: {e['images_per_second']:.1f} images/s ({e['images']} images, batch "
        f"{e['batch_size']}; COCO scoring {e['coco_seconds']} s apart), AP50 {e['AP50']:.3f}",
    ]


def main(args: argparse.Namespace) -> int:
    check_args(args)
    reason = no_cuda_reason()
    if reason:
        print(f"gpu-smoke: skipped, {reason}", file=sys.stderr)
        return NO_CUDA
    from compress.io import write_json
    from compress.prune.run import train_settings
    from compress.recipe import load_inputs, load_recipe

    data = {"root": args.data, "split": "train", "val_split": "val", "val_fraction": 0}
    recipe = load_recipe(args.recipe, args.profile, {"data": data})
    cfg = train_settings(recipe, device="cuda")
    if args.batch_size is not None:
        cfg["batch_size"] = args.batch_size
    if args.workers is not None:
        cfg["workers"] = args.workers
    detector, train_ds, val_ds = load_inputs(recipe)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as scratch:
        out = Path(args.out) if args.out else Path(scratch)
        figures = run_smoke(
            detector, train_ds, val_ds, cfg, args.steps, args.warmup, args.eval_images, out
        )
    if figures["train"]["rank"] != 0:
        return 0
    figures.update(
        environment=environment(),
        input_size=list(detector.input_size),
        recipe=args.recipe,
        profile=args.profile,
        data=args.data,
    )
    print("\n".join(lines(figures)))
    if args.out:
        print(f"gpu-smoke: wrote {write_json(Path(args.out) / 'gpu_smoke.json', figures)}")
    return 0
