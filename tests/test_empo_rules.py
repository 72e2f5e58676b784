"""The authors' rule grader (empo-rules), checked against their own behaviour.

Every verdict in VERIFIED was produced by running the authors' unmodified `empo_verify.grade`
(QingyangZhang/EMPO, verl-empo/verl/utils/reward_score/empo_verify.py, xVerify off) with
math-verify 0.9.0 and sympy 1.14; the step is theirs (`scored_by`). The real-data test rewrites
the golds of the five benchmark files the way models write answers and pins where the two rule
graders agree and where they differ (figures measured once, asserted exactly).
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from pipelines import empo_rules, grading
from tests.conftest import BENCHMARK_FILES

# gold, prediction (the boxed content), their verdict, the step that decided
VERIFIED = [
    ("1.6", "1.63", True, "sympy"),  # both rounded to the coarser precision (1 decimal)
    ("1.6", "2", True, "sympy"),  # ... even to 0 decimals
    ("1.6", "1.7", False, "rules"),
    ("3.0e-5", "3\\times 10^{-5}", True, "sympy"),
    ("4.5e33", "4.5\\times 10^{33}", False, "rules"),  # sympy's ^33 guard; math-verify reads e as Euler's
    ("\\frac{1}{2}", "0.5", True, "mathd"),
    ("\\frac{14}{3}", "\\frac{28}{6}", True, "math-verify"),  # sympy refuses unreduced fractions
    ("\\frac{14}{3}", "4.67", True, "sympy"),
    ("[1.64,1.70]", "\\frac{5}{3}", True, "math-verify"),  # their interval rule
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, 90)", True, "sympy"),  # pi = 180
    ("\\text{(A)}", "(C)", True, "mathd"),  # A and C are deleted as SI units
    ("\\text{(B)}", "(D)", False, "rules"),
    ("100", "149", True, "sympy"),  # mantissas 1.00 and 1.49 rounded to 0 decimals
    ("70", "74", True, "sympy"),
    ("70", "75", False, "rules"),
    ("33", "34", False, "rules"),
    ("\\sqrt{2}", "1.41", False, "rules"),
    ("\\sqrt{2}", "1.414", True, "sympy"),
    ("x \\in [2,5)", "[2,5)", True, "math-verify"),
    ("2.0e6", "2\\times10^6", True, "sympy"),
    ("p - q", "-q+p", True, "sympy"),
    ("5", "5", True, "mathd"),
]


@pytest.mark.parametrize(("gold", "prediction", "verdict", "step"), VERIFIED)
def test_verdicts_and_steps_are_the_authors(gold, prediction, verdict, step):
    assert empo_rules.equivalent(prediction, gold) == (verdict, step)


def test_extraction_is_the_authors():
    assert empo_rules.extract_answer("a \\boxed{3} then \\boxed{5}") == "5"
    assert empo_rules.extract_answer("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert empo_rules.extract_answer("no box") is None
    assert empo_rules.extract_answer("\\fbox{5}") is None  # found, but only \boxed{ is unwrapped
    assert empo_rules.extract_answer("\\boxed 5") is None
    assert empo_rules.extract_answer("\\boxed{}") is None
    assert empo_rules.gold_answer("\\boxed{7}") == "7" and empo_rules.gold_answer("7.5") == "7.5"


def test_the_rule_grader_runs_in_the_bounded_pool():
    with grading.GradingPool(workers=1, timeout_seconds=5, rule="empo-rules") as pool:
        results = pool.grade_many(["so \\boxed{1.63}", "so \\boxed{1.7}", "no box", "\\fbox{1.6}"], ["1.6"] * 4)
    assert [(r.correct, r.extracted, r.decided_by) for r in results] == [
        (True, "1.63", "sympy"),
        (False, "1.7", "rules"),
        (False, None, None),
        (False, None, None),
    ]
    with pytest.raises(ValueError, match="unknown grading rule"):
        grading.GradingPool(rule="exact")


def _golds(shared_data, name: str) -> list[str]:
    frame = pd.read_parquet(shared_data / BENCHMARK_FILES[name])
    return [str(reward["ground_truth"][0]) for reward in frame["reward_model"]]


def _verdicts(pairs: list[tuple[str, str]]) -> tuple[list[bool], list[bool]]:
    """(math-verify, empo-rules) verdicts of (prediction, gold) pairs."""
    with (
        grading.GradingPool(workers=2, rule="math-verify") as strict,
        grading.GradingPool(workers=2, rule="empo-rules") as authors,
    ):
        return ([v for v, _ in strict.equivalent_many(pairs)], [v for v, _ in authors.equivalent_many(pairs)])


def _tally(pairs):
    ours, theirs = _verdicts(pairs)
    return {
        "n": len(pairs),
        "math-verify": sum(ours),
        "empo-rules": sum(theirs),
        "only math-verify": sum(a and not b for a, b in zip(ours, theirs)),
        "only empo-rules": sum(b and not a for a, b in zip(ours, theirs)),
    }


E_NOTATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[eE]\s*([+-]?\d+)\s*$")
FRACTION = re.compile(r"^\\(?:d|t)?frac\{(\d+)\}\{(\d+)\}$")


@pytest.mark.slow
def test_the_authors_trickiest_real_golds_under_both_rule_graders(shared_data):
    """The five benchmarks' golds, answered as models write them. Where the graders differ is
    where a measured-vs-published gap comes from."""
    minerva = _golds(shared_data, "minerva_math")
    others = [g for name in ("math500", "olympiadbench", "amc23", "aime24") for g in _golds(shared_data, name)]

    e_notation = [g for g in minerva if E_NOTATION.match(g)]
    as_times_ten = [(f"{E_NOTATION.match(g)[1]}\\times 10^{{{int(E_NOTATION.match(g)[2])}}}", g) for g in e_notation]
    assert _tally(as_times_ten) == {
        "n": 58,
        "math-verify": 58,
        "empo-rules": 42,
        "only math-verify": 16,
        "only empo-rules": 0,
    }

    decimals = [g for g in minerva if re.fullmatch(r"-?\d+\.\d+", g.strip())]
    assert _tally([(g + "3", g) for g in decimals]) == {  # one extra digit: 1.63 for 1.6
        "n": 67,
        "math-verify": 0,
        "empo-rules": 67,
        "only math-verify": 0,
        "only empo-rules": 67,
    }

    fractions = [g for g in others if FRACTION.match(g)]
    as_decimals = [(f"{int(FRACTION.match(g)[1]) / int(FRACTION.match(g)[2]):.3f}", g) for g in fractions]
    assert _tally(as_decimals) == {
        "n": 47,
        "math-verify": 22,
        "empo-rules": 41,
        "only math-verify": 0,
        "only empo-rules": 19,
    }
    as_slash = [(f"{FRACTION.match(g)[1]}/{FRACTION.match(g)[2]}", g) for g in fractions]
    assert _tally(as_slash)["only math-verify"] == _tally(as_slash)["only empo-rules"] == 0

    texts = [g for g in others if g.startswith("\\text{")]
    assert _tally([(g[len("\\text{") : -1], g) for g in texts]) == {
        "n": 8,
        "math-verify": 8,
        "empo-rules": 8,
        "only math-verify": 0,
        "only empo-rules": 0,
    }

    tuples = [g for g in others if re.match(r"^[\[(].*,.*[\])]$", g)]
    with_left_right = [("\\left" + g[0] + g[1:-1] + "\\right" + g[-1], g) for g in tuples]
    assert _tally(with_left_right) == {
        "n": 23,
        "math-verify": 23,
        "empo-rules": 23,
        "only math-verify": 0,
        "only empo-rules": 0,
    }

    integers = [g for g in others if re.fullmatch(r"\d{2,}", g)]
    off_by_4_percent = [(str(round(int(g) * 1.04)), g) for g in integers if round(int(g) * 1.04) != int(g)]
    assert _tally(off_by_4_percent) == {
        "n": 432,
        "math-verify": 0,
        "empo-rules": 83,
        "only math-verify": 0,
        "only empo-rules": 83,
    }
