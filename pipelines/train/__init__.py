"""Training backends. `trl_backend`: TRL's GRPOTrainer on one machine (CPU, one GPU, one node).
The cluster backend (verl) reuses the same reward core, `pipelines.rewards`."""
