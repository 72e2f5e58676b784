"""Training backends sharing one reward core (`pipelines.rewards`).

- `trl_backend`: TRL's GRPOTrainer on one machine (CPU, one GPU, one node); rule `train_trl`,
  `python -m pipelines.train.trl_backend`.
- `verl_backend` (config -> `verl.trainer.main_ppo` overrides, no verl import), `verl_extension`
  (group rewards inside verl's replay buffer; imported by verl), `verl_launch` (one node, or Ray
  across the nodes of a SLURM allocation); rules `verl_command` and `train_verl`,
  `python -m pipelines.train.verl_launch`.
"""
