"""EMPO reward speed: the reward core vs all-pairs verification, in the same run.

Builds G-completion groups from real answers (MATH500 golds when ../shared/data/empo-math is
present, else a built-in list): per group, copies of a "consensus" answer, equivalent rewrites
of it (fraction <-> decimal, spacing, \\dfrac), distractors, and responses without an answer.
  baseline: every ordered pair verified with fresh math-verify parses (its own LL parsing, which
            the core's SLL stage leaves alone), reward_i = #{j: a_j == a_i}/G
            (what the authors' release does), in this process;
  core:     `pipelines.rewards.empo_rewards` with ONE grading worker (no parallelism): distinct
            answers parsed once (cached across groups) and SLL-first (ANTLR's two-stage parse,
            the same trees: `grading.equivalence._sll_first_latex_parsing`), identical normalised strings
            merged without math-verify, new answers compared with cluster representatives only,
            and pairs whose verdict is certain decided without math-verify's `verify`
            (`grading.equivalence._fast_verdict`: integers, `n` against `n.0`, plain numbers far apart;
            `grading.equivalence._certainly_not_equivalent`: constants far apart, expressions that take
            other values at one point (`\\cot x` against `3`, `p - q` against `9`), intervals,
            tuples and sets against a single value, linear equations that are not multiples of
            one another), each tested against math-verify.
Checks that both give identical rewards. Target: >= 20x.
    python benchmarks/rewards.py [--groups 256] [--group-size 16] [--only math|authors]

Then (--only authors, or --authors, for this part alone) the `empo-rules` equivalence (the
authors' training reward) on the 400 groups pinned from their unmodified code
(tests/data/authors_rewards_dev.json and tests/data/authors_rewards_heldout.json):
  baseline: the authors' algorithm (`empo_metrics`, reward_type "entropy"), re-implemented on our
            copy of their comparison (`empo_rules.reward_equivalent` = their grade_single_answer):
            the whole (G+1)x(G+1) matrix of a group's answers and its gold, pair by pair, in this
            process, then their clustering;
  core:     `score_group(..., "empo", equivalence="empo-rules")` (rewards and the logged group
            diagnostics) with ONE grading worker: only the pairs the clustering reads, each
            distinct pair once, identical and mathd-equal strings decided without the chain.
Both must equal the authors' pinned rewards.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.grading import REASONING, golds, rewrite, wrong  # noqa: E402
from pipelines import grading  # noqa: E402
from pipelines.rewards import empo_rewards  # noqa: E402


def build_groups(groups: int, size: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    answers = golds()
    result = []
    for index in range(groups):
        consensus = answers[index % len(answers)]
        others = [answers[(index + k) % len(answers)] for k in (1, 2)]
        group = []
        for _ in range(size):
            roll = rng.random()
            if roll < 0.35:
                answer = consensus
            elif roll < 0.6:
                answer = rewrite(consensus, rng)
            elif roll < 0.8:
                answer = rng.choice([wrong(consensus), *others])
            else:
                answer = None
            tail = "I am not sure." if answer is None else f"So the answer is \\boxed{{{answer}}}."
            group.append(REASONING * rng.randint(1, 2) + tail)
        result.append(group)
    return result


def all_pairs_rewards(completions: list[str]) -> list[float]:
    from math_verify import parse, verify

    answers = [grading.extract_answer(c) for c in completions]
    size = len(completions)
    rewards = []
    for i, answer in enumerate(answers):
        if answer is None:
            rewards.append(1.0 / size)
            continue
        agree = 1
        for j, other in enumerate(answers):
            if j == i or other is None:
                continue
            gold = parse("\\boxed{" + grading.normalize_answer(other) + "}", parsing_timeout=None)
            mine = parse("\\boxed{" + grading.normalize_answer(answer) + "}", parsing_timeout=None)
            agree += bool(gold and mine and verify(gold, mine, timeout_seconds=None))
        rewards.append(agree / size)
    return rewards


def _as_the_authors_run_it() -> None:
    """This process computes the authors' chain as they do: no cache of normalised strings or
    parses, LaTeX read with ANTLR's LL prediction only (the SLL-first stage off), and each step
    retried on the "parts after the last =" even where those are the whole strings."""
    import contextlib

    from pipelines import empo_rules
    from pipelines.grading import equivalence

    for cached in (
        empo_rules.mathd_normalize,
        empo_rules.sympy_normalize,
        empo_rules._sympy_parse,
        empo_rules._math_verify_parse,
    ):
        cached.cache_clear()
    equivalence._sll_first_latex_parsing = contextlib.nullcontext
    empo_rules.SKIP_REPEATED_RETRIES = False


def authors_all_pairs_rewards(completions: list[str], gold: str) -> list[float]:
    """The authors' `empo_metrics(..., reward_type="entropy")`: every pair of the answers and the
    gold verified (`run_sequential_auto_verify`), then `post_semantic_cluster`."""
    from pipelines import empo_rules

    _as_the_authors_run_it()

    answers = [empo_rules.extract_answer(text) or "" for text in completions] + [gold]
    size = len(answers)
    matrix = [[False] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1, size):
            _as_the_authors_run_it()
            try:
                same = empo_rules.reward_equivalent(answers[i], answers[j])[0]
            except Exception:  # noqa: BLE001 - theirs: a failed pair is 0
                same = False
            matrix[i][j] = matrix[j][i] = same
    cluster_of, counts, first = [], [], []
    for i, answer in enumerate(answers[:-1]):
        joined = (
            next((c for c, member in enumerate(first) if answers[member] != "" and matrix[i][member]), None)
            if answer != ""
            else None
        )
        if joined is None:
            joined = len(counts)
            counts.append(0)
            first.append(i)
        counts[joined] += 1
        cluster_of.append(joined)
    return [counts[c] / (size - 1) for c in cluster_of]


def authors_main() -> int:
    import json
    import warnings

    from pipelines.rewards import EQUIVALENCE_RULES, score_group

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # sympy's, on some of the authors' parses
    data = Path(__file__).resolve().parent.parent / "tests" / "data"
    groups = [
        g
        for name in ("dev", "heldout")
        for g in json.loads((data / f"authors_rewards_{name}.json").read_text())["groups"]
    ]
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    authors_all_pairs_rewards(groups[0]["completions"][:2], groups[0]["gold"])  # first imports
    started = time.perf_counter()
    baseline = [authors_all_pairs_rewards(g["completions"], g["gold"]) for g in groups]
    baseline_seconds = time.perf_counter() - started
    with grading.GradingPool(workers=1, rule=EQUIVALENCE_RULES["empo-rules"]) as pool:
        pool.equivalent_many([("x^2", "y")])  # start the worker
        started = time.perf_counter()
        core = [
            score_group(g["completions"], "empo", gold=g["gold"], pool=pool, equivalence="empo-rules") for g in groups
        ]
        core_seconds = time.perf_counter() - started
    completions = sum(len(g["completions"]) for g in groups)
    print(f"{len(groups)} groups ({completions} completions, G = 4, 8 or 16), the authors' pinned rewards")
    print(
        f"authors' all-pairs algorithm: {baseline_seconds:8.2f} s ({completions / baseline_seconds:8.1f} completions/s)"
    )
    print(f"reward core (empo-rules):     {core_seconds:8.2f} s ({completions / core_seconds:8.1f} completions/s)")
    print(f"speed-up: {baseline_seconds / core_seconds:.1f}x (target >= 20x, one grading process)")
    pinned = [g["authors_entropy"] for g in groups]
    wrong = [g["index"] for g, a, b, c in zip(groups, baseline, core, pinned) if a != c or list(b.rewards) != c]
    if wrong:
        print(f"MISMATCH with the authors' pinned rewards in {len(wrong)} groups, e.g. {wrong[:5]}")
        return 1
    print("rewards identical to the authors' in every group (baseline and core)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument(
        "--only",
        choices=["math", "authors"],
        help="one part: math (the math equivalence vs all-pairs math-verify) or authors (empo-rules vs "
        "the authors' algorithm); default both",
    )
    parser.add_argument("--authors", action="store_true", help="the same as --only authors")
    args = parser.parse_args()
    only = "authors" if args.authors else args.only
    status = 0 if only == "authors" else math_main(args)
    if only != "math":
        print()
        status = max(status, authors_main())
    return status


def math_main(args: argparse.Namespace) -> int:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    groups = build_groups(args.groups, args.group_size)
    importlib.import_module("pipelines.grading_warmup")  # warm this process as the worker is warmed

    all_pairs_rewards(groups[0][:2])

    started = time.perf_counter()
    baseline = [all_pairs_rewards(group) for group in groups]
    baseline_seconds = time.perf_counter() - started

    with grading.GradingPool(workers=1) as pool:
        pool.equivalent_many([("x^2", "x^{2}")])  # start the worker (no shortcut decides this pair)
        started = time.perf_counter()
        core = [empo_rewards(group, pool=pool) for group in groups]
        core_seconds = time.perf_counter() - started

    completions = args.groups * args.group_size
    print(f"{args.groups} groups x {args.group_size} completions ({completions} completions)")
    print(f"all-pairs baseline: {baseline_seconds:8.2f} s ({completions / baseline_seconds:8.1f} completions/s)")
    print(f"reward core:        {core_seconds:8.2f} s ({completions / core_seconds:8.1f} completions/s)")
    print(f"speed-up: {baseline_seconds / core_seconds:.1f}x (target >= 20x, one grading process)")
    mismatched = [i for i, (a, b) in enumerate(zip(baseline, core)) if any(abs(x - y) > 1e-12 for x, y in zip(a, b))]
    if mismatched:
        print(
            f"MISMATCH in {len(mismatched)} groups, e.g. group {mismatched[0]}: "
            f"{baseline[mismatched[0]]} vs {core[mismatched[0]]}"
        )
        return 1
    print("rewards identical in every group")
    return 0


if __name__ == "__main__":
    sys.exit(main())
