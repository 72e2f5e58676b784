"""pass@k, mean@n, maj@n from graded records."""

from __future__ import annotations

import itertools
from math import isclose

import pytest

from pipelines.metrics import majority_is_correct, pass_at_k, summarize


def _brute_force_pass_at_k(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(correct, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("pattern", [[True, False, False, True], [False] * 4, [True] * 4, [False, False, True, False]])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_unbiased_pass_at_k_matches_enumeration(pattern, k):
    assert isclose(pass_at_k(len(pattern), sum(pattern), k), _brute_force_pass_at_k(pattern, k))


def test_pass_at_k_rejects_impossible_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def _by_string(answers):
    ids: dict[str, int] = {}
    return [None if a is None else ids.setdefault(a, len(ids)) for a in answers]


def test_majority_vote_ties_go_to_first_seen_and_no_answer_never_wins():
    assert majority_is_correct(["1", "2", "2", "1"], [True, False, False, True], _by_string)
    assert not majority_is_correct(["2", "1", "1", "2"], [False, True, True, False], _by_string)
    assert not majority_is_correct([None, None, "3"], [False, False, False], _by_string)
    assert majority_is_correct([None, None, "3"], [False, False, True], _by_string)
    assert not majority_is_correct([None, None], [False, False], _by_string)


def test_majority_counts_as_correct_if_any_member_of_the_winning_cluster_is():
    """Equivalent answers share a cluster, but a member can be graded wrong on its own (its
    grade timed out): the majority answer is still the right one."""
    from pipelines.grading import cluster_answers

    answers = ["\\frac{1}{2}", "0.5", "3", "1/2"]
    assert cluster_answers(answers) == [0, 0, 1, 0]
    assert majority_is_correct(answers, [False, True, False, False], cluster_answers)
    assert not majority_is_correct(answers, [False, False, True, False], cluster_answers)


def _records(per_item):
    return [
        {"index": i, "sample": s, "extracted": a, "correct": ok, "response_tokens": 10, "finish_reason": "stop"}
        for i, samples in enumerate(per_item)
        for s, (a, ok) in enumerate(samples)
    ]


def test_summarize_greedy_is_pass_at_1():
    out = summarize(_records([[("1", True)], [("2", False)], [(None, False)]]), n=1, ks=[1, 4])
    assert isclose(out["metrics"]["accuracy"], 1 / 3)
    assert out["metrics"]["pass@1"] == out["metrics"]["accuracy"]
    assert "pass@4" not in out["metrics"]
    assert out["counts"] == {
        "items": 3,
        "samples": 3,
        "correct": 1,
        "no_answer": 1,
        "grader_timeouts": 0,
        "truncated": 0,
        "mean_response_tokens": 10.0,
    }


def test_summarize_sampling_reports_mean_maj_and_pass_at_k():
    items = [
        [("1", True), ("1", True), ("2", False), ("3", False)],
        [("5", False), ("5", False), ("4", True), (None, False)],
    ]
    out = summarize(_records(items), n=4, ks=[1, 2, 4, 8], cluster=_by_string)["metrics"]
    assert isclose(out["accuracy"], 3 / 8) and out["mean@4"] == out["accuracy"]
    assert isclose(out["maj@4"], 0.5)
    assert isclose(out["pass@1"], 3 / 8)
    assert isclose(out["pass@4"], 1.0)
    assert isclose(
        out["pass@2"], (_brute_force_pass_at_k([1, 1, 0, 0], 2) + _brute_force_pass_at_k([0, 0, 1, 0], 2)) / 2
    )
    assert "pass@8" not in out


def test_summarize_refuses_items_with_missing_samples():
    records = _records([[("1", True), ("1", True)], [("2", False)]])
    with pytest.raises(ValueError, match="exactly n=2"):
        summarize(records, n=2, ks=[1])


def test_bootstrap_standard_error_matches_the_binomial_one_for_greedy():
    from pipelines.metrics import bootstrap_intervals

    correct = [1] * 20 + [0] * 20  # 40 questions, greedy, half right
    interval = bootstrap_intervals(correct, n=1, samples=4000, seed=0)["accuracy"]
    assert interval["se"] == pytest.approx((0.25 / 40) ** 0.5, rel=0.08)
    low, high = interval["ci95"]
    assert low == pytest.approx(0.5 - 1.96 * 0.079, abs=0.03) and high == pytest.approx(0.5 + 1.96 * 0.079, abs=0.03)
    assert bootstrap_intervals(correct, n=1, samples=500, seed=3) == bootstrap_intervals(
        correct, n=1, samples=500, seed=3
    )


def test_nested_samples_widen_the_interval_over_questions_only():
    """mean@n adds the sampling noise of the n samples: questions all at 50% still vary."""
    from pipelines.metrics import bootstrap_intervals

    uniform = [2] * 40  # every question right 2 of 4 times
    nested = bootstrap_intervals(uniform, n=4, ks=[2], samples=2000, seed=0)
    assert nested["accuracy"]["se"] == pytest.approx((0.25 / 160) ** 0.5, rel=0.1)  # 160 Bernoulli samples
    assert nested["pass@2"]["se"] > 0


def test_paired_difference_is_paired():
    from pipelines.metrics import paired_difference

    base = {i: int(i < 50) for i in range(100)}
    same = paired_difference(base, base, 1, 1)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["excludes_zero"]
    better = {i: int(i < 58) for i in range(100)}  # 8 more right, none lost: paired, this is certain
    result = paired_difference(better, base, 1, 1)
    assert result["difference"] == pytest.approx(0.08) and result["excludes_zero"] and result["ci95"][0] > 0
    shuffled = {i: int(50 <= i < 108) for i in range(100)}  # same 58% but on other questions
    assert not paired_difference(shuffled, base, 1, 1)["excludes_zero"]
    with pytest.raises(ValueError, match="share no question"):
        paired_difference({1: 1}, {2: 1}, 1, 1)
