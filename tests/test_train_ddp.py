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
from tests.train_support import Rectangles, TinyDetector, collate, tiny_cfg

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
