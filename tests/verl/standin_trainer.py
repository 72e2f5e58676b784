"""Stand-in for verl's trainer in the workflow test (`training.verl.trainer_module`).

This machine has no GPU, so verl's training loop (vLLM rollouts) cannot run; everything around
it does. Given the command line our launcher built, this module does what `main_ppo` does before
and after training that can be checked here: it composes the overrides against verl's own
config (as main_ppo's @hydra.main does; unknown keys fail), runs verl's `validate_config`,
checks it was handed the job's MLflow run and our package, and leaves what a run with
`resume_mode=auto` leaves: a real verl checkpoint at every save step (verl's FSDP engine on CPU,
tests/verl/cpu_checkpoint.py, one optimizer step) and `latest_checkpointed_iteration.txt`.
It logs no metrics: it trains nothing worth reporting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main(overrides: list[str]) -> int:
    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    if "mlflow" in config.trainer.logger and not os.environ.get("MLFLOW_RUN_ID"):
        raise SystemExit("standin: mlflow logging requested but MLFLOW_RUN_ID was not handed over")
    __import__("pipelines.train.verl_extension")  # what verl would load by pkg:// path
    out = Path(config.trainer.default_local_dir)
    total, every = int(config.trainer.total_training_steps), int(config.trainer.save_freq)
    steps = [step for step in range(1, total + 1) if step % every == 0 or step == total]
    script = Path(__file__).with_name("cpu_checkpoint.py")
    torchrun = Path(sys.executable).with_name("torchrun")
    for step in steps:
        if (out / f"global_step_{step}" / "actor" / "fsdp_config.json").is_file():
            continue  # resume_mode=auto: what is saved stays
        subprocess.run(
            [
                str(torchrun),
                "--nproc_per_node=1",
                "--master_port=29547",
                str(script),
                "--base",
                config.actor_rollout_ref.model.path,
                "--out",
                str(out),
                "--step",
                str(step),
            ],
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        print(f"standin: saved global_step_{step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
