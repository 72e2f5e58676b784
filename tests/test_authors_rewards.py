"""The `empo-rules` training equivalence equals the authors' reward, completion by completion.

Every expected reward in tests/data/authors_rewards_*.json was produced once by running the
authors' unmodified `empo_metrics` (QingyangZhang/EMPO c5eccd4,
verl-empo/verl/utils/reward_score/empo/compute_metrics.py; reward_type "entropy" = EMPO, "gt" =
the supervised reward) outside this repository, with the versions named in each file
(`benchmarks/authors_reward_groups.py pin`). `dev` is what the implementation was developed
against; `heldout` (another seed) was pinned before it was first compared.
"""

from __future__ import annotations

import json

import pytest

from pipelines import empo_rules, grading
from pipelines.rewards import EQUIVALENCE_RULES, empo_rewards, majority_rewards, score_group, supervised_rewards
from tests.conftest import REPO_ROOT

DATA = REPO_ROOT / "tests" / "data"


def _pinned(name: str) -> dict:
    return json.loads((DATA / f"authors_rewards_{name}.json").read_text())


@pytest.fixture(scope="module")
def authors_pool():
    with grading.GradingPool(workers=2, rule=EQUIVALENCE_RULES["empo-rules"]) as pool:
        yield pool


CASES = _pinned("cases")["cases"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_issue_table_cases_get_the_authors_rewards(name, authors_pool):
    case = CASES[name]
    completions, gold = case["completions"], case["gold"]
    assert empo_rewards(completions, pool=authors_pool, equivalence="empo-rules") == case["entropy"]
    assert supervised_rewards(completions, gold, pool=authors_pool, equivalence="empo-rules") == case["gt"]
    # the one-shot path (this process's shared pool) gives the same
    assert empo_rewards(completions, equivalence="empo-rules") == case["entropy"]


def test_what_the_authors_reward_and_math_verify_disagree_on():
    """The differences the issue lists, as the authors' code gives them (pinned) against math."""
    assert CASES["rounding_decimals"]["entropy"][:2] == [2 / 3, 2 / 3]  # 1.63 and 1.6: one cluster
    assert empo_rewards(CASES["rounding_decimals"]["completions"]) == [1 / 3] * 3  # math: two
    assert CASES["supervised_lenient"]["gt"] == [1.0, 1.0, 0.0]  # 4.667 "equals" gold 5
    assert supervised_rewards(CASES["supervised_lenient"]["completions"], "5") == [0.0, 1.0, 0.0]
    assert CASES["fbox"]["entropy"] == [1 / 3, 2 / 3, 2 / 3]  # \fbox{5} is no answer to them
    assert CASES["scientific"]["entropy"] == [1 / 3] * 3  # 4.5\times 10^{33} and 4.5e33 differ to them
    # their pair order: an interval in the representative's (prediction's) place does not
    # contain the later number; the same two answers the other way round form one cluster
    assert CASES["pair_order_interval"]["entropy"] == [1 / 3] * 3
    assert CASES["pair_order_interval_reversed"]["entropy"] == [2 / 3, 2 / 3, 1 / 3]


@pytest.mark.parametrize("name", ["dev", "heldout"])
def test_every_pinned_group_gets_the_authors_rewards(name, authors_pool):
    data = _pinned(name)
    assert len(data["groups"]) == 200 and "empo_metrics (unmodified)" in data["pinned_with"]
    mismatched = []
    for group in data["groups"]:
        empo = empo_rewards(group["completions"], pool=authors_pool, equivalence="empo-rules")
        supervised = supervised_rewards(
            group["completions"], group["gold"], pool=authors_pool, equivalence="empo-rules"
        )
        if empo != group["authors_entropy"] or supervised != group["authors_gt"]:
            mismatched.append(group["index"])
    assert mismatched == []
    # the groups exercise what the rewards must get right: groups of several clusters (some of
    # three or more sizes), groups partly right, empty boxes and replies without a box
    groups = data["groups"]
    assert sum(len(set(g["authors_entropy"])) > 1 for g in groups) > 150
    assert sum(len(set(g["authors_entropy"])) > 2 for g in groups) > 40
    assert sum(0 < sum(g["authors_gt"]) < len(g["authors_gt"]) for g in groups) > 150
    assert sum("\\boxed{}" in text for g in groups for text in g["completions"]) > 40
    assert sum("\\boxed" not in text for g in groups for text in g["completions"]) > 100


def test_an_empty_box_is_no_answer_on_every_path(authors_pool):
    """Three echoed empty boxes must not agree with each other as one answer (a reward-hacking
    path for small models): each is its own cluster of one, on math and on empo-rules."""
    group = ["\\boxed{}", "The answer is \\boxed{ }.", "\\boxed{}", "I do not know."]
    assert empo_rewards(group) == [0.25] * 4
    assert grading.extract_answer("\\boxed{ }") is None and empo_rules.extract_answer("\\boxed{}") is None
    score = score_group(group, "empo", gold="5")
    assert score.diagnostics.no_answer_fraction == 1.0 and score.diagnostics.num_clusters == 0
    assert majority_rewards(group) == [0.0] * 4
    # The authors keep a box of spaces as an answer (their "" test is on the raw string): two of
    # them form a cluster on empo-rules, as in their code (pinned case whitespace_boxes).
    assert CASES["whitespace_boxes"]["entropy"][:2] == [0.5, 0.5]


def test_a_pool_with_another_rule_is_refused(authors_pool):
    with grading.GradingPool(workers=1) as math_pool:
        with pytest.raises(ValueError, match="GradingPool\\(rule='empo-rules-reward'\\)"):
            empo_rewards(["\\boxed{1}"], pool=math_pool, equivalence="empo-rules")
    with pytest.raises(ValueError, match="rule 'math-verify'"):
        supervised_rewards(["\\boxed{1}"], "1", pool=authors_pool)
    with pytest.raises(ValueError, match="equivalence must be one of"):
        empo_rewards(["\\boxed{1}"], equivalence="mathverify")


def test_the_authors_clustering_asks_each_distinct_pair_once_and_only_what_it_reads(authors_pool):
    """Identical strings and mathd-equal strings are decided without a worker; each other
    (representative, answer) pair is asked once per group."""
    asked: list[tuple[str, str]] = []
    original = authors_pool.equivalent_many

    def counting(pairs):
        asked.extend(pairs)
        return original(pairs)

    authors_pool.equivalent_many = counting
    try:
        answers = ["2", "3", "2", "3", "\\frac{1}{2}", "0.5", "2", "7"]
        ids = grading.cluster_answers_authors(answers, pool=authors_pool)
    finally:
        del authors_pool.equivalent_many
    assert ids == [0, 1, 0, 1, 2, 2, 0, 3]
    assert len(asked) == len(set(asked))
    assert ("2", "2") not in asked and ("\\frac{1}{2}", "0.5") not in asked  # mathd: 0.5 -> \frac{1}{2}
    assert ("2", "7") in asked and ("7", "2") not in asked  # representative first, as theirs


def test_the_trl_adapter_trains_on_the_authors_reward_and_validates_with_math_verify():
    """What TRL's GRPOTrainer calls: the reward function of an empo-rules method returns the
    authors' rewards for a batch of groups; its held-out validation still grades with math-verify."""
    from pipelines.train.rewards_adapter import GroupRewardFunction

    groups = [CASES[name] for name in ("rounding_decimals", "fraction_and_decimal", "supervised_lenient")]
    for reward, key in (("empo", "entropy"), ("supervised", "gt")):
        function = GroupRewardFunction(reward, reward, num_generations=3, equivalence="empo-rules")
        try:
            completions = [text for g in groups for text in g["completions"]]
            prompts = [name for name, g in zip("abc", groups) for _ in g["completions"]]
            reward_model = [{"ground_truth": g["gold"]} for g in groups for _ in g["completions"]]
            logged = {}
            rewards = function(prompts, completions, log_metric=logged.__setitem__, reward_model=reward_model)
            assert rewards == [r for g in groups for r in g[key]]
            assert function.pool.rule == "empo-rules-reward" and function.math_pool.rule == "math-verify"
            assert logged["group/majority_ratio"] == pytest.approx(2 / 3)
        finally:
            function.close()
    with pytest.raises(ValueError, match="equivalence 'mathverify'"):
        GroupRewardFunction("empo", "empo", num_generations=3, equivalence="mathverify")


def test_the_logged_majority_vs_gold_is_the_authors_hit_rate(authors_pool):
    """group/majority_vs_gold_accuracy under empo-rules is their `label_accuracy`: the majority
    answer in the prediction's place, the gold in the gold's (an interval gold contains a number
    answer, not the other way round; both pinned from their empo_metrics)."""
    box = "So the answer is \\boxed{{{}}}.".format
    majority_number = score_group(
        [box("\\frac{5}{3}")] * 2 + [box("7")], "empo", gold="[1.64,1.70]", pool=authors_pool, equivalence="empo-rules"
    )
    assert majority_number.diagnostics.majority_correct is True  # theirs: label_accuracy 1.0
    majority_interval = score_group(
        [box("[1.64,1.70]")] * 2 + [box("7")], "empo", gold="\\frac{5}{3}", pool=authors_pool, equivalence="empo-rules"
    )
    assert majority_interval.diagnostics.majority_correct is False  # theirs: 0.0


def test_the_evaluation_grader_reads_a_gold_as_their_evaluation_does():
    """empo-rules grading (their answer_tag_reward_fn_for_r1) takes a boxed gold's last complete
    box, falling back past an unclosed one; the reward's comparison (their grade_single_answer)
    does not fall back, so the same gold is unreadable there (both as their code gives)."""
    gold = "\\boxed{5} or \\boxed 6"
    assert empo_rules.equivalent("5", gold)[0] is True  # their evaluation: score 1.0
    assert empo_rules.reward_equivalent("5", gold)[0] is False  # their reward: 0 (pinned case below)
    assert CASES["gold_with_unclosed_last_box"]["gt"] == [0.0, 0.0, 0.0]
    assert empo_rules.reward_equivalent(" ", "") == (False, "rules")  # an empty gold is never matched


def test_what_the_clustering_decides_without_the_chain_is_what_the_chain_says():
    """`reward_equivalent_certainly` only ever says True where their chain does: on every ordered
    pair of answers of 40 pinned groups plus answers whose gold-side box their grade cannot read."""
    groups = _pinned("dev")["groups"][:40]
    answers = sorted({a for g in groups for a in map(empo_rules.extract_answer, g["completions"]) if a})
    answers += ["\\\\boxed 5", "\\\\boxed{5} or \\\\boxed 6", "\\\\boxed{5}"]
    decided = 0
    for a in answers:
        for b in answers:
            if empo_rules.reward_equivalent_certainly(a, b):
                decided += 1
                assert empo_rules.reward_equivalent(a, b)[0] is True, (a, b)
    assert decided > len(answers)  # every answer with itself, and the mathd-equal pairs
    assert empo_rules.reward_equivalent_certainly("\\\\boxed 5", "\\\\boxed 5") is None
    assert empo_rules.reward_equivalent("\\\\boxed 5", "\\\\boxed 5")[0] is False  # their gold extraction fails
