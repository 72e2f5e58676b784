"""The group-reward extension on verl's real data path: trajectories in verl's own format
(AgentLoopOutput.as_dict, as the agent loop writes them) in a real TransferQueue on a local Ray,
sampled by our replay buffer through verl's sync sampling loop; the rewards verl then reads
(`rm_scores`) must equal `pipelines.rewards.score_group` on the same texts."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from pipelines.rewards import score_group

pytest.importorskip("verl", reason="verl is not installed here; run `make test-verl`")

GOLD = "4"
GROUPS = [
    ["so \\boxed{4}", "thus \\boxed{4}", "\\boxed{5}", "no answer at all"],
    ["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{2}"],
    ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"],
]


@pytest.fixture(scope="module")
def transfer_queue():
    import ray
    import transfer_queue as tq

    # Logical CPUs: TransferQueue's controller and storage actors reserve one each.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    tq.init({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}})
    yield tq
    tq.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from tests.verl.conftest import tiny_base_model

    return AutoTokenizer.from_pretrained(tiny_base_model(tmp_path_factory.mktemp("base")))


def put_group(tq, tokenizer, texts, gold=GOLD, global_steps=1, partition="train", question=None, masks=None):
    """One finished prompt group, written exactly as verl's AgentLoopWorkerTQ writes it
    (`masks`: each response's response_mask, all ones by default)."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    from pipelines import grading

    uid = str(uuid.uuid4())
    keys, fields, tags = [], [], []
    for session, text in enumerate(texts):
        ids = tokenizer.encode(text, add_special_tokens=False)
        per_completion = 1.0 if grading.grade(text, gold) else 0.0  # what gold_accuracy_score gives
        mask = list(masks[session]) if masks is not None else [1] * len(ids)
        output = AgentLoopOutput(
            prompt_ids=[1, 2, 3],
            response_ids=ids,
            response_mask=mask,
            num_turns=2,
            metrics={},
            reward_score=per_completion,
            extra_fields={"reward_extra_info": {"acc": per_completion, "score": per_completion}},
        )
        field = output.as_dict()
        field.update(
            {
                "uid": uid,
                "session_id": session,
                "data_source": "test",
                "global_steps": global_steps,
                "reward_model": {"ground_truth": gold, "style": "rule"},
            }
        )
        if question is not None:  # verl carries the dataset's extra_info with each trajectory
            field["extra_info"] = {"index": 0, "split": "train", "question": question}
        keys.append(f"{uid}_{session}_0")
        fields.append(field)
        tags.append({"status": "success", "global_steps": global_steps})
    tq.kv_batch_put(keys=keys, fields=list_of_dict_to_tensordict(fields), tags=tags, partition_id=partition)
    tq.kv_put(
        key=uid, partition_id=partition, tag={"is_prompt": True, "status": "finished", "global_steps": global_steps}
    )
    return uid


def make_buffer(tokenizer, reward="empo", entropy_filter=None, refill_fn=None, batch=1, **options):
    from pipelines.train.verl_extension import GroupRewardReplayBuffer

    return GroupRewardReplayBuffer(
        "sync",
        {},
        8,
        "drop",
        {
            "reward": reward,
            "train_batch_size": batch,
            "num_generations": 4,
            "entropy_filter": entropy_filter,
            "empty_policy": "singleton",
            "seed": 0,
            **options,
        },
        poll_interval=0.05,
        refill_fn=refill_fn or (lambda n: n),
        tokenizer=tokenizer,
    )


def rewards_verl_reads(tq, batch):
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["rm_scores"])
    rows = list(data["rm_scores"].unbind(0))
    assert all(float(row[:-1].abs().sum()) == 0.0 for row in rows), "reward must sit on the last token only"
    by_uid = {}
    for key, row in zip(batch.keys, rows):
        by_uid.setdefault(key.split("_")[0], []).append(float(row[-1]))
    return by_uid


@pytest.mark.parametrize("reward", ["empo", "majority", "supervised", "format", "random"])
def test_rewards_verl_trains_on_equal_the_reward_core(transfer_queue, tokenizer, reward):
    uids = [put_group(transfer_queue, tokenizer, texts) for texts in GROUPS]
    buffer = make_buffer(tokenizer, reward=reward, batch=len(GROUPS))
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=len(GROUPS))
    seen = rewards_verl_reads(transfer_queue, batch)
    for uid, texts in zip(uids, GROUPS):
        expected = score_group(texts, reward, gold=GOLD, seed=0).rewards
        assert seen[uid] == pytest.approx(expected), (reward, texts)
    if reward == "empo":
        assert seen[uids[0]] == [0.5, 0.5, 0.25, 0.25]
        assert seen[uids[1]] == [0.75, 0.75, 0.75, 0.25]
    assert metrics["group/scored_groups"] == 3.0
    assert metrics["group/filtered_fraction"] == 0.0
    assert 0.0 < metrics["group/semantic_entropy"]
    assert metrics["group/rollout_gold_accuracy"] == pytest.approx((2 / 4 + 0 + 1 / 4) / 3)
    # what the trainer does with them before its logger (console, MLflow) sees them
    from verl.trainer.ppo.v1.utils import MetricsAggregator

    aggregator = MetricsAggregator()
    aggregator.add_step_metrics(metrics, sample_count=len(batch.keys))
    logged = aggregator.get_aggregated_metrics()
    for name in (
        "group/semantic_entropy",
        "group/majority_ratio",
        "group/filtered_fraction",
        "group/majority_vs_gold_accuracy",
        "group/reward_mean",
    ):
        assert logged[name] == pytest.approx(metrics[name]), name


@pytest.mark.parametrize("reward", ["empo", "supervised"])
def test_the_authors_reward_reaches_verl_with_equivalence_empo_rules(transfer_queue, tokenizer, reward):
    """equivalence empo-rules (the paper config's): verl trains on what the authors' empo_metrics
    gives on the same completions (pinned from their unmodified code, tests/data)."""
    import json

    from tests.conftest import REPO_ROOT

    cases = json.loads((REPO_ROOT / "tests" / "data" / "authors_rewards_cases.json").read_text())["cases"]
    names = ["rounding_decimals", "three_empty_boxes", "supervised_lenient", "pair_order_interval_reversed"]
    groups = [cases[name] for name in names]
    for group in groups:  # the tokenizer must give the texts back, or the test would not test them
        assert [tokenizer.decode(tokenizer.encode(t, add_special_tokens=False)) for t in group["completions"]] == (
            group["completions"]
        )
    uids = [put_group(transfer_queue, tokenizer, g["completions"], gold=g["gold"]) for g in groups]
    buffer = make_buffer(tokenizer, reward=reward, batch=len(groups), num_generations=None, equivalence="empo-rules")
    assert buffer.pool.rule == "empo-rules-reward"
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=len(groups))
    seen = rewards_verl_reads(transfer_queue, batch)
    key = "entropy" if reward == "empo" else "gt"
    # verl's reward tensor is float32, as the authors' (EMPORewardManager's reward_tensor)
    assert [seen[uid] for uid in uids] == [[float(np.float32(r)) for r in g[key]] for g in groups]
    buffer.pool.close()


def test_entropy_filter_evicts_and_refills(transfer_queue, tokenizer):
    """A group whose majority share is below the band is evicted; verl's sync refill earns two
    prompt credits per eviction and dispatches them within its in-flight bound (one batch of
    prompts, here one prompt); the batch is filled from the refilled group."""
    requested = []

    def refill(count):
        requested.append(count)
        for _ in range(count):
            put_group(transfer_queue, tokenizer, GROUPS[0], global_steps=1)
        return count

    uncertain = put_group(transfer_queue, tokenizer, GROUPS[2])  # four different answers: share 0.25
    buffer = make_buffer(tokenizer, entropy_filter=[0.3, 1.0], refill_fn=refill, batch=1)
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=1)
    assert requested == [1]
    assert uncertain not in {key.split("_")[0] for key in batch.keys}
    assert len(batch.keys) == 4
    assert metrics["training/filter_groups/evicted_samples"] == 1
    assert metrics["group/filtered_fraction"] == 0.5  # the evicted group and its replacement
    assert list(rewards_verl_reads(transfer_queue, batch).values()) == [[0.5, 0.5, 0.25, 0.25]]


def test_validation_groups_keep_gold_accuracy(transfer_queue, tokenizer):
    """Validation is never re-scored: verl reports the per-completion accuracy against the gold."""
    uid = put_group(transfer_queue, tokenizer, GROUPS[0], partition="val")
    buffer = make_buffer(tokenizer)
    batch, metrics = buffer.sample(global_steps=1, partition_id="val", batch_size=1)
    assert not any(key.startswith("group/") for key in metrics)
    assert rewards_verl_reads(transfer_queue, batch)[uid] == [1.0, 1.0, 0.0, 0.0]


def test_gold_accuracy_score_is_our_grader():
    from pipelines.train.verl_extension import gold_accuracy_score

    assert gold_accuracy_score("math500", "\\boxed{0.5}", "\\frac{1}{2}")["acc"] == 1.0
    result = gold_accuracy_score("math500", "I am not sure", "3")
    assert result == {"score": 0.0, "acc": 0.0, "has_answer": 0.0}


def test_the_buffer_refuses_what_it_cannot_do(tokenizer):
    from pipelines.train.verl_extension import GroupRewardReplayBuffer

    with pytest.raises(ValueError, match="sync"):
        GroupRewardReplayBuffer("colocate_async", {}, 8, "drop", {"reward": "empo", "train_batch_size": 1})
    with pytest.raises(ValueError, match="missing"):
        GroupRewardReplayBuffer("sync", {}, 8, "drop", {"reward": "empo"})
    with pytest.raises(ValueError, match="unknown reward"):
        GroupRewardReplayBuffer("sync", {}, 8, "drop", {"reward": "vibes", "train_batch_size": 1})


def test_verl_builds_our_buffer_from_the_generated_config(transfer_queue, tmp_path, compose_verl):
    """verl's own PPOTrainer._build_replay_buffer, on the config our backend generates, makes a
    buffer that finds the policy's tokenizer and scores a group."""
    from types import SimpleNamespace

    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from pipelines.train.verl_extension import GroupRewardReplayBuffer
    from tests.verl.conftest import tiny_base_model

    composed = generated_demo_config(compose_verl, tiny_base_model(tmp_path / "base"), "empo")
    trainer = SimpleNamespace(config=composed, trainer_mode="sync", _add_prompts_to_generate=lambda n: n)
    buffer = PPOTrainer._build_replay_buffer(trainer)
    assert isinstance(buffer, GroupRewardReplayBuffer)
    assert (buffer.reward, buffer.train_batch_size, buffer.num_generations) == ("empo", 8, 4)
    uid = put_group(transfer_queue, buffer.tokenizer, GROUPS[1])
    buffer.train_batch_size = 1
    buffer.max_inflight_gen_batches = 1
    batch, _ = buffer.sample(global_steps=1, partition_id="train", batch_size=1)
    assert rewards_verl_reads(transfer_queue, batch)[uid] == [0.75, 0.75, 0.75, 0.25]


JUDGE_QUESTION = "Which gas do plants take in for photosynthesis?"
FREE_FORM_GROUPS = [
    ["so \\boxed{carbon dioxide}", "\\boxed{CO2}", "\\boxed{carbon dioxide}", "nothing boxed"],
    ["\\boxed{oxygen}", "\\boxed{oxygen}", "\\boxed{photosynthesis}", "\\boxed{N2}"],
]


@pytest.mark.parametrize("reward", ["empo", "supervised"])
def test_the_semantic_judge_scores_verl_groups_as_the_reward_core_does(transfer_queue, tokenizer, tmp_path, reward):
    from pipelines.judge import make_equivalence_judge
    from pipelines.train.verl_extension import GroupRewardReplayBuffer
    from tests.tiny_models import build_tiny_qwen2

    verifier = build_tiny_qwen2(
        tmp_path / "verifier",
        attention_heads=2,
        kv_heads=1,
        max_length=512,
        extra_corpus=("Assistant: Final Decision: Yes", "Assistant: Final Decision: No"),
    )
    settings = {
        "model": verifier,
        "engine": "hf",
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 4,
        "yes_token": " Yes",
        "no_token": " No",
        "api_key_env": "X",
        "timeout_seconds": 5,
    }
    uids = [
        put_group(transfer_queue, tokenizer, texts, gold="carbon dioxide", question=JUDGE_QUESTION)
        for texts in FREE_FORM_GROUPS
    ]
    buffer = GroupRewardReplayBuffer(
        "sync",
        {},
        8,
        "drop",
        {
            "reward": reward,
            "train_batch_size": len(uids),
            "num_generations": 4,
            "seed": 0,
            "equivalence": "judge",
            "semantic_judge": settings,
        },
        poll_interval=0.05,
        refill_fn=lambda n: n,
        tokenizer=tokenizer,
    )
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=len(uids))
    seen = rewards_verl_reads(transfer_queue, batch)
    reference = make_equivalence_judge(settings)
    for uid, texts in zip(uids, FREE_FORM_GROUPS):
        expected = score_group(texts, reward, gold="carbon dioxide", judge=reference, question=JUDGE_QUESTION)
        assert seen[uid] == pytest.approx(expected.rewards), texts
    assert seen[uids[0]][3] == -0.5  # no answer: the authors' penalty, with either reward
    assert metrics["group/judge_pairs"] > 0 and metrics["group/judge_forward_passes"] >= 1


def test_the_judge_backend_needs_its_settings(tokenizer):
    from pipelines.train.verl_extension import GroupRewardReplayBuffer

    with pytest.raises(ValueError, match="semantic_judge"):
        GroupRewardReplayBuffer(
            "sync",
            {},
            8,
            "drop",
            {"reward": "empo", "train_batch_size": 1, "equivalence": "judge"},
            tokenizer=tokenizer,
        )


def generated_demo_config(compose_verl, model_path, reward):
    """verl's config as our backend generates it for the demo's EMPO job on verl
    (config/verl-smoke.yaml), with `reward`."""
    from pipelines import config as cfg
    from pipelines.train import verl_backend
    from tests.conftest import REPO_ROOT

    config = cfg.load_config([REPO_ROOT / "config" / "demo.yaml", REPO_ROOT / "config" / "verl-smoke.yaml"])
    spec = cfg.train_job_spec(config, "tiny-qwen2", "empo")
    spec["trainer"]["reward"] = reward
    overrides = verl_backend.build_overrides(
        spec,
        model_path=str(model_path),
        train_file="/d/t.parquet",
        val_files=[],
        checkpoint_dir="/c",
        project="p",
        log_to_mlflow=False,
        cpus=2,
    )
    return compose_verl(overrides)


def trainer_on_the_generated_config(compose_verl, tmp_path, reward):
    """verl's PPOTrainerSync with the config our backend generates for `reward` on the demo (the
    object only: no workers; its advantage step reads and writes TransferQueue)."""
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    composed = generated_demo_config(compose_verl, tmp_path, reward)
    trainer = PPOTrainerSync.__new__(PPOTrainerSync)
    trainer.config = composed
    return trainer


def put_old_policy_pass(tq, batch, seed=0):
    """What verl's `_compute_old_log_prob` writes: per-response-token entropy and log-probs."""
    import torch
    from verl.utils import tensordict_utils as tu

    masks = list(
        tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask"])[
            "response_mask"
        ].unbind(0)
    )
    generator = torch.Generator().manual_seed(seed)
    entropy = [3 * torch.rand(len(mask), generator=generator) for mask in masks]
    log_probs = [-2 * torch.rand(len(mask), generator=generator) for mask in masks]
    tq.kv_batch_put(
        keys=batch.keys,
        partition_id=batch.partition_id,
        fields=tu.get_tensordict(
            {
                "old_log_probs": torch.nested.as_nested_tensor(log_probs, layout=torch.jagged),
                "entropy": torch.nested.as_nested_tensor(entropy, layout=torch.jagged),
            }
        ),
    )
    return {key: (e, lp, m.float()) for key, e, lp, m in zip(batch.keys, entropy, log_probs, masks)}


@pytest.mark.parametrize("reward", ["token_entropy", "trajectory_likelihood"])
def test_token_rewards_come_from_verls_old_policy_pass_and_reach_its_advantages(
    transfer_queue, tokenizer, compose_verl, tmp_path, reward
):
    """Nothing is scored at sampling; verl's real `_compute_advantage` on the generated config
    scores each group from the entropies / log-probs verl's old-policy pass wrote (mean over
    response_mask: a tool token is out), and its GRPO advantages are those rewards normalised
    in the group."""
    import torch

    from pipelines.rewards import TokenStats
    from pipelines.train.verl_extension import GroupRewardReplayBuffer

    trainer = trainer_on_the_generated_config(compose_verl, tmp_path, reward)
    masks = [[1] * len(tokenizer.encode(text, add_special_tokens=False)) for text in GROUPS[0]]
    masks[2][1:3] = [0, 0]  # two tool-output tokens inside the third response
    uids = [
        put_group(transfer_queue, tokenizer, GROUPS[0], masks=masks),
        put_group(transfer_queue, tokenizer, GROUPS[1]),
    ]
    buffer = GroupRewardReplayBuffer(
        "sync",
        {},
        8,
        "drop",
        {"reward": reward, "train_batch_size": 2, "num_generations": 4, "seed": 0},
        poll_interval=0.05,
        refill_fn=trainer._add_prompts_to_generate,
        tokenizer=tokenizer,
    )
    batch, sample_metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=2)
    assert not any(name.startswith("group/") for name in sample_metrics)
    per_key = put_old_policy_pass(transfer_queue, batch)
    metrics = {}
    trainer._compute_advantage(batch, metrics)

    seen = rewards_verl_reads(transfer_queue, batch)
    advantages = transfer_queue.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages"])[
        "advantages"
    ].unbind(0)
    advantage_of = {key: row for key, row in zip(batch.keys, advantages)}
    for uid, texts in zip(uids, GROUPS):
        keys = [f"{uid}_{session}_0" for session in range(4)]
        stats = [
            TokenStats(
                entropy_mean=float((e * m).sum() / m.sum()),
                logprob_mean=float((lp * m).sum() / m.sum()),
                self_certainty_mean=None,
                num_tokens=int(m.sum()),
            )
            for e, lp, m in (per_key[key] for key in keys)
        ]
        expected = score_group(texts, reward, gold=GOLD, token_stats=stats).rewards
        by_hand = [-s.entropy_mean if reward == "token_entropy" else s.logprob_mean for s in stats]
        assert expected == pytest.approx(by_hand)
        assert seen[uid] == pytest.approx(expected)
        rewards = torch.tensor(expected)
        normalised = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        for key, value in zip(keys, normalised):
            row, mask = advantage_of[key], per_key[key][2]
            assert torch.allclose(row, float(value) * mask, atol=1e-5), key  # on the response's own tokens
    masked = per_key[f"{uids[0]}_2_0"]
    assert seen[uids[0]][2] != pytest.approx(
        -float(masked[0].mean()) if reward == "token_entropy" else float(masked[1].mean())
    )
    assert metrics["group/scored_groups"] == 2.0
    assert metrics["group/reward_mean"] == pytest.approx(sum(sum(v) / 4 for v in seen.values()) / 2)
    assert metrics["group/majority_vs_gold_accuracy"] == pytest.approx(0.5)  # "4" is right, "1/2" is not


def test_what_verl_cannot_score_from_its_old_policy_pass_is_refused(tokenizer):
    from pipelines.train.verl_extension import GroupRewardReplayBuffer

    def buffer(**options):
        return GroupRewardReplayBuffer(
            "sync", {}, 8, "drop", {"train_batch_size": 1, **options}, refill_fn=lambda n: n, tokenizer=tokenizer
        )

    with pytest.raises(ValueError, match="log-normaliser"):
        buffer(reward="self_certainty")
    with pytest.raises(ValueError, match="entropy filter"):
        buffer(reward="token_entropy", entropy_filter=[0.3, 1.0])
    with pytest.raises(TypeError, match="PPOTrainer"):
        buffer(reward="trajectory_likelihood")
    assert buffer(reward="empo").reward == "empo"  # answer rewards need no trainer
