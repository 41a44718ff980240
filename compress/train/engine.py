"""The training loop every stage uses (train, sparsity, recovery), for every detector family.

One loop through the Detector interface: `raw = model(images); loss, parts = model.loss(raw,
targets)`. SGD/Adam(W) with linear warm-up then cosine (or linear/constant), gradient
accumulation, AMP and channels-last on CUDA only, optional EMA of the weights, evaluation every
`eval_every` epochs that keeps the best model, atomic checkpoints each epoch and every
`checkpoint_every` optimizer steps, exact resume, and DDP when started by torchrun.

Hooks are objects with any of:
- `after_backward(model, epoch, step)`: once per optimizer step, after the (accumulated)
  backward and before `optimizer.step()`, with gradients already unscaled from AMP and, under
  DDP, already averaged over ranks. `step` counts optimizer steps from 0. The sparsity
  regularizer adds its L1 sub-gradient here.
- `on_epoch_end(model, epoch, metrics)`: after each epoch's evaluation, on every rank.
`model` is the bare detector (never the DDP wrapper), trained in place. A hook with
`state_dict()` / `load_state_dict(state)` (plain types and tensors) is checkpointed and
resumed with the run.

`batch_size` is the global batch: under torchrun each of N processes takes batch_size / N,
so the same recipe gives the same loss curve on 1 or N processes (BN statistics excepted:
each rank normalizes over its own share). Losses that average over targets divide by the
global batch's count (`distributed.counts_over_ranks`). A loss that sums over images (YOLO
multiplies by the batch size) is detected once and scaled by N, since DDP averages gradients
over ranks.

Files in `out_dir` (rank 0 only): `last.pt` (full checkpoint, `--resume` reads it), `best.pt`
({"model", "epoch", "metrics"} of the best evaluated weights; EMA weights when EMA is on),
`history.json`.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from compress.io import write_json
from compress.models.base import Detector
from compress.train import checkpoint as ckpt_io
from compress.train.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    counts_over_ranks,
    init_distributed,
)
from compress.train.ema import build_ema
from compress.train.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from compress.train.sampling import ResumableSampler, SeededSamples

DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 8,
    "optimizer": "sgd",
    "lr": 0.01,
    "lrf": 0.01,  # final lr = lr * lrf
    "momentum": 0.937,
    "weight_decay": 5.0e-4,
    "warmup_epochs": 1.0,
    "scheduler": "cosine",
    "amp": True,  # CUDA only; ignored on CPU
    "channels_last": True,  # CUDA only
    "accumulate": 1,
    "clip_grad_norm": None,
    "ema": False,
    "ema_decay": 0.9999,
    "ema_tau": 2000.0,
    "eval_every": 1,
    "eval_batch_size": None,  # defaults to batch_size
    "best_metric": "AP50",
    "score_threshold": 0.001,
    "checkpoint_every": 0,  # optimizer steps; 0 = only at epoch ends
    "workers": 0,
    "seed": 0,
    "shuffle": True,
    "device": "auto",
    "find_unused_parameters": False,
    "progress": True,
    "resume": False,  # True = out_dir/last.pt, or a checkpoint path
    "augment": None,  # read by compress.data.build.build_datasets, not here
}

CHECKPOINT = "last.pt"
BEST = "best.pt"
HISTORY = "history.json"
MAX_STEP_LOG = 20000


def resolve_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe's `train:` section over DEFAULTS, checked (clear errors before any work)."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        warnings.warn(f"train: ignoring unknown setting(s) {', '.join(unknown)}", stacklevel=3)
    out = {**DEFAULTS, **{k: v for k, v in cfg.items() if k in DEFAULTS}}
    checks = [
        (int(out["epochs"]) >= 1, "epochs must be >= 1"),
        (int(out["batch_size"]) >= 1, "batch_size must be >= 1"),
        (int(out["accumulate"]) >= 1, "accumulate must be >= 1"),
        (float(out["lr"]) > 0, "lr must be > 0"),
        (float(out["warmup_epochs"]) >= 0, "warmup_epochs must be >= 0"),
        (int(out["eval_every"]) >= 0, "eval_every must be >= 0 (0 = never)"),
        (int(out["checkpoint_every"]) >= 0, "checkpoint_every must be >= 0"),
        (out["optimizer"] in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (out["scheduler"] in SCHEDULES, f"scheduler must be one of {', '.join(SCHEDULES)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"train: {message} (got {_shown(cfg)})")
    for key in (
        "epochs",
        "batch_size",
        "accumulate",
        "eval_every",
        "checkpoint_every",
        "workers",
        "seed",
    ):
        out[key] = int(out[key])
    for key in ("lr", "lrf", "momentum", "weight_decay", "warmup_epochs"):
        out[key] = float(out[key])
    return out


def _shown(cfg: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in cfg.items() if k != "augment")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def default_collate() -> Any:
    from compress.data.build import collate

    return collate


def to_device(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


class Trainer:
    """One training run; `train()` below is the function the stages call."""

    def __init__(
        self,
        detector: Detector,
        train_ds: Dataset,
        val_ds: Dataset | None,
        cfg: dict[str, Any],
        out_dir: str | Path,
        hooks: list[Any] | None = None,
        collate_fn: Any = None,
    ) -> None:
        self.cfg = resolve_config(cfg)
        self.info: DistInfo = init_distributed(self.cfg["device"])
        self.detector, self.val_ds = detector, val_ds
        self.out_dir, self.hooks = Path(out_dir), list(hooks or [])
        self.device = self.info.device
        self.cuda = self.device.type == "cuda"
        if len(train_ds) == 0:
            raise ValueError("train: the training set is empty")
        if val_ds is not None and len(val_ds) == 0:
            warnings.warn(
                "train: the validation set is empty; no evaluation, no best model", stacklevel=3
            )
            self.val_ds = None
        if self.cfg["batch_size"] % self.info.world_size:
            raise ValueError(
                f"train: batch_size {self.cfg['batch_size']} (global) must divide evenly over "
                f"{self.info.world_size} processes"
            )
        self.rank_batch = self.cfg["batch_size"] // self.info.world_size
        self.samples = SeededSamples(train_ds, self.cfg["seed"])
        self.sampler = ResumableSampler(
            self.samples,
            self.info.world_size,
            self.info.rank,
            self.cfg["shuffle"],
            self.cfg["seed"],
        )
        self.loader = DataLoader(
            self.samples,
            batch_size=self.rank_batch,
            sampler=self.sampler,
            num_workers=self.cfg["workers"],
            collate_fn=collate_fn or default_collate(),
            pin_memory=self.cuda,
        )
        self.batches_per_epoch = math.ceil(self.sampler.num_samples / self.rank_batch)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.cfg["accumulate"])
        # The per-step curve keeps at most ~MAX_STEP_LOG points, so checkpoints stay small.
        self.log_every = max(1, math.ceil(self.steps_per_epoch * self.cfg["epochs"] / MAX_STEP_LOG))
        self._build_model()
        self.loss_scale = float(self.info.world_size) if self.loss_sums_images() else 1.0
        self.epoch, self.batch, self.step, self.elapsed = 0, 0, 0, 0.0
        self.epoch_sums: dict[str, float] = {}
        self.epoch_steps = 0
        self.best: dict[str, Any] | None = None
        self.history: dict[str, Any] = {"steps": [], "epochs": []}

    def _build_model(self) -> None:
        cfg = self.cfg
        self.detector.to(self.device)
        if self.cuda and cfg["channels_last"]:
            self.detector.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.detector, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.amp = bool(cfg["amp"]) and self.cuda
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ema = (
            build_ema(self.detector, cfg["ema_decay"], cfg["ema_tau"]) if cfg["ema"] else None
        )
        self.net = self.detector
        if self.info.distributed:
            self.net = DistributedDataParallel(
                self.detector,
                device_ids=[self.device.index] if self.cuda else None,
                find_unused_parameters=cfg["find_unused_parameters"],
            )

    @torch.no_grad()
    def loss_sums_images(self) -> bool:
        """Under DDP: is the detector's loss a sum over images (YOLO: x batch size) or a mean?

        DDP averages gradients over ranks, which equals the one-process gradient of the global
        batch for a mean loss; a summed loss must be scaled by the world size to match. Probed
        once on N different images (their target counts differ, so a loss that normalises by
        its own rank's count shows up): each rank's loss on its one image, summed over ranks,
        against the one-process loss of all N, which is that sum for a per-image sum and 1/N
        of it for a mean.
        """
        if not self.info.distributed:
            return False
        world = self.info.world_size
        n = min(world, len(self.samples))
        if n < world:  # fewer images than ranks: no probe batch; YOLO-like sums are the norm
            return True
        collate = self.loader.collate_fn
        whole_images, whole_targets = collate([self.samples[i] for i in range(world)])
        mine_images, mine_targets = collate([self.samples[self.info.rank]])
        was_training = self.detector.training
        self.detector.eval()  # running BN statistics: a rank's image gives the same outputs
        try:
            whole, _ = self.detector.loss(
                self.detector(whole_images.to(self.device)), to_device(whole_targets, self.device)
            )
            with counts_over_ranks(self.info):
                mine, _ = self.detector.loss(
                    self.detector(mine_images.to(self.device)),
                    to_device(mine_targets, self.device),
                )
        finally:
            self.detector.train(was_training)
        shards = all_reduce_mean([float(mine)], self.info)[0] * world
        if not float(whole) > 0 or not shards > 0:
            return False
        ratio = shards / float(whole)  # 1 for a per-image sum, N for a mean
        sums = abs(ratio - 1.0) < abs(ratio - world)
        if min(abs(ratio - 1.0), abs(ratio - world)) > 1e-3 * world:
            warnings.warn(
                f"train: the loss of {world} ranks' shards is {ratio:.4g}x the one-process loss "
                f"(expected 1 or {world}): DDP trains a different objective than one process",
                stacklevel=2,
            )
        return sums

    # ---- checkpoints -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "model": self.detector.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "elapsed": self.elapsed,
            "epoch_sums": self.epoch_sums,
            "epoch_steps": self.epoch_steps,
            "best": self.best,
            "history": self.history,
            "config": {k: v for k, v in self.cfg.items() if k != "resume"},
            "world_size": self.info.world_size,
            "hooks": [h.state_dict() if hasattr(h, "state_dict") else None for h in self.hooks],
        }

    def save(self) -> None:
        if self.info.is_main:
            ckpt_io.save_checkpoint(self.out_dir / CHECKPOINT, self.state())

    def restore(self, path: str | Path) -> dict[str, Any]:
        ckpt = ckpt_io.load_checkpoint(path)
        try:
            self.detector.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise ValueError(f"{path}: checkpoint does not fit this model: {exc}") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        self.elapsed, self.best, self.history = ckpt["elapsed"], ckpt["best"], ckpt["history"]
        self.epoch_sums, self.epoch_steps = dict(ckpt["epoch_sums"]), ckpt["epoch_steps"]
        for hook, state in zip(self.hooks, ckpt.get("hooks") or []):
            if state is not None and hasattr(hook, "load_state_dict"):
                hook.load_state_dict(state)
        old = ckpt.get("config", {})
        changed = [
            k
            for k in ("batch_size", "accumulate", "seed", "optimizer")
            if old.get(k) != self.cfg[k]
        ]
        if changed or ckpt.get("world_size") != self.info.world_size:
            warnings.warn(
                f"{path}: resuming with different {', '.join(changed) or 'process count'}; "
                "the run will not match an uninterrupted one",
                stacklevel=3,
            )
        return ckpt["rng"]

    # ---- loop --------------------------------------------------------------------------
    def begin(self) -> None:
        """Restore `resume`'s checkpoint (RNG states last) or seed a fresh run."""
        resume = self.cfg["resume"]
        if resume:
            rng = self.restore(self.out_dir / CHECKPOINT if resume is True else Path(resume))
            self.history.setdefault("resumed", []).append(
                {"epoch": self.epoch, "batch": self.batch, "step": self.step}
            )
            ckpt_io.set_rng_state(rng)
        else:
            seed_everything(self.cfg["seed"])
        self.detector.train()

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg["epochs"]

    def run_epoch(self) -> dict[str, Any]:
        """Train the current epoch (from where it stopped), evaluate, call hooks, checkpoint."""
        start = time.perf_counter()
        record = self.train_epoch()
        record.update(self.maybe_evaluate())
        self.epoch += 1
        self.batch = 0
        self.elapsed += time.perf_counter() - start
        record.update(wall_s=round(self.elapsed, 3), images_seen=self.images_seen())
        self.history["epochs"].append(record)
        for hook in self.hooks:
            if hasattr(hook, "on_epoch_end"):
                hook.on_epoch_end(self.detector, self.epoch - 1, record)
        self.save()
        self.write_history()
        return record

    def fit(self) -> dict[str, Any]:
        self.begin()
        while not self.done:
            self.run_epoch()
        return self.finish()

    def images_seen(self) -> int:
        """Global training images read so far (the budget the recovery comparison equalizes)."""
        per_epoch = min(len(self.samples), self.sampler.total_size)
        done = min(self.batch * self.cfg["batch_size"], per_epoch)
        return self.epoch * per_epoch + done

    def train_epoch(self) -> dict[str, Any]:
        cfg, acc, nb = self.cfg, self.cfg["accumulate"], self.batches_per_epoch
        self.sampler.set_position(self.epoch, self.batch * self.rank_batch)
        self.samples.set_epoch(self.epoch)
        bar = tqdm(
            self.loader,
            total=nb,
            initial=self.batch,
            desc=f"epoch {self.epoch + 1}/{cfg['epochs']}",
            disable=not (self.info.is_main and cfg["progress"]),
            dynamic_ncols=True,
        )
        # Running sums live on self so a mid-epoch checkpoint carries them into the resume.
        if self.batch == 0:
            self.epoch_sums, self.epoch_steps = {}, 0
        sums = self.epoch_sums
        group_loss, group_parts = 0.0, {}
        for i, (images, targets) in enumerate(bar, start=self.batch):
            group_len = min(acc, nb - (i // acc) * acc)
            boundary = (i + 1) % acc == 0 or i == nb - 1
            loss, parts = self.forward_backward(images, targets, group_len, boundary)
            group_loss += loss / group_len
            for k, v in parts.items():
                group_parts[k] = group_parts.get(k, 0.0) + float(v) / group_len
            if not boundary:
                continue
            self.optimizer_step()
            values = all_reduce_mean(
                [group_loss * self.loss_scale, *group_parts.values()], self.info
            )
            lr = self.optimizer.param_groups[0]["lr"]
            if self.step % self.log_every == 0:
                self.history["steps"].append(
                    {"step": self.step, "epoch": self.epoch, "loss": values[0], "lr": lr}
                )
            for k, v in zip(["loss", *group_parts], values):
                sums[k] = sums.get(k, 0.0) + v
            self.epoch_steps += 1
            group_loss, group_parts = 0.0, {}
            self.step += 1
            self.batch = i + 1
            bar.set_postfix(loss=f"{values[0]:.4g}", lr=f"{lr:.3g}")
            if cfg["checkpoint_every"] and self.step % cfg["checkpoint_every"] == 0:
                self.save()
        bar.close()
        means = {k: v / max(self.epoch_steps, 1) for k, v in sums.items()}
        return {"epoch": self.epoch, **means, "lr": self.optimizer.param_groups[0]["lr"]}

    def forward_backward(
        self, images: torch.Tensor, targets: list[dict[str, Any]], group_len: int, boundary: bool
    ) -> tuple[float, dict[str, float]]:
        images = images.to(self.device, non_blocking=True)
        if self.cuda and self.cfg["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = to_device(targets, self.device)
        # Under DDP, skip the gradient all-reduce on micro-batches that do not end a step.
        sync = self.net.no_sync() if self.info.distributed and not boundary else nullcontext()
        with sync:
            with torch.autocast(self.device.type, enabled=self.amp), counts_over_ranks(self.info):
                raw = self.net(images)
                loss, parts = self.detector.loss(raw, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"train: loss is {loss.item()} at epoch {self.epoch}, step {self.step} "
                    f"(parts {parts}); lower lr or check the labels"
                )
            self.scaler.scale(loss * (self.loss_scale / group_len)).backward()
        return float(loss.detach()), parts

    def optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)  # hooks and clipping see true gradients
        for hook in self.hooks:
            if hasattr(hook, "after_backward"):
                hook.after_backward(self.detector, self.epoch, self.step)
        if self.cfg["clip_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(
                self.detector.parameters(), float(self.cfg["clip_grad_norm"])
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.detector)

    # ---- evaluation --------------------------------------------------------------------
    def eval_model(self) -> Detector:
        return self.ema.module if self.ema is not None else self.detector

    def maybe_evaluate(self) -> dict[str, Any]:
        every, last = self.cfg["eval_every"], self.epoch == self.cfg["epochs"] - 1
        if self.val_ds is None or every == 0 or not ((self.epoch + 1) % every == 0 or last):
            return {}
        metrics: dict[str, Any] = {}
        if self.info.is_main:
            metrics = self.evaluate()
            self.keep_best(metrics)
        if self.info.distributed:
            box = [metrics]
            torch.distributed.broadcast_object_list(box, src=0)
            metrics = box[0]
        return metrics

    def evaluate(self) -> dict[str, Any]:
        from compress.evaluate import evaluate_detector

        model = self.eval_model()
        model.eval()
        try:
            result = evaluate_detector(
                model,
                self.val_ds,
                batch_size=self.cfg["eval_batch_size"] or self.cfg["batch_size"],
                score_threshold=self.cfg["score_threshold"],
                device=str(self.device),
            )
        finally:
            self.detector.train()
        return {k: v for k, v in result.items() if isinstance(v, (int, float))}

    def keep_best(self, metrics: dict[str, Any]) -> None:
        key = self.cfg["best_metric"]
        if key not in metrics:
            raise KeyError(
                f"train: best_metric {key!r} not among evaluation results {sorted(metrics)}"
            )
        if self.best is None or metrics[key] > self.best["metrics"][key]:
            self.best = {"epoch": self.epoch, "metrics": dict(metrics), "path": BEST}
            state = {k: v.detach().cpu() for k, v in self.eval_model().state_dict().items()}
            ckpt_io.atomic_torch_save(
                {"model": state, "epoch": self.epoch, "metrics": dict(metrics)}, self.out_dir / BEST
            )

    # ---- end ---------------------------------------------------------------------------
    def write_history(self) -> None:
        if self.info.is_main:
            write_json(self.out_dir / HISTORY, self.summary())

    def summary(self) -> dict[str, Any]:
        return {
            "config": {k: v for k, v in self.cfg.items() if k != "resume"},
            "world_size": self.info.world_size,
            "loss_scale": self.loss_scale,
            "device": str(self.device),
            "steps_per_epoch": self.steps_per_epoch,
            **self.history,
            "best": self.best,
            "final": self.history["epochs"][-1] if self.history["epochs"] else None,
            "images_seen": self.images_seen(),
            "wall_s": round(self.elapsed, 3),
        }

    def finish(self) -> dict[str, Any]:
        barrier(self.info)
        if self.ema is not None:
            # The EMA weights are the ones that were evaluated: they become the model.
            self.detector.load_state_dict(self.ema.module.state_dict())
        self.detector.to(memory_format=torch.contiguous_format)
        self.detector.eval()
        self.write_history()
        return self.summary()


def train(
    detector: Detector,
    train_ds: Dataset,
    val_ds: Dataset | None,
    cfg: dict[str, Any],
    out_dir: str | Path,
    hooks: list[Any] | None = None,
    collate_fn: Any = None,
) -> dict[str, Any]:
    """Train `detector` in place; return the history (per-step loss/lr, per-epoch metrics, best).

    Args:
        detector: any `compress.models.base.Detector`; trained in place (hooks keep references).
        train_ds, val_ds: datasets following `compress/data/__init__.py`; val_ds may be None.
        cfg: the recipe's `train:` section (see DEFAULTS); `resume: true` continues from
            `out_dir/last.pt` exactly where it stopped.
        out_dir: where last.pt, best.pt and history.json go (rank 0 only).
        hooks: objects with `after_backward(model, epoch, step)` / `on_epoch_end(model, epoch,
            metrics)`.
        collate_fn: batch builder; default `compress.data.build.collate`.

    Example:
        history = train(det, train_ds, val_ds, recipe["train"], "runs/x/train")
        load_best(det, "runs/x/train")
    """
    return Trainer(detector, train_ds, val_ds, cfg, out_dir, hooks, collate_fn).fit()


def load_best(detector: Detector, out_dir: str | Path) -> bool:
    """Load `out_dir/best.pt` into `detector` if training kept one; True when it did."""
    path = Path(out_dir) / BEST
    if not path.is_file():
        return False
    best = torch.load(path, map_location="cpu", weights_only=True)
    detector.load_state_dict(best["model"])
    return True
