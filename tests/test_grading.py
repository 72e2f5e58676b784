"""The grader: extraction, normalisation, math-verify pitfalls, the hard time bound, clustering."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest

from pipelines import grading
from tests.conftest import BENCHMARK_FILES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{1} then \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\fbox{42}", "42"),
        ("\\boxed{1} and \\fbox{2}", "2"),
        ("answer: \\boxed 5$ done", "5"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{unclosed {", None),
        ("no box here", None),
        ("", None),
        ("\\boxedfoo{3}", None),
    ],
)
def test_extract_answer(text, expected):
    assert grading.extract_answer(text) == expected


def test_extraction_is_linear_on_a_megabyte_of_braces():
    started = time.perf_counter()
    assert grading.extract_answer("\\boxed{" + "{" * 1_000_000) is None
    assert grading.extract_answer("{" * 1_000_000) is None
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("4.5e33", "4.5\\times 10^{33}"),
        ("1.2E-5", "1.2\\times 10^{-5}"),
        ("3e+8", "3\\times 10^{8}"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("$$x=2$$", "x=2"),
        ("\\(7\\)", "7"),
        ("12.", "12"),
        ("\\sec x", "\\sec x"),
        ("2e", "2e"),
        ("e^{x}", "e^{x}"),
        ("$a$ and $b$", "$a$ and $b$"),
        ("\\frac{2 \\pi c^{2", "\\frac{2 \\pi c^{2}}"),
        ("\\{1, 2\\}", "\\{1, 2\\}"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert grading.normalize_answer(raw) == normalised


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("0.5", "\\frac{1}{2}", True),
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("4.5 \\times 10^{33}", "4.5e33", True),
        ("4.5e33", "4.5 \\times 10^{33}", True),
        ("\\frac{1}{2}", "$\\frac{1}{2}$", True),
        ("2", "$x=2$", True),
        ("3", "4", False),
        ("\\frac{1}{3}", "0.5", False),
        ("4.5e33", "4.5e34", False),
    ],
)
def test_is_equivalent(prediction, gold, expected):
    assert grading.is_equivalent(prediction, gold) is expected


def test_only_the_last_box_counts():
    assert grading.grade("first \\boxed{3}, finally \\boxed{4}", "4")
    assert not grading.grade("first \\boxed{4}, finally \\boxed{3}", "4")
    assert not grading.grade("no box, the answer is 4", "4")


def test_hard_time_bound_kills_a_stuck_grader_and_the_pool_recovers():
    with grading.GradingPool(workers=1, timeout_seconds=2) as pool:
        started = time.perf_counter()
        [stuck] = pool.grade_many(["\\boxed{(10^{10^{10}})!}"], ["1"])
        elapsed = time.perf_counter() - started
        assert stuck.timed_out and not stuck.correct and stuck.extracted == "(10^{10^{10}})!"
        assert elapsed < 4.5
        assert pool.timeouts == 1
        [after] = pool.grade_many(["\\boxed{0.5}"], ["\\frac{1}{2}"])
        assert after.correct and not after.timed_out
        assert len(pool._workers) == 1 and all(w.process.is_alive() for w in pool._workers)


def test_module_level_grade_returns_within_its_bound():
    started = time.perf_counter()
    assert grading.grade("\\boxed{(10^{10^{10}})!}", "1", timeout_seconds=2) is False
    assert grading.grade_detailed("\\boxed{(10^{10^{10}})!}", "1", timeout_seconds=2).timed_out
    assert grading.grade("{" * 1_000_000, "1") is False
    assert time.perf_counter() - started < 9


def test_pool_keeps_order_and_matches_in_process_grading():
    answers = ["1", "0.5", "\\frac{1}{2}", "x^2", "2x", "\\sqrt{2}", "1.4142", "10", "-3", "\\pi"]
    golds = ["1", "\\frac{1}{2}", "0.5", "x^{2}", "x+x", "2^{1/2}", "\\sqrt{2}", "10.0", "3", "\\pi"]
    responses = [f"Reasoning {i}... \\boxed{{{a}}}" for i, a in enumerate(answers)] * 5
    expected = [grading._fast_verdict(a, g) if grading._fast_verdict(a, g) is not None else grading._verify_in_process(a, g) for a, g in zip(answers, golds)] * 5
    with grading.GradingPool(workers=2) as pool:
        results = pool.grade_many(responses, golds * 5)
    assert [r.correct for r in results] == expected
    assert expected[:10] == [True, True, True, True, True, True, False, True, False, True]


def test_cluster_answers_groups_by_equivalence():
    answers = ["1/2", "0.5", "\\frac{1}{2}", "2", None, "2.0", "3", "0.5"]
    assert grading.cluster_answers(answers) == [0, 0, 0, 1, None, 1, 2, 0]
    with grading.GradingPool(workers=2) as pool:
        assert grading.cluster_answers(answers, pool=pool) == [0, 0, 0, 1, None, 1, 2, 0]
    assert grading.cluster_answers([None, None]) == [None, None]


def _golds(shared_data, name):
    table = pq.read_table(shared_data / BENCHMARK_FILES[name]).to_pylist()
    return [row["reward_model"]["ground_truth"][0] for row in table]


def _balanced(gold: str) -> str:
    """Close braces a truncated gold leaves open (68 Minerva golds stop at their first `}`),
    so the model answer can box it; the gold string itself is graded unchanged."""
    depth = 0
    for char in gold:
        depth += {"{": 1, "}": -1}.get(char, 0)
    return gold + "}" * max(depth, 0)


@pytest.mark.parametrize("name", sorted(BENCHMARK_FILES))
def test_every_real_ground_truth_grades_correct_as_a_model_answer(shared_data, name):
    golds = _golds(shared_data, name)
    responses = [f"Step by step... so the answer is \\boxed{{{_balanced(g)}}}." for g in golds]
    with grading.GradingPool(workers=2, timeout_seconds=10) as pool:
        results = pool.grade_many(responses, golds)
    wrong = [(g, r) for g, r in zip(golds, results) if not r.correct]
    assert not wrong, f"{len(wrong)} of {len(golds)} {name} golds do not self-grade, e.g. {wrong[:3]}"


def test_integer_shortcut_agrees_with_math_verify():
    pairs = [("12", "12"), ("12", "13"), ("-3", "3"), ("007", "7"), ("100", "1000"), ("0", "-0"),
             ("123456789", "123456788"), ("0.25", "0.5"), ("12.5", "12"), ("-0.5", "0.5")]
    for prediction, gold in pairs:
        assert grading._fast_verdict(prediction, gold) == grading._verify_in_process(prediction, gold), (prediction, gold)
    assert grading._fast_verdict("12.0", "12") is None  # close numbers: math-verify decides
    assert grading._fast_verdict("0.1234567", "0.1234568") is None


def test_numeric_shortcut_agrees_with_math_verify():
    from math_verify import parse, verify

    pairs = [("0.5", "\\frac{1}{2}"), ("0.5", "0.6"), ("\\frac{1}{3}", "0.333333"), ("1.6", "1.62"),
             ("2.5", "\\frac{5}{2}"), ("100", "99.99"), ("3.14159", "\\pi"), ("50\\%", "0.5"), ("10^{3}", "1000"),
             ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"), ("\\sqrt{2}", "1.5"), ("2\\pi", "6.28"),
             ("\\frac{\\sqrt{3}}{2}", "0.866"), ("x+1", "2"), ("5!", "120"), ("\\{1,2\\}", "3")]
    for prediction, gold in pairs:
        reference = verify(parse("\\boxed{" + gold + "}", parsing_timeout=None),
                           parse("\\boxed{" + prediction + "}", parsing_timeout=None), timeout_seconds=None)
        assert grading._verify_in_process(prediction, gold) == reference, (prediction, gold)


def test_a_grader_that_cannot_start_fails_loudly(tmp_path):
    """A script without a main guard makes workers crash at start-up: that must raise, not
    silently grade everything wrong."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    script = tmp_path / "unguarded.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\nfrom pipelines import grading\n"
                      "print(grading.grade('\\\\boxed{0.5}', '\\\\frac{1}{2}'))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "GradingError" in result.stderr and "__main__" in result.stderr
