"""Totality of the grader: no input string raises out of its entry points (issue "No silent
wrong results", item 3), and the regressions that motivated it (integers of 4,301+ digits,
e-notation with huge exponents).

Property tests draw random text and adversarial LaTeX fragments (unbalanced braces, boxes,
fractions, huge digit strings, e-notation with huge exponents, unicode, NUL, lone surrogates)
and check that each function returns what its signature promises. They are derandomized
(the same examples every run: no flaky CI) and share one warm GradingPool, so that no example
pays for starting a worker.
"""

from __future__ import annotations

import inspect
import math
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import grading
from pipelines.grading import equivalence
from pipelines.grading import pool as grading_pool
from pipelines.rewards import score_group

#: The pool's per-item deadline here: an adversarial item that sends math-verify into a long
#: computation costs at most this (the hard bound itself is tested in test_grading.py).
TIMEOUT = 1.0

HUGE_INTEGER = "9" * 5000  # over Python's 4,300-digit int()/str() limit
HUGE_EXPONENT = "1e" + "7" * 5000  # e-notation whose exponent is over that limit

FRAGMENTS = [
    "\\boxed{",
    "\\boxed",
    "\\boxed ",
    "\\fbox{",
    "{",
    "}",
    "\\{",
    "\\}",
    "{{",
    "}}",
    "\\frac{",
    "\\frac",
    "\\dfrac",
    "\\sqrt{",
    "\\sqrt",
    "^",
    "_",
    "^{",
    "$",
    "$$",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "\\left(",
    "\\right)",
    "(",
    ")",
    "[",
    "]",
    ",",
    ", ",
    ".",
    "...",
    " ",
    "\\,",
    "{,}",
    "\\ ",
    "~",
    "\\;",
    "\\!",
    "\u2009",
    "\u202f",
    "\u00a0",
    "\\text{",
    "\\mbox{",
    "\\in",
    "=",
    "\\le",
    "+",
    "-",
    "*",
    "/",
    "\\%",
    "%",
    "!",
    "\\pi",
    "x",
    "y",
    "e",
    "E",
    "\\infty",
    "\\cup",
    "\\times",
    "\\cdot",
    "\\circ",
    "\\sin",
    "\\log_",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "&",
    "\\\\",
    "\\",
    "0",
    "1",
    "2",
    "10",
    "000",
    "123",
    "007",
    "-0",
    "3.14",
    ".5",
    "1,000",
    "1 000",
    "1\\,000",
    "4.5e33",
    "1E+0007",
    "2e-5",
    HUGE_INTEGER,
    "0" * 4400 + "1",
    HUGE_EXPONENT,
    "4.5e-" + "3" * 4400,
    "\u00e9",
    "\u4e2d",
    "\U0001d465",
    "\u200b",
    "\x00",
    "\ud800",
    "\udfff",
    "\n",
    "\t",
    "\r",
]

adversarial = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=10).map("".join)
#: Random text, adversarial fragments, and a boxed answer of either inside prose.
texts = st.one_of(
    st.text(max_size=40),
    adversarial,
    st.tuples(st.text(max_size=10), adversarial).map(lambda t: f"{t[0]} \\boxed{{{t[1]}}}."),
)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)
CHEAP = settings(PROPERTY, max_examples=400)


@pytest.fixture(scope="module")
def pool():
    with grading.GradingPool(workers=2, timeout_seconds=TIMEOUT) as shared:
        shared.equivalent_many([("0.5", "\\frac{1}{2}"), ("x+1", "1+x")])  # start and warm both workers
        yield shared


def _valid_clusters(answers, ids) -> None:
    assert len(ids) == len(answers)
    seen = -1
    for answer, cluster in zip(answers, ids):
        assert (cluster is None) == (answer is None)
        if cluster is not None:
            assert isinstance(cluster, int) and 0 <= cluster <= seen + 1  # numbered by first appearance
            seen = max(seen, cluster)
    normalised = {}
    for answer, cluster in zip(answers, ids):
        if answer is not None:
            assert normalised.setdefault(grading.normalize_answer(answer), cluster) == cluster


# --- in-process pieces: cheap, many examples ---------------------------------------------------


@CHEAP
@given(texts)
def test_extraction_and_normalisation_are_total(text):
    extracted = grading.extract_answer(text)
    assert extracted is None or (isinstance(extracted, str) and extracted in text)
    assert isinstance(grading.normalize_answer(text), str)


@CHEAP
@given(texts, texts)
def test_fast_verdict_is_total(prediction, gold):
    assert equivalence._fast_verdict(prediction, gold) in (True, False, None)
    assert equivalence._fast_verdict(prediction, prediction) is True


def _integer(sign: bool, zeros: int, length: int, seed: int) -> str:
    rng = random.Random(seed)
    digits = rng.choice("123456789") + "".join(rng.choices("0123456789", k=length - 1))
    return ("-" if sign else "") + "0" * zeros + digits


#: Integer strings up to 6,000 digits (Python's int() refuses over 4,300), nonzero.
integers = st.builds(
    _integer,
    st.booleans(),
    st.integers(0, 3),
    st.one_of(st.integers(1, 30), st.integers(4290, 6000)),
    st.integers(0, 2**32),
)


@CHEAP
@given(integers, st.integers(0, 9))
def test_integers_of_any_length_compare_without_int(number, digit):
    """Equal up to leading zeros, different when one digit changes or the sign flips, at any length."""
    sign = "-" if number.startswith("-") else ""
    body = number.lstrip("-")
    assert equivalence._fast_verdict(sign + "000" + body, number) is True
    changed = number[:-1] + str(digit)
    assert equivalence._fast_verdict(changed, number) is (changed == number)
    assert equivalence._fast_verdict("-" + body, body) is False


# --- through the workers: one shared warm pool -------------------------------------------------


@PROPERTY
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=4))
def test_pool_is_total(pool, pairs):
    responses = [r for r, _ in pairs]
    golds = [g for _, g in pairs]
    for result, response in zip(pool.grade_many(responses, golds), responses):
        assert isinstance(result, grading.GradeResult)
        assert isinstance(result.correct, bool) and isinstance(result.timed_out, bool)
        assert result.extracted == grading.extract_answer(response)
        assert not (result.correct and result.timed_out)
    verdicts = pool.equivalent_many(pairs)
    assert len(verdicts) == len(pairs)
    assert all(isinstance(v, bool) and isinstance(t, bool) for v, t in verdicts)


@PROPERTY
@given(st.lists(st.one_of(st.none(), texts), max_size=6))
def test_cluster_answers_is_total(pool, answers):
    _valid_clusters(answers, grading.cluster_answers(answers, pool=pool))


@settings(PROPERTY, max_examples=60)
@given(
    st.lists(texts, min_size=1, max_size=5),
    texts,
    st.sampled_from(["empo", "majority", "supervised", "format"]),
    st.sampled_from(["singleton", "zero"]),
    st.sampled_from([None, (0.3, 1.0)]),
)
def test_score_group_is_total(pool, completions, gold, reward, empty_policy, entropy_filter):
    score = score_group(completions, reward, gold, empty_policy=empty_policy, entropy_filter=entropy_filter, pool=pool)
    assert len(score.rewards) == len(completions)
    assert all(r is None or (isinstance(r, float) and 0.0 <= r <= 1.0) for r in score.rewards)
    assert all(r is None for r in score.rewards) == score.filtered
    diagnostics = score.diagnostics
    assert math.isfinite(diagnostics.semantic_entropy) and 0.0 <= diagnostics.majority_ratio <= 1.0
    assert isinstance(diagnostics.majority_correct, bool)


@settings(PROPERTY, max_examples=40)
@given(texts, texts)
def test_module_level_functions_are_total(response, gold):
    """grade/grade_detailed/is_equivalent/cluster_answers without a pool use the module's own."""
    assert isinstance(grading.grade(response, gold, timeout_seconds=TIMEOUT), bool)
    detailed = grading.grade_detailed(response, gold, timeout_seconds=TIMEOUT)
    assert isinstance(detailed.correct, bool)
    assert isinstance(grading.is_equivalent(response, gold, timeout_seconds=TIMEOUT), bool)
    answers = [response, gold, None, response]
    ids = grading.cluster_answers(answers, timeout_seconds=TIMEOUT)
    _valid_clusters(answers, ids)
    assert ids[0] == ids[3]


def test_random_reward_with_a_lone_surrogate():
    score = score_group(["\\boxed{1}\ud800", "\\boxed{2}"], "random", seed=3)
    assert len(score.rewards) == 2 and all(r in (0.0, 1.0) for r in score.rewards)
    assert (
        score_group(["\\boxed{1}", "\\boxed{2}"], "random", seed=3).rewards
        == score_group(["\\boxed{1}", "\\boxed{2}"], "random", seed=3).rewards
    )


# --- regressions -------------------------------------------------------------------------------


def test_the_process_wide_int_digit_limit_is_left_alone():
    from pipelines.grading import clusters, extract

    for module in (grading, clusters, equivalence, extract, grading_pool):
        assert "set_int_max_str_digits" not in inspect.getsource(module), module.__name__


def test_integers_over_4300_digits(pool):
    big = "9" * 5000
    assert grading.grade("\\boxed{" + big + "}", big) is True
    assert grading.grade("\\boxed{" + big + "}", "1") is False
    assert grading.grade("\\boxed{1}", big) is False
    assert grading.is_equivalent("-" + big, big) is False
    assert grading.is_equivalent("000" + big, big) is True
    assert grading.is_equivalent(big[:-1] + "8", big) is False
    assert equivalence._fast_verdict("-000", "0") is True
    results = pool.grade_many(["\\boxed{" + big + "}", "\\boxed{" + big + "8}"], [big, big])
    assert [r.correct for r in results] == [True, False]
    assert grading.cluster_answers([big, "0" + big, big + "0", None], pool=pool) == [0, 0, 1, None]


def test_e_notation_with_huge_exponents(pool):
    exponent = "7" * 5000
    assert grading.normalize_answer("1e" + exponent) == "1\\times 10^{" + exponent + "}"
    assert grading.normalize_answer("2.5E-000" + exponent) == "2.5\\times 10^{-" + exponent + "}"
    assert grading.normalize_answer("3e+0042") == "3\\times 10^{42}"
    assert grading.normalize_answer("3e-0") == "3\\times 10^{0}"
    started = time.perf_counter()
    assert grading.grade("\\boxed{1e" + exponent + "}", "1e" + exponent) is True  # identical: fast path
    assert grading.is_equivalent("1e" + exponent, "1", timeout_seconds=TIMEOUT) is False
    [result] = pool.grade_many(["\\boxed{1e" + exponent + "}"], ["2"])
    assert result.correct is False
    assert time.perf_counter() - started < 30


def test_a_worker_answers_whatever_an_input_raises(monkeypatch):
    """A BaseException (math-verify's TimeoutException is one) must not end a worker: a fresh
    worker that exits on its first input would read as a grader that cannot start (GradingError)."""
    import multiprocessing
    import threading

    class Escape(BaseException):
        pass

    def explode(prediction, gold):
        if prediction == "base":
            raise Escape("out of band")
        raise RecursionError("deep")

    monkeypatch.setattr(equivalence, "_verify_in_process", explode)
    parent, child = multiprocessing.Pipe()
    worker = threading.Thread(target=grading_pool._worker_loop, args=(child,), daemon=True)
    worker.start()
    parent.send(("math-verify", "base", "1"))
    assert parent.poll(10) and parent.recv() == (False, "Escape: out of band", "error")
    parent.send(("math-verify", "x", "1"))
    assert parent.poll(10) and parent.recv() == (False, "RecursionError: deep", "error")
    parent.send(None)
    worker.join(10)
    assert not worker.is_alive()


def test_every_module_the_grading_fork_server_preloads_imports():
    """The fork server swallows a preload's ImportError, so a warm-up that no longer imports
    would only make grading slower: each module must import in a fresh interpreter."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    for module in grading_pool.FORK_SERVER_PRELOAD:
        result = subprocess.run(
            [sys.executable, "-c", f"import {module}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (module, result.stderr[-2000:])
