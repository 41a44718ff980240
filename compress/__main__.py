"""`python -m compress <verb> ...`: the host-side command line.

Each verb is a module with `get_args_parser()` and `main(args)` (the torchvision references'
shape), imported only when that verb runs, so `--help` stays fast and a verb's heavy imports
never slow the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, one-line help). Add a verb by adding a line here.
VERBS: dict[str, tuple[str, str]] = {
    "assets": ("compress.assets_cli", "list or fetch the weights, cfgs, videos and datasets"),
    "eval": (
        "compress.eval_cli",
        "person AP50 / AP50:95, params and FLOPs of a model or a results JSON",
    ),
    "train": ("compress.train.cli", "train or fine-tune a detector from a recipe"),
    "prune": ("compress.prune.cli", "sparsity training and adaptive channel + layer pruning"),
    "criteria": (
        "compress.prune.criteria_cli",
        "every channel criterion and layer allocator at equal FLOPs: AP table and plot",
    ),
    "search": (
        "compress.prune.search_cli",
        "SSD/YOLO structure search: clustering + particle swarm",
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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compress", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, help_text) in VERBS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VERBS:
        build_parser().parse_args(argv or ["--help"])
        return 2
    module = importlib.import_module(VERBS[argv[0]][0])
    parser = module.get_args_parser()
    parser.prog = f"python -m compress {argv[0]}"
    return int(module.main(parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
