"""TRL backend: argument mapping, a real GRPOTrainer run on CPU, resume after SIGKILL, and the
reward adapter with a group split across two processes (torchrun, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines.rewards import score_group
from pipelines.train import trl_backend
from pipelines.train.rewards_adapter import GroupRewardFunction
from tests.conftest import REPO_ROOT
from tests.job_specs import trainer_settings

TRAINER = trainer_settings()


def test_paper_batch_semantics_map_to_trl():
    paper = {
        **TRAINER,
        "num_generations": 16,
        "prompts_per_step": 256,
        "mini_batch_prompts": 32,
        "max_steps": 192,
        "save_steps": 20,
        "max_completion_length": 3072,
        "vllm_rollouts": True,
    }
    args = trl_backend.grpo_arguments(paper, Path("/ckpt"), world_size=8, use_cpu=False, report_to=[])
    assert args["generation_batch_size"] == 256 * 16
    assert args["per_device_train_batch_size"] * 8 == 32 * 16
    assert args["max_steps"] == 192 * 8 and args["save_steps"] == 20 * 8
    assert args["importance_sampling_level"] == "sequence" and args["loss_type"] == "grpo"
    assert (args["epsilon"], args["epsilon_high"], args["beta"]) == (3e-4, 4e-4, 0.0)
    assert args["bf16"] is True
    assert args["use_vllm"] is True and args["vllm_mode"] == "colocate"
    from trl import GRPOConfig

    fields = set(GRPOConfig.__dataclass_fields__)
    assert set(args) <= fields, f"not GRPOConfig fields: {set(args) - fields}"
    cpu = trl_backend.grpo_arguments({**TRAINER, "loss": "grpo"}, Path("/c"), 1, use_cpu=True, report_to=[])
    assert cpu["bf16"] is False and cpu["use_cpu"] is True and cpu["importance_sampling_level"] == "token"
    assert "use_vllm" not in cpu
    with pytest.raises(ValueError, match="vllm_rollouts needs a GPU"):  # or VLLM_TARGET_DEVICE=cpu
        trl_backend.grpo_arguments({**TRAINER, "vllm_rollouts": True}, Path("/c"), 1, use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        trl_backend.grpo_arguments(TRAINER, Path("/c"), 3, use_cpu=True, report_to=[])


def _spec(**trainer) -> dict:
    return {
        "model": "tiny",
        "method": "empo",
        "dataset": "arith_train",
        "trainer": {**TRAINER, **trainer},
        "gpus": 0,
        "grading": {"workers": 1, "timeout_seconds": 5},
    }


def test_real_grpo_trainer_two_steps_on_cpu(train_setup, tmp_path):
    manifest = trl_backend.train(
        _spec(), train_setup["base"], train_setup["data"], tmp_path / "ckpt", tmp_path / "final"
    )
    assert manifest["global_step"] == 4 and manifest["rollout_steps"] == 2  # 2 updates per rollout step
    history = json.loads((tmp_path / "ckpt" / "log_history.json").read_text())
    logged = {key for entry in history for key in entry}
    assert {
        "reward",
        "group/semantic_entropy",
        "group/num_clusters",
        "group/majority_ratio",
        "group/filtered_fraction",
        "group/majority_vs_gold_accuracy",
        "learning_rate",
        "clip_ratio/region_mean",
    } <= logged
    assert (tmp_path / "ckpt" / "curves.png").stat().st_size > 5000
    from pipelines.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(manifest["path"])
    assert sum(p.numel() for p in model.parameters()) == train_setup["base"]["num_parameters"]
    weights = Path(manifest["path"]) / "model.safetensors"
    assert weights.stat().st_mode & 0o044 == 0o044, "trained weights must be readable by the group"


def test_killed_training_resumes_from_its_last_checkpoint(train_setup, tmp_path):
    spec = _spec(max_steps=4, mini_batch_prompts=4)
    checkpoints, output = tmp_path / "ckpt", tmp_path / "models" / "model.json"
    command = [
        sys.executable,
        "-m",
        "pipelines.train.trl_backend",
        "--spec",
        json.dumps(spec),
        "--base-manifest",
        str(train_setup["root"] / "base.json"),
        "--data",
        str(train_setup["data"]),
        "--checkpoints",
        str(checkpoints),
        "--output",
        str(output),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (checkpoints / "checkpoint-2" / "trainer_state.json").is_file():
            break
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not output.exists(), "the job was killed before finishing"
    done = trl_backend.last_complete_checkpoint(checkpoints)
    assert done is not None and int(done.name.split("-")[1]) >= 2

    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=600)
    manifest = json.loads(output.read_text())
    assert manifest["resumed_from"] is not None and manifest["global_step"] == 4
    assert int(Path(manifest["resumed_from"]).name.split("-")[1]) >= 2


GROUPS = [
    ["\\boxed{1}", "\\boxed{1}", "\\boxed{2}", "none"],
    ["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{3}", "\\boxed{1/2}"],
    ["\\boxed{7}", "\\boxed{8}", "\\boxed{9}", "\\boxed{7.0}"],
]


def test_adapter_scores_groups_like_the_core():
    reward = GroupRewardFunction("empo", "empo", num_generations=4)
    try:
        prompts = [[{"role": "user", "content": f"q{g}"}] for g in range(3) for _ in range(4)]
        completions = [[{"role": "assistant", "content": c}] for group in GROUPS for c in group]
        logged = {}
        got = reward(
            prompts,
            completions,
            log_metric=lambda k, v: logged.setdefault(k, v),
            reward_model=[{"ground_truth": "1"}] * 12,
        )
        expected = [r for group in GROUPS for r in score_group(group, "empo").rewards]
        assert got == pytest.approx(expected)
        assert logged["group/num_clusters"] == pytest.approx((2 + 2 + 3) / 3)
        with pytest.raises(ValueError, match="share one prompt"):
            reward(prompts[1:] + prompts[:1], completions)
    finally:
        reward.close()


def test_adapter_gathers_a_group_split_across_two_processes(tmp_path):
    """torchrun, 2 CPU processes (gloo): rank 0 holds completions 0-5, rank 1 holds 6-11, so
    the second group is split; both ranks must return the single-process rewards."""
    script = tmp_path / "split.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys
        import torch.distributed as dist
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pipelines.train.rewards_adapter import GroupRewardFunction
        def main():
            dist.init_process_group("gloo")
            rank = dist.get_rank()
            groups = {GROUPS!r}
            prompts = [f"q{{g}}" for g in range(3) for _ in range(4)]
            completions = [c for group in groups for c in group]
            mine = slice(0, 6) if rank == 0 else slice(6, 12)
            reward = GroupRewardFunction("empo", "empo", num_generations=4)
            out = reward(prompts[mine], completions[mine])
            reward.close()
            with open({str(tmp_path)!r} + f"/rank{{rank}}.json", "w") as handle:
                json.dump(out, handle)
            dist.destroy_process_group()

        if __name__ == "__main__":  # grading workers re-import the main module
            main()
    """)
    )
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_port=29517", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    combined = json.loads((tmp_path / "rank0.json").read_text()) + json.loads((tmp_path / "rank1.json").read_text())
    expected = [r for group in GROUPS for r in score_group(group, "empo").rewards]
    assert combined == pytest.approx(expected)


# ----------------------------------------------------------------------------------------
# Held-out accuracy during training (pipelines.train.validation).


def test_held_out_scores_are_mean_majority_and_greedy_accuracy():
    from pipelines import grading
    from pipelines.train.validation import score_answers, validation_due

    samples = [
        ["\\boxed{3}", "\\boxed{3}", "\\boxed{4}", "no answer"],  # 2/4 right, majority 3: right
        ["\\boxed{5}", "\\boxed{6}", "\\boxed{6}", "\\boxed{5.0}"],  # 2/4 right, tie: first seen (5): right
        ["\\boxed{1}", "\\boxed{1}", "\\boxed{2}", "\\boxed{0}"],
    ]  # 1/4 right, majority 1: wrong
    golds = ["3", "5", "2"]
    with grading.GradingPool(workers=1) as pool:
        scores = score_answers(samples, ["\\boxed{3}", "\\boxed{6}", "\\boxed{2}"], golds, pool)
    assert scores == {
        "validation/mean_accuracy": 5 / 12,
        "validation/majority_accuracy": 2 / 3,
        "validation/greedy_accuracy": 2 / 3,
    }
    with grading.GradingPool(workers=1) as pool, pytest.raises(ValueError, match="3 sample lists"):
        score_answers(samples, ["\\boxed{3}"], golds, pool)
    assert [step for step in range(1, 13) if validation_due(step, every_steps=2, updates_per_step=2)] == [4, 8, 12]


def test_validation_is_logged_and_never_changes_training(train_setup, tmp_path):
    """The same job with and without held-out scoring: the same weights (validation samples
    under its own random state), and the scored run's history has the points: step 0 (the
    base) and every rollout step here."""
    validation = {"dataset": "val", "every_steps": 1, "samples": 2}
    plain = trl_backend.train(_spec(), train_setup["base"], train_setup["data"], tmp_path / "a", tmp_path / "fa")
    scored = trl_backend.train(
        _spec(validation=validation),
        train_setup["base"],
        train_setup["data"],
        tmp_path / "b",
        tmp_path / "fb",
        validation_path=train_setup["data"],
    )
    assert scored["sha256"] == plain["sha256"]
    history = json.loads((tmp_path / "b" / "log_history.json").read_text())
    points = [entry for entry in history if "validation/mean_accuracy" in entry]
    assert [entry["step"] for entry in points] == [0, 2, 4]  # optimizer steps: 2 updates per rollout step
    assert all(
        0 <= entry[key] <= 1
        for entry in points
        for key in ("validation/mean_accuracy", "validation/majority_accuracy", "validation/greedy_accuracy")
    )
    assert trl_backend.mlflow_metric_name("validation/mean_accuracy") == "validation/mean_accuracy"
    with pytest.raises(ValueError, match="no validation data"):
        trl_backend.train(
            _spec(validation=validation), train_setup["base"], train_setup["data"], tmp_path / "c", tmp_path / "fc"
        )


# ----------------------------------------------------------------------------------------
# The policy's token statistics (pipelines.train.token_stats), pinned on hand-computed logits.


class _TableModel:
    """A stand-in policy over a 3-token vocabulary whose logits at a position depend only on the
    token there (row `TABLE[token]`): the statistic of completion token t must come from the
    distribution at position t - 1, the one that produced it."""

    def __init__(self, table):
        import torch

        self.table = torch.tensor(table, dtype=torch.float32)
        self.config = type("Config", (), {"vocab_size": self.table.shape[1]})()
        self.training = True

    def parameters(self):
        return iter([self.table])

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def __call__(self, input_ids, attention_mask, logits_to_keep):
        logits = self.table[input_ids][:, -logits_to_keep:, :]
        return type("Output", (), {"logits": logits})()


def test_token_statistics_are_those_of_the_distribution_that_produced_each_token():
    import math

    from pipelines.train.token_stats import policy_token_statistics

    half_quarter = [math.log(1), math.log(2), math.log(1)]  # p = (1/4, 1/2, 1/4)
    table = [half_quarter, [0.0, 0.0, 0.0], [0.0, 0.0, math.log(3)]]  # token 1: uniform; token 2: (1/5, 1/5, 3/5)
    model = _TableModel(table)
    # prompt [0], completion [1, 2]: token 1 comes from row 0, token 2 from row 1 (uniform)
    (stats,) = policy_token_statistics(model, [[0]], [[1, 2]], pad_token_id=0, temperature=1.0)
    entropy_row0 = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5))
    certainty_row0 = -(2 * math.log(0.25) + math.log(0.5)) / 3 - math.log(3)  # KL(U || p) = -mean log p - log V
    assert stats.num_tokens == 2
    assert stats.entropy_mean == pytest.approx((entropy_row0 + math.log(3)) / 2)
    assert stats.logprob_mean == pytest.approx((math.log(0.5) + math.log(1 / 3)) / 2)
    assert stats.self_certainty_mean == pytest.approx((certainty_row0 + 0.0) / 2)
    assert model.training  # the mode is restored
    # temperature divides the logits; padding (a shorter completion in the batch) is left out
    hot, short = policy_token_statistics(model, [[0], [2, 0]], [[1, 2], [1]], pad_token_id=0, temperature=2.0)
    tempered = [0.0, math.log(2) / 2, 0.0]
    z = sum(math.exp(v) for v in tempered)
    p1 = math.exp(tempered[1]) / z
    assert hot.logprob_mean == pytest.approx((math.log(p1) + math.log(1 / 3)) / 2)
    assert short.num_tokens == 1 and short.logprob_mean == pytest.approx(math.log(p1))
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        policy_token_statistics(model, [[0], [0]], [[1]], pad_token_id=0, temperature=1.0)


@pytest.mark.parametrize("reward", ["token_entropy", "self_certainty", "trajectory_likelihood"])
def test_token_distribution_rewards_train_with_the_real_grpo_trainer(train_setup, tmp_path, monkeypatch, reward):
    """Each token reward through TRL's GRPOTrainer (the TokenStatsTrainer subclass): the rewards it
    logs have the reward's sign, the group diagnostics are there as for every reward, and where
    TRL runs its own old-policy pass (here: 2 updates per rollout batch) entropy and likelihood
    are read from it, with no second forward; self-certainty always needs its own pass."""
    from pipelines.train import token_stats

    own_passes = []
    original = token_stats.policy_token_statistics
    monkeypatch.setattr(
        token_stats,
        "policy_token_statistics",
        lambda *args, **kwargs: own_passes.append(1) or original(*args, **kwargs),
    )
    manifest = trl_backend.train(
        _spec(reward=reward, max_steps=1),
        train_setup["base"],
        train_setup["data"],
        tmp_path / "ckpt",
        tmp_path / "final",
    )
    assert manifest["global_step"] == 2
    history = json.loads((tmp_path / "ckpt" / "log_history.json").read_text())
    logged = [entry for entry in history if "reward" in entry]
    assert logged and {"group/semantic_entropy", "group/majority_ratio"} <= set(logged[0])
    value = logged[0]["reward"]
    assert value < 0 if reward in ("token_entropy", "trajectory_likelihood") else value > 0
    assert len(own_passes) == (1 if reward == "self_certainty" else 0)


def test_statistics_read_from_trls_old_pass_equal_those_of_an_own_pass(train_setup, tmp_path, monkeypatch):
    """The first batch's rewards (sampled before any update, the same samples in both runs) with
    the statistics taken from TRL's old-log-prob pass, and with our own forward instead."""
    from pipelines.train import token_stats

    def first_reward(folder: str) -> float:
        trl_backend.train(
            _spec(reward="token_entropy", max_steps=1),
            train_setup["base"],
            train_setup["data"],
            tmp_path / folder,
            tmp_path / f"{folder}-final",
        )
        history = json.loads((tmp_path / folder / "log_history.json").read_text())
        return next(entry["reward"] for entry in history if "reward" in entry)

    captured = first_reward("captured")
    build = token_stats.token_stats_trainer_class

    def without_capture():
        trainer_class = build()
        trainer_class._old_pass_runs = lambda self: False
        return trainer_class

    monkeypatch.setattr(token_stats, "token_stats_trainer_class", without_capture)
    assert first_reward("own") == pytest.approx(captured, abs=1e-4)
