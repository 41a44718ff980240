"""Recovering a pruned detector's accuracy: fine-tuning, adaptive joint grafting,
multi-network coordinated training and distillation, behind `RECOVERY_METHODS` and
`python -m compress recover`."""
