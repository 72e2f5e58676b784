"""Reward core: equivalence classes, the empty-answer policies, baselines, filter, diagnostics."""

from __future__ import annotations

import math

import pytest

from pipelines import rewards

GROUP = ["so \\boxed{1/2}", "\\boxed{0.5}", "I give up", "\\boxed{3}", "\\boxed{\\frac{1}{2}}", "\\boxed{3.0}"]


def test_empo_reward_is_the_share_of_equivalent_answers():
    assert rewards.empo_rewards(GROUP) == pytest.approx([3 / 6, 3 / 6, 1 / 6, 2 / 6, 3 / 6, 2 / 6])


def test_empty_answer_policies():
    assert rewards.empo_rewards(GROUP, empty_policy="zero")[2] == 0.0
    all_differ = ["\\boxed{1}", "\\boxed{2}", "nothing"]
    assert rewards.empo_rewards(all_differ, empty_policy="singleton") == pytest.approx([1 / 3] * 3)
    assert rewards.empo_rewards(all_differ, empty_policy="zero") == [0.0, 0.0, 0.0]
    assert rewards.empo_rewards(["none", "at all"]) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="empty_policy"):
        rewards.empo_rewards(GROUP, empty_policy="drop")


def test_majority_supervised_format_and_random():
    assert rewards.majority_rewards(GROUP) == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert rewards.majority_rewards(["a", "b"]) == [0.0, 0.0]
    assert rewards.supervised_rewards(GROUP, "3") == [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert rewards.format_rewards(GROUP) == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    first = rewards.random_rewards(GROUP * 50, seed=7)
    assert first == rewards.random_rewards(GROUP * 50, seed=7)
    assert first != rewards.random_rewards(GROUP * 50, seed=8)
    assert 0.3 < sum(first) / len(first) < 0.7


def test_diagnostics_and_label_free_majority_check():
    clusters = rewards.cluster_group(GROUP)
    diagnostics = rewards.group_diagnostics(clusters, gold="\\frac{1}{2}")
    expected_entropy = -(0.5 * math.log(0.5) + (2 / 6) * math.log(2 / 6) + (1 / 6) * math.log(1 / 6))
    assert diagnostics.semantic_entropy == pytest.approx(expected_entropy)
    assert diagnostics.num_clusters == 2 and diagnostics.majority_ratio == 0.5
    assert diagnostics.no_answer_fraction == pytest.approx(1 / 6)
    assert diagnostics.majority_correct is True
    assert rewards.group_diagnostics(clusters, gold="3").majority_correct is False
    assert rewards.group_diagnostics(clusters).majority_correct is None
    agreed = rewards.group_diagnostics(rewards.cluster_group(["\\boxed{2}"] * 4))
    assert agreed.semantic_entropy == 0.0 and agreed.majority_ratio == 1.0


def test_entropy_filter_blanks_rewards_outside_the_band():
    kept = rewards.score_group(GROUP, "empo", entropy_filter=(0.3, 1.0))
    assert not kept.filtered and kept.rewards[0] == 0.5
    dropped = rewards.score_group(
        ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"], "empo", entropy_filter=(0.3, 1.0)
    )
    assert dropped.filtered and dropped.rewards == [None] * 4
    assert rewards.passes_entropy_filter(0.3, 0.3, 1.0) and not rewards.passes_entropy_filter(0.29, 0.3, 1.0)


def test_group_metrics_mean_reward_counts_only_the_groups_that_train():
    kept = rewards.score_group(GROUP, "empo", entropy_filter=(0.3, 1.0))
    agreed = rewards.score_group(["\\boxed{2}"] * 4, "empo")
    dropped = rewards.score_group(
        ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"], "empo", entropy_filter=(0.3, 1.0)
    )
    metrics = rewards.group_metrics([kept, agreed, dropped])
    assert metrics["group/reward_mean"] == pytest.approx((sum(kept.rewards) / len(kept.rewards) + 1.0) / 2)
    assert metrics["group/filtered_fraction"] == pytest.approx(1 / 3)
    assert "group/reward_mean" not in rewards.group_metrics([dropped])


def test_score_group_dispatch_and_label_free_methods_ignore_the_gold():
    with_gold = rewards.score_group(GROUP, "empo", gold="3")
    without = rewards.score_group(GROUP, "empo")
    assert with_gold.rewards == without.rewards
    assert rewards.score_group(GROUP, "supervised", gold="3").rewards == [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="needs the gold"):
        rewards.score_group(GROUP, "supervised")
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.score_group(GROUP, "entropy")


def test_the_config_schema_offers_exactly_the_registered_rewards():
    import yaml

    from pipelines.config import SCHEMA_PATH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert schema["$defs"]["trainer"]["properties"]["reward"]["enum"] == list(rewards.REWARDS)


def test_reward_core_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, pipelines.rewards; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


# ----------------------------------------------------------------------------------------
# Rewards from the policy's token distribution (RENT / EM-RL / INTUITOR).


def test_token_distribution_rewards_read_the_trainers_statistics():
    stats = [
        rewards.TokenStats(entropy_mean=0.5, logprob_mean=-0.25, self_certainty_mean=2.0, num_tokens=7),
        rewards.TokenStats(entropy_mean=1.5, logprob_mean=-1.0, self_certainty_mean=0.5, num_tokens=3),
        rewards.TokenStats(entropy_mean=0.0, logprob_mean=0.0, self_certainty_mean=0.0, num_tokens=0),
    ]
    assert rewards.token_entropy_rewards(stats) == [-0.5, -1.5, None]  # no tokens: unscorable
    assert rewards.self_certainty_rewards(stats) == [2.0, 0.5, None]
    assert rewards.trajectory_likelihood_rewards(stats) == [-0.25, -1.0, None]
    completions = ["\\boxed{1}", "\\boxed{1}", "\\boxed{2}"]
    scored = rewards.score_group(completions, "token_entropy", gold="1", token_stats=stats)
    assert scored.rewards == [-0.5, -1.5, None]
    assert scored.diagnostics.majority_ratio == 2 / 3 and scored.diagnostics.majority_correct  # the same diagnostics
    assert rewards.TOKEN_REWARDS <= set(rewards.REWARDS)
    with pytest.raises(ValueError, match="token statistics"):
        rewards.score_group(completions, "self_certainty")
    with pytest.raises(ValueError, match="2 token statistics for 3 completions"):
        rewards.score_group(completions, "trajectory_likelihood", token_stats=stats[:2])
