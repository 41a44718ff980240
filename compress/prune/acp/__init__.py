"""ACP: channel clustering + particle swarm search of per-layer widths (Chang et al. 2022).

Pieces, each importable on its own:
  groups   the prunable channel groups of a detector (Torch-Pruning DependencyGraph)
  cluster  per-channel mean responses on real images, DBSCAN / agglomerative clustering
  inherit  a candidate's weights: keep cluster representatives (or top-L1), BN recalibration
  fitness  accuracy proxies (teacher agreement, AP50, loss) and budgets (FLOPs, latency)
  pso      the particle swarm (per-dimension velocities, falling inertia, clamp)
  search   the search loop: cache, resumable state, report; `acp` for PRUNE_METHODS
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def acp(detector, train_ds, val_ds, recipe: dict[str, Any], out_dir: Path):
    """PRUNE_METHODS["acp"] (imported lazily: torch-pruning and sklearn load only when used)."""
    from compress.prune.acp.search import acp as run

    return run(detector, train_ds, val_ds, recipe, out_dir)
