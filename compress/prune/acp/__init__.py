"""ACP: channel clustering + particle swarm search of per-layer widths (Chang et al. 2022).

Pieces, each importable on its own:
  groups   the prunable channel groups of a detector (Torch-Pruning DependencyGraph)
  cluster  per-channel mean responses on real images, DBSCAN / agglomerative clustering
  inherit  a candidate's weights: keep cluster representatives (or top-L1), BN recalibration
  fitness  accuracy proxies (teacher agreement, AP50, loss) and budgets (FLOPs, latency)
  pso      the particle swarm (per-dimension velocities, falling inertia, clamp)
  optimizers  pso, ga and random behind one ask/tell interface
  search   the search loop: budget projection, cache, resumable state, log, report
  spread   each batch's new structures evaluated over torchrun's ranks, rank 0 the only writer
  strategy the `acp`/`pso`, `ga` and `random` prune strategies (compress.prune.run.STRATEGIES):
           the search's best structure, cut and refitted by the prune run
"""
