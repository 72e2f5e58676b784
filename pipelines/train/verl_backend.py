"""verl backend: our training settings -> one `python -m verl.trainer.main_ppo` invocation.

Everything here is plain Python (no verl import), so the workflow, the dry-run and the main
test suite can build and check the exact command; the verl tests compose every override we
generate against verl's own Hydra config (unknown keys fail) and run verl's config checks.

What the overrides encode (the authors' verl scripts, run_empo_*.sh in their repository):
- GRPO advantages, GSPO loss (`policy_loss.loss_mode=gspo`), clip 3e-4 / 4e-4, no KL anywhere;
- `prompts_per_step` x `num_generations` rollouts per step, updates every `mini_batch_prompts`;
- FSDP actor with optional offload, vLLM rollouts with tensor parallelism;
- rewards through `reward.*` (the old top-level `reward_model.*`/`custom_reward_function.*`
  keys still parse but are silently ignored by verl 0.9): a per-completion function that
  grades against the gold (what validation reports), and our group-level replay buffer
  (`pipelines.train.verl_extension`) that replaces training rewards with the method's group
  reward from `pipelines.rewards` and applies the entropy filter with refill;
- checkpoints every `save_steps` under results/train/<model>/<method>/, `resume_mode=auto`;
- console + MLflow logging into the job's own child run (MLFLOW_RUN_ID, see `verl_launch`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The verl release the overrides are written for (pinned in envs/verl.yaml and pyproject).
VERL_VERSION = "0.9.1"
#: verl loads our extension by module (pip-installed or on PYTHONPATH), not by file path.
EXTENSION_MODULE = "pkg://pipelines.train.verl_extension"
REWARD_FUNCTION = "gold_accuracy_score"
REPLAY_BUFFER = "GroupRewardReplayBuffer"
#: Steps verl may iterate epochs for; the run stops at `total_training_steps` (= max_steps).
MANY_EPOCHS = 1000

_BARE = re.compile(r"^[A-Za-z0-9_./:@+-]+$")


def hydra_value(value: Any) -> str:
    """A Python value as a Hydra override value (strings quoted unless plainly safe)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _BARE.match(value) and value.lower() not in ("null", "true", "false", "none"):
            return value
        if "'" in value or "\\" in value:
            raise ValueError(f"cannot pass {value!r} as a Hydra value (quote or backslash)")
        return f"'{value}'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"no Hydra form for {type(value).__name__}")


def override_settings(
    spec: Mapping[str, Any],
    *,
    model_path: str,
    train_file: str,
    val_files: Sequence[str],
    checkpoint_dir: str,
    project: str,
    log_to_mlflow: bool,
    cpus: int | None = None,
) -> dict[str, Any]:
    """Dotted verl config key -> value for one (model, method) job; `+key` adds a new key."""
    trainer = spec["trainer"]
    verl = spec["verl"]
    nodes, gpus = int(spec["nodes"]), int(spec["gpus"])
    max_tokens = verl["max_prompt_length"] + trainer["max_completion_length"]
    dynamic = bool(verl["use_dynamic_bsz"])
    validate = bool(val_files)
    settings: dict[str, Any] = {
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": True,
        "algorithm.use_kl_in_reward": False,
        "algorithm.kl_ctrl.kl_coef": 0.0,  # unused with use_kl_in_reward off; the authors' value (verl's: 0.001)
        # Our replay buffer filters and refills groups itself; verl's DAPO filter stays off.
        "algorithm.filter_groups.enable": False,
        "data.train_files": [train_file],
        # verl builds a validation set even when it never validates; the training file is cheap.
        "data.val_files": list(val_files) if validate else [train_file],
        "data.prompt_key": "prompt",
        "data.max_prompt_length": verl["max_prompt_length"],
        "data.max_response_length": trainer["max_completion_length"],
        "data.train_batch_size": trainer["prompts_per_step"],
        "data.truncation": "left",
        "data.filter_overlong_prompts": False,
        "data.shuffle": True,
        "data.seed": verl["data_seed"],  # verl's own default (1) is what the authors' runs used
        "actor_rollout_ref.model.path": model_path,
        "actor_rollout_ref.model.use_remove_padding": True,
        "actor_rollout_ref.model.enable_gradient_checkpointing": verl["gradient_checkpointing"],
        "actor_rollout_ref.actor.strategy": verl["strategy"],
        "actor_rollout_ref.actor.optim.lr": trainer["learning_rate"],
        "actor_rollout_ref.actor.optim.lr_warmup_steps": 0,
        "actor_rollout_ref.actor.optim.weight_decay": verl["weight_decay"],
        "actor_rollout_ref.actor.optim.clip_grad": verl["grad_clip"],
        "actor_rollout_ref.actor.ppo_mini_batch_size": trainer["mini_batch_prompts"],
        "actor_rollout_ref.actor.ppo_epochs": 1,
        "actor_rollout_ref.actor.use_dynamic_bsz": dynamic,
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": max_tokens,
        "actor_rollout_ref.actor.clip_ratio_low": trainer["epsilon"],
        "actor_rollout_ref.actor.clip_ratio_high": trainer["epsilon_high"],
        "actor_rollout_ref.actor.clip_ratio_c": verl["clip_ratio_c"],
        "actor_rollout_ref.actor.policy_loss.loss_mode": "gspo" if trainer["loss"] == "gspo" else "vanilla",
        "actor_rollout_ref.actor.loss_agg_mode": verl["loss_agg_mode"],
        "actor_rollout_ref.actor.use_kl_loss": trainer["beta"] > 0,
        "actor_rollout_ref.actor.kl_loss_coef": trainer["beta"],
        "actor_rollout_ref.actor.entropy_coeff": 0,
        "actor_rollout_ref.actor.ulysses_sequence_parallel_size": verl["ulysses_sequence_parallel"],
        "actor_rollout_ref.actor.fsdp_config.param_offload": verl["offload"],
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload": verl["offload"],
        "actor_rollout_ref.ref.fsdp_config.param_offload": verl["offload"],
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.n": trainer["num_generations"],
        "actor_rollout_ref.rollout.temperature": trainer["temperature"],
        "actor_rollout_ref.rollout.top_p": 1.0,
        "actor_rollout_ref.rollout.top_k": -1,
        "actor_rollout_ref.rollout.seed": trainer["seed"],
        "actor_rollout_ref.rollout.tensor_model_parallel_size": verl["rollout_tensor_parallel"],
        "actor_rollout_ref.rollout.gpu_memory_utilization": verl["rollout_gpu_memory_utilization"],
        "actor_rollout_ref.rollout.max_num_batched_tokens": max_tokens,
        # Validation is greedy, one sample: the table's protocol (graded against the gold).
        "actor_rollout_ref.rollout.val_kwargs.do_sample": False,
        "actor_rollout_ref.rollout.val_kwargs.n": verl.get("validation_samples", 1),
        "actor_rollout_ref.rollout.val_kwargs.temperature": 0,
        "reward.custom_reward_function.path": EXTENSION_MODULE,
        "reward.custom_reward_function.name": REWARD_FUNCTION,
        "trainer.v1.sampler.custom_sampler.path": EXTENSION_MODULE,
        "trainer.v1.sampler.custom_sampler.name": REPLAY_BUFFER,
        "+trainer.v1.sampler.sampler_kwargs.method": spec["method"],
        "+trainer.v1.sampler.sampler_kwargs.reward": trainer["reward"],
        "+trainer.v1.sampler.sampler_kwargs.empty_policy": trainer["empty_policy"],
        "+trainer.v1.sampler.sampler_kwargs.entropy_filter": trainer["entropy_filter"],
        "+trainer.v1.sampler.sampler_kwargs.seed": trainer["seed"],
        "+trainer.v1.sampler.sampler_kwargs.num_generations": trainer["num_generations"],
        "+trainer.v1.sampler.sampler_kwargs.train_batch_size": trainer["prompts_per_step"],
        # the replay buffer decodes responses with the policy's own tokenizer
        "+trainer.v1.sampler.sampler_kwargs.tokenizer": model_path,
        "+trainer.v1.sampler.sampler_kwargs.grading_workers": spec["grading"]["workers"],
        "+trainer.v1.sampler.sampler_kwargs.grading_timeout": spec["grading"]["timeout_seconds"],
        "trainer.use_v1": True,
        "trainer.v1.trainer_mode": "sync",
        "trainer.project_name": project,
        "trainer.experiment_name": f"{spec['model']}/{spec['method']}",
        "trainer.logger": ["console", "mlflow"] if log_to_mlflow else ["console"],
        "trainer.nnodes": nodes,
        "trainer.n_gpus_per_node": gpus,
        "trainer.total_epochs": MANY_EPOCHS,
        "trainer.total_training_steps": trainer["max_steps"],
        "trainer.save_freq": trainer["save_steps"],
        "trainer.test_freq": verl["validation_every_steps"] if validate else -1,
        "trainer.val_before_train": validate,
        "trainer.resume_mode": "auto",
        "trainer.default_local_dir": checkpoint_dir,
        "trainer.log_val_generations": 0,
    }
    if not dynamic:  # fixed micro-batches need a size; dynamic ones use the token budget
        settings["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"] = 1
        settings["actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu"] = 1
        settings["actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu"] = 1
    if cpus:
        settings["ray_kwargs.ray_init.num_cpus"] = cpus
    # Settings left at verl's defaults unless set (commands that do not set them stay as they were).
    for key, value in verl.get("rollout_engine", {}).items():
        settings[f"actor_rollout_ref.rollout.{key}"] = value
    for key, value in verl.get("model_override_config", {}).items():
        settings[f"+actor_rollout_ref.model.override_config.{key}"] = value
    if verl.get("data_use_shm"):
        settings["data.use_shm"] = True
    equivalence = trainer.get("equivalence", "math")
    if equivalence != "math":  # math, the default, is left out: commands from before the key stay equal
        settings["+trainer.v1.sampler.sampler_kwargs.equivalence"] = equivalence
    if equivalence == "judge":  # the semantic judge runs in the replay buffer's process
        settings["+trainer.v1.sampler.sampler_kwargs.semantic_judge"] = {
            key: value for key, value in spec["semantic_judge"].items() if value is not None
        }
    return settings


def build_overrides(spec: Mapping[str, Any], **paths: Any) -> list[str]:
    """Hydra overrides for `verl.trainer.main_ppo`: ours, then `training.verl.extra_overrides`."""
    settings = override_settings(spec, **paths)
    return [f"{key}={hydra_value(value)}" for key, value in settings.items()] + list(
        spec["verl"].get("extra_overrides", [])
    )


DEFAULT_TRAINER_MODULE = "verl.trainer.main_ppo"


def trainer_command(
    overrides: Sequence[str], python: str = "python", module: str = DEFAULT_TRAINER_MODULE
) -> list[str]:
    return [python, "-m", module, *overrides]


# ----------------------------------------------------------------------------- checkpoints

_STEP_DIR = re.compile(r"^global_step_(\d+)$")


def saved_steps(checkpoint_dir: str | Path) -> list[int]:
    """Steps with a complete actor checkpoint (verl writes `global_step_N/actor/`)."""
    root = Path(checkpoint_dir)
    steps = []
    for path in root.glob("global_step_*"):
        match = _STEP_DIR.match(path.name)
        if match and (path / "actor").is_dir() and any((path / "actor").glob("model_world_size_*_rank_*.pt")):
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_step(checkpoint_dir: str | Path) -> int | None:
    """The step verl itself resumes from (`latest_checkpointed_iteration.txt`), if any."""
    marker = Path(checkpoint_dir) / "latest_checkpointed_iteration.txt"
    if not marker.is_file():
        return None
    text = marker.read_text().strip()
    return int(text) if text.isdigit() else None


def choose_step(checkpoint_dir: str | Path, wanted: int | None) -> int:
    """The checkpoint to convert: `wanted`, or the last saved one; a clear error otherwise."""
    steps = saved_steps(checkpoint_dir)
    if not steps:
        raise FileNotFoundError(f"no verl actor checkpoint (global_step_N/actor) under {checkpoint_dir}")
    if wanted is None:
        return steps[-1]
    if wanted not in steps:
        raise FileNotFoundError(
            f"training.verl.convert_step is {wanted}, but {checkpoint_dir} holds steps "
            f"{steps}; pick one of them or save that step (training save_steps)"
        )
    return wanted


def training_record(
    spec: Mapping[str, Any], checkpoint_dir: str | Path, overrides: Sequence[str], run_id: str | None
) -> dict[str, Any]:
    """What the train job leaves for the conversion job (its Snakemake output)."""
    return {
        "backend": "verl",
        "verl_version": VERL_VERSION,
        "model": spec["model"],
        "method": spec["method"],
        "checkpoint_dir": str(Path(checkpoint_dir).resolve()),
        "saved_steps": saved_steps(checkpoint_dir),
        "latest_step": latest_step(checkpoint_dir),
        "overrides": list(overrides),
        "mlflow_run_id": run_id,
    }


def read_training_record(path: str | Path) -> dict[str, Any]:
    """training.json with its paths absolute again (stored relative to its folder when inside
    the results tree, so a moved tree converts its own checkpoints)."""
    from pipelines.provenance import resolved_paths

    return resolved_paths(json.loads(Path(path).read_text()), Path(path).parent)
