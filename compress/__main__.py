"""`python -m compress <verb> ...`: the host-side command line.

Each verb is a module with `get_args_parser()` and `main(args)`, imported only when it runs
(`edge_runtime.verbs.dispatch`).
"""

from __future__ import annotations

import sys

from edge_runtime.verbs import dispatch

# verb -> (module, one-line help). Add a verb by adding a line here.
VERBS: dict[str, tuple[str, str]] = {
    "assets": ("compress.assets_cli", "list or fetch the weights, cfgs, videos and datasets"),
    "eval": (
        "compress.eval_cli",
        "person AP50 / AP50:95, params and FLOPs of a model or a results JSON",
    ),
    "train": ("compress.train.cli", "train or fine-tune a detector from a recipe"),
    "prune": (
        "compress.prune.cli",
        "prune with a strategy: slimming (sparsity + learned threshold), acp/pso, ga, random",
    ),
    "criteria": (
        "compress.prune.criteria_cli",
        "every channel criterion and layer allocator at equal FLOPs: AP table and plot",
    ),
    "search": ("compress.prune.cli", "the same as `prune --method acp`"),
    "search-compare": (
        "compress.prune.search_compare",
        "the structure searches (pso, ga, random) at one evaluation budget: table and plot",
    ),
    "recover": (
        "compress.recover.cli",
        "recover a pruned model: fine-tune, grafting, distillation",
    ),
    "import-tf": (
        "compress.models.tf_import",
        "import a TF1 Object Detection API SSD frozen graph",
    ),
    "pipeline": ("compress.pipeline", "run a whole recipe end to end into one run folder"),
    "gpu-smoke": (
        "compress.gpu_smoke",
        "the full profile's CUDA path (AMP, channels-last, DDP on NCCL, GPU eval): images/s",
    ),
}

# verb -> the arguments it stands for in front of the user's (an alias of another verb)
ALIASES: dict[str, list[str]] = {"search": ["--method", "acp"]}


def main(argv: list[str] | None = None) -> int:
    return dispatch("python -m compress", __doc__.splitlines()[0], VERBS, argv, ALIASES)


if __name__ == "__main__":
    sys.exit(main())
