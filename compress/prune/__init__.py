"""Pruning: one prune run (`run.py`) for every strategy in `run.STRATEGIES` (slimming, ACP),
importance criteria, learned thresholds, BN sparsity, Darknet channel + layer surgery and the
least-squares refit."""
