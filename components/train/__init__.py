"""Training: flow matching, the training loop, preference optimisation (DPO, TLPO)."""
