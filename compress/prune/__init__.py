"""Pruning: importance criteria, learned thresholds, BN sparsity, Darknet channel + layer
surgery, the slimming cycles and the prune-method registry (`methods.PRUNE_METHODS`)."""
