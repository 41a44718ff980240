"""torchrun with 2 CPU processes (gloo) follows the same loss curve as 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from compress.train.engine import train
from tests.train_support import Rectangles, TinyDetector, collate, gloo_rank_env, tiny_cfg

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, os, sys
import torch
sys.path.insert(0, {repo!r})
from compress.train.distributed import cleanup_distributed
from compress.train.engine import train
from tests.train_support import Rectangles, TinyDetector, collate, tiny_cfg

torch.set_num_threads(1)
torch.manual_seed(0)
det = TinyDetector(bn=False, reduction={reduction!r})
out = {out!r}
history = train(det, Rectangles(16, hflip=0.5), None, tiny_cfg(**{cfg!r}), out, collate_fn=collate)
if int(os.environ["RANK"]) == 0:
    json.dump({{"world": history["world_size"], "loss_scale": history["loss_scale"], "losses": [s["loss"] for s in history["steps"]],
               "weight": det.head.weight.flatten().tolist()}}, open(out + "/result.json", "w"))
cleanup_distributed()
"""

CFG = {"epochs": 2, "batch_size": 8}  # global batch: 4 per process under torchrun


@pytest.mark.timeout(120)
def test_two_process_ddp_matches_one_process(tmp_path):
    # a loss summed over images (like YOLO's): the trainer must scale it by the world size
    reduction = "sum"
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            WORKER.format(repo=str(REPO), out=str(tmp_path), cfg=CFG, reduction=reduction)
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "result.json").read_text())

    torch.manual_seed(0)
    det = TinyDetector(bn=False, reduction=reduction)
    single = train(
        det, Rectangles(16, hflip=0.5), None, tiny_cfg(**CFG), tmp_path / "one", collate_fn=collate
    )
    assert ddp["world"] == 2 and single["world_size"] == 1 and ddp["loss_scale"] == 2.0
    assert len(ddp["losses"]) == len(single["steps"]) == 4
    assert ddp["losses"] == pytest.approx([s["loss"] for s in single["steps"]], rel=1e-4)
    assert torch.allclose(torch.tensor(ddp["weight"]), det.head.weight.flatten(), atol=1e-5)


class Crowds(torch.utils.data.Dataset):
    """64x64 noise images holding 1, 5, 2 and 7 boxes: rank 0 of 2 gets 3, rank 1 gets 12."""

    COUNTS = (1, 5, 2, 7)

    def __len__(self) -> int:
        return len(self.COUNTS)

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(50 + i)
        n = self.COUNTS[i]
        xy = torch.randint(0, 40, (n, 2), generator=g).float()
        wh = torch.randint(6, 24, (n, 2), generator=g).float()
        boxes = torch.cat([xy, (xy + wh).clamp(max=64)], 1)
        labels = torch.randint(0, 2, (n,), generator=g)
        return torch.rand(3, 64, 64, generator=g), {"boxes": boxes, "labels": labels}


class FirstGrads:
    """Hook: the (rank-averaged) gradients of the first optimizer step."""

    grads: list[torch.Tensor] | None = None

    def after_backward(self, model, epoch, step):
        if step == 0:
            self.grads = [p.grad.detach().clone() for p in model.parameters()]


def _bn_stays_eval(model: torch.nn.Module) -> torch.nn.Module:
    # BN in eval mode: per-rank batch statistics would differ from the global batch's anyway
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train = lambda mode=True, m=m: torch.nn.Module.train(m, False)
    return model


def _first_step(out: Path) -> dict:
    from tests.test_yolo import tiny

    probe = FirstGrads()
    model = _bn_stays_eval(tiny(seed=1))
    cfg = tiny_cfg(epochs=1, batch_size=4, shuffle=False, warmup_epochs=0, lr=1e-4)
    history = train(model, Crowds(), None, cfg, out, hooks=[probe], collate_fn=collate)
    return {
        "loss": history["steps"][0]["loss"],
        "loss_scale": history["loss_scale"],
        "grads": [g.flatten().tolist() for g in probe.grads],
    }


def _rank_worker(rank: int, port: int, out: str) -> None:
    from compress.train.distributed import cleanup_distributed

    gloo_rank_env(rank, port)
    result = _first_step(Path(out))
    if rank == 0:
        (Path(out) / "result.json").write_text(json.dumps(result))
    cleanup_distributed()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_ranks_with_unequal_target_counts_train_the_one_process_objective(tmp_path):
    # YOLO's box and class terms average over matches: each rank must divide by the global
    # count, or rank 0 (3 boxes) and rank 1 (12 boxes) weigh their boxes 4x apart
    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = json.loads((tmp_path / "result.json").read_text())
    one = _first_step(tmp_path / "one")
    assert ddp["loss_scale"] == 2.0 and one["loss_scale"] == 1.0
    assert ddp["loss"] == pytest.approx(one["loss"], abs=1e-5, rel=1e-5)
    for got, want in zip(ddp["grads"], one["grads"]):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-5, rtol=1e-5)
