"""One trainer for every detector family: single process or torchrun DDP, AMP, EMA, resume.

`engine.train(detector, train_ds, val_ds, cfg, out_dir, hooks)` is the entry point the other
stages use; `cli` is `python -m compress train`.
"""
