"""Shared test settings: the real assets (skipped with a reason when absent) and quiet threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from compress.paths import assets_root  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    # The suite must stay fast on 2 cores: one intra-op thread per test process.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def assets() -> Path:
    """The assets root; tests that need a file call `need(assets, "darknet/yolov3-tiny.cfg")`."""
    return assets_root()


def need(root: Path, *relpaths: str) -> list[Path]:
    paths = [root / p for p in relpaths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"asset(s) absent (set NANOPRUNE_ASSETS): {', '.join(missing)}")
    return paths
