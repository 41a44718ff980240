"""ACP: channel clustering + particle swarm search of per-layer widths (Chang et al. 2022).

Pieces, each importable on its own:
  groups   the prunable channel groups of a detector (Torch-Pruning DependencyGraph)
  cluster  per-channel mean responses on real images, DBSCAN / agglomerative clustering
  inherit  a candidate's weights: keep cluster representatives (or top-L1), BN recalibration
  fitness  accuracy proxies (teacher agreement, AP50, loss) and budgets (FLOPs, latency)
  pso      the particle swarm (per-dimension velocities, falling inertia, clamp)
  optimizers  pso, ga and random behind one ask/tell interface (ddpg, adversarial register
           themselves from their own modules)
  ddpg     two DDPG agents over per-unit ratios, an LSTM simulator of the fitness
  adversarial  GAL-style channel gates against a discriminator, Pareto selection
  space    what the learned optimisers see: layer features, a FLOPs model, a gated model
  search   the search loop: budget projection, cache, resumable state, log, report
  spread   each batch's new structures evaluated over torchrun's ranks, rank 0 the only writer
  strategy the `acp`/`pso`, `ga`, `random`, `ddpg` and `adversarial` prune strategies
           (compress.prune.run.STRATEGIES): the search's best structure, cut and refitted by
           the prune run
"""
