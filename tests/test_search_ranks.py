"""A structure search spread over torchrun's ranks (2 CPU processes, gloo) chooses what one
process chooses, rank 0 is its only writer, a state resumes on another number of ranks, and
`torchrun ... -m compress prune` runs the whole prune (refit, recovery, save) after it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from compress.prune.acp.search import STATE_FILE, Search, run_search, serve_search
from compress.prune.acp.spread import interleave, share
from tests.test_search_strategies import SMALL, settings
from tests.train_support import gloo_rank_env

REPO = Path(__file__).resolve().parents[1]
KEYS = ("best", "log", "history", "world_size", "evaluated", "cache_hits", "finished")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs():
    from compress.models.yolo import YOLO
    from tests.test_acp import TINY_CFG, ToyImages

    torch.manual_seed(0)
    return YOLO.from_cfg(TINY_CFG, 64, ["person"]).eval(), ToyImages(8, 64, 0), ToyImages(4, 64, 1)


# the swarm with one training step per candidate: the fitness's training must not depend on the
# rank either (clustering on every rank must give rank 0's clusters; the ga ranks channels by
# correlation independence instead)
PSO_TRAINED = {"fitness": {**SMALL["fitness"], "train_steps": 1}}


def _one_process(method: str, out: Path, stop_after: int | None = None, **over) -> dict:
    yolo, train, val = _inputs()
    _, report = run_search(yolo, train, val, settings(method, **over), out, stop_after)
    return {k: report[k] for k in KEYS}


def _rank(rank: int, port: int, out: str, method: str, over: dict, queue) -> None:
    """One of 2 ranks: rank 0 runs the search into `out`, rank 1 serves it from an empty
    working folder of its own; each reports the structures it evaluated and what it wrote."""
    import torch.distributed as dist

    from compress.train.distributed import init_distributed

    gloo_rank_env(rank, port)
    info = init_distributed("cpu")
    done: list[list[int]] = []
    fitness = Search.fitness

    def counted(self, widths):
        done.append(list(widths))
        return fitness(self, widths)

    Search.fitness = counted  # this spawned process only
    yolo, train, val = _inputs()
    cfg = settings(method, **over)
    here = Path(out) if rank == 0 else Path(out).parent / f"rank{rank}-cwd"
    here.mkdir(parents=True, exist_ok=True)
    os.chdir(here)
    report: dict = {}
    if rank == 0:
        _, result = run_search(yolo, train, val, cfg, out, info=info)
        report = {k: result[k] for k in KEYS}
    else:
        serve_search(yolo, train, val, cfg, info)
    queue.put(
        {
            "rank": rank,
            "evaluated": done,
            "files": sorted(os.listdir(here)),
            "left_group": not dist.is_initialized(),
            "report": report,
        }
    )


def _on_two_ranks(method: str, out: Path, **over) -> dict[int, dict]:
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_rank, args=(_free_port(), str(out), method, over, queue), nprocs=2, join=True)
    got = [queue.get() for _ in range(2)]
    return {g["rank"]: g for g in got}


def test_share_and_interleave_give_back_the_batch_order():
    items = list(range(7))
    parts = [share(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert interleave(parts) == items
    assert interleave([share([], r, 2) for r in range(2)]) == []


@pytest.mark.timeout(180)
def test_two_ranks_choose_the_one_process_structure_and_only_rank_0_writes(tmp_path):
    one = _one_process("pso", tmp_path / "one", **PSO_TRAINED)
    assert one["cache_hits"] > 0  # particles meeting on one structure: evaluated once
    ranks = _on_two_ranks("pso", tmp_path / "two", **PSO_TRAINED)
    two = ranks[0]["report"]
    # the same structure, and the same fitness in the same order at every lookup
    assert two["best"] == one["best"] and two["log"] == one["log"]
    assert two["history"] == one["history"]
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert (two["evaluated"], two["cache_hits"]) == (one["evaluated"], one["cache_hits"])
    # each new structure evaluated once, on one rank; both ranks took a share
    mine, theirs = ranks[0]["evaluated"], ranks[1]["evaluated"]
    assert mine and theirs and not {tuple(w) for w in mine} & {tuple(w) for w in theirs}
    assert len(mine) + len(theirs) == one["evaluated"]
    assert STATE_FILE in ranks[0]["files"] and "search_log.csv" in ranks[0]["files"]
    assert ranks[1]["files"] == []  # the serving rank wrote nothing
    assert ranks[0]["left_group"] and ranks[1]["left_group"]


@pytest.mark.timeout(180)
def test_a_state_written_by_one_process_resumes_on_two_ranks(tmp_path):
    whole = _one_process("ga", tmp_path / "whole")
    first = _one_process("ga", tmp_path / "two", stop_after=1)
    assert not first["finished"]
    ranks = _on_two_ranks("ga", tmp_path / "two")
    rest = ranks[0]["report"]
    assert rest["finished"] and rest["world_size"] == 2
    assert rest["log"] == whole["log"] and rest["history"] == whole["history"]
    assert rest["best"] == whole["best"]
    # the resumed part only: the cached first generation is not evaluated again
    assert len(ranks[0]["evaluated"]) + len(ranks[1]["evaluated"]) == (
        whole["evaluated"] - first["evaluated"]
    )


def _torchrun(*argv: str, timeout: int = 170) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    return subprocess.run(
        [*cmd, "2", "-m", "compress", *argv],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(240)
def test_prune_verb_under_torchrun_searches_on_two_ranks_then_recovers_on_rank_0(assets, tmp_path):
    from compress.models.load import load_detector_dir
    from tests.conftest import need

    need(
        assets,
        "darknet/yolov3-tiny.cfg",
        "darknet/yolov3-tiny.weights",
        "darknet/coco.names",
        "coco128/labels/train2017",
    )
    out = tmp_path / "two"
    argv = ["prune", "--recipe", "configs/yolov3-tiny-person.yaml", "--profile", "smoke",
            "--method", "random", "--evaluations", "4", "--population", "2", "--target", "0.5",
            "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = _torchrun(*argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["search"]["world_size"] == 2
    assert report["search_seconds"] > 0 and "2 rank(s)" in proc.stdout
    assert report["final"]["flops"] <= 0.5 * report["baseline"]["flops"] * (1 + 1e-6)
    # after the search rank 0 recovered in one process (the others had left), and saved
    history = json.loads((out / "recover" / "history.json").read_text())
    assert history["world_size"] == 1 and report["recovery"] is not None
    load_detector_dir(out / "model")


def test_a_strategy_that_does_not_spread_is_refused_under_torchrun(tmp_path, monkeypatch):
    import compress.train.distributed as distributed
    from compress.__main__ import main

    # what init_distributed answers on rank 0 of 2 under torchrun
    monkeypatch.setattr(distributed, "init_distributed", lambda *a, **k: distributed.DistInfo(0, 2))
    argv = ["prune", "--recipe", "configs/yolov3-tiny-person.yaml", "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit, match="under torchrun only the structure searches spread"):
        main(argv + ["--method", "slimming"])
    assert not (tmp_path / "x").exists()


def test_the_latency_budget_is_refused_over_ranks_before_any_work():
    from compress.train.distributed import DistInfo

    cfg = settings("random", fitness={**SMALL["fitness"], "budget": "latency"})
    with pytest.raises(ValueError, match="budget latency cannot be spread over ranks"):
        run_search(None, None, None, cfg, "unused", info=DistInfo(0, 2))
    with pytest.raises(ValueError, match="budget latency cannot be spread over ranks"):
        serve_search(None, None, None, cfg, DistInfo(1, 2))


def test_a_candidates_fitness_leaves_the_global_generator_alone(tmp_path):
    # rank 0 evaluates only its share: an optimiser drawing from torch's generator must see
    # the same draws as in one process, so evaluating (with its seeded training) may not move it
    from compress.prune.acp.search import prepare

    yolo, train, val = _inputs()
    cfg = settings("pso", **PSO_TRAINED)
    search = Search(yolo, prepare(yolo, train, val, cfg), cfg, tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = search.fitness([16, 24])
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # whatever the generator's state, the candidate's fitness is the same
    assert search.fitness([16, 24]) == first
