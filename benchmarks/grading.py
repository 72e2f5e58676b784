"""Grading throughput: one process vs the GradingPool, measured in the same run.

500 MATH500-style responses (a few hundred characters of reasoning and a final \\boxed{}):
answers are the real MATH500 golds when ../shared/data/empo-math is present (else a built-in
list), one third copied, one third rewritten equivalently (spacing, \\dfrac, fraction <->
decimal), one third wrong. Both paths must agree item by item. Target: pool >= 1.6x on 2 cores.
    python benchmarks/grading.py [--items 500] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines import grading  # noqa: E402
from pipelines.grading import equivalence  # noqa: E402

MATH500 = (
    Path(os.environ.get("EMPO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "empo-math"))
    / "math500.parquet"
)
BUILTIN = [
    "\\frac{1}{2}",
    "3\\sqrt{2}",
    "\\left( 3, \\frac{\\pi}{2} \\right)",
    "12",
    "-4",
    "x^2+1",
    "\\frac{\\sqrt{3}}{2}",
    "0.25",
    "\\{1,2,3\\}",
    "2\\pi",
    "\\text{(C)}",
    "5",
    "(-\\infty, 2]",
    "\\dfrac{14}{3}",
    "1000",
    "3 + 2i",
    "\\frac{7}{8}",
    "45^\\circ",
    "y = 2x - 3",
    "81",
]
REASONING = (
    "Let us think step by step. First we rewrite the expression and collect like terms; "
    "substituting the given values and simplifying carefully, we check the boundary cases "
    "and verify the result against the constraints of the problem. "
)


def golds() -> list[str]:
    if MATH500.is_file():
        import pyarrow.parquet as pq

        return [row["reward_model"]["ground_truth"][0] for row in pq.read_table(MATH500).to_pylist()]
    return BUILTIN


def rewrite(answer: str, rng: random.Random) -> str:
    """An equivalent surface variant that defeats string equality."""
    if re.fullmatch(r"-?\d+", answer):
        return f"{answer}.0"
    match = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", answer)
    if match:
        return (
            str(int(match.group(1)) / int(match.group(2)))
            if rng.random() < 0.5
            else f"\\dfrac{{{match.group(1)}}}{{{match.group(2)}}}"
        )
    return answer.replace(",", ", ").replace("\\frac", "\\dfrac") + " "


def wrong(answer: str) -> str:
    return f"{answer}+1" if not re.fullmatch(r"-?\d+", answer) else str(int(answer) + 7)


def build(items: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pool = golds()
    responses, targets = [], []
    for index in range(items):
        gold = pool[index % len(pool)]
        kind = index % 3
        answer = gold if kind == 0 else rewrite(gold, rng) if kind == 1 else wrong(gold)
        responses.append(REASONING * rng.randint(1, 3) + f"Therefore the answer is \\boxed{{{answer}}}.")
        targets.append(gold)
    return responses, targets


def grade_in_one_process(responses: list[str], targets: list[str]) -> list[bool]:
    verdicts = []
    for response, gold in zip(responses, targets):
        answer = grading.extract_answer(response)
        if answer is None:
            verdicts.append(False)
            continue
        fast = equivalence._fast_verdict(answer, gold)
        verdicts.append(fast if fast is not None else equivalence._verify_in_process(answer, gold))
    return verdicts


def grade_in_fresh_process(items: int) -> tuple[list[bool], float]:
    """The one-process path in a new interpreter, warmed up exactly as pool workers are, so
    neither side profits from caches the other filled."""
    import json
    import subprocess

    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import json, logging, sys, time; sys.path.insert(0, {root!r})\n"
        "logging.getLogger('math_verify').setLevel(logging.ERROR)\n"
        "import pipelines.grading_warmup\n"
        "from benchmarks.grading import build, grade_in_one_process\n"
        f"responses, targets = build({int(items)})\n"
        "started = time.perf_counter(); verdicts = grade_in_one_process(responses, targets)\n"
        "print(json.dumps([verdicts, time.perf_counter() - started]))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    verdicts, seconds = json.loads(output.strip().splitlines()[-1])
    return verdicts, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    responses, targets = build(args.items)
    equivalence._verify_in_process("1", "1")  # import math-verify outside the timed region

    single_times, pool_times = [], []
    for _ in range(args.repeats):  # medians; every repeat starts with cold parse caches
        single, seconds = grade_in_fresh_process(args.items)
        single_times.append(seconds)
        with grading.GradingPool(workers=args.workers) as pool:
            # Start every worker outside the timed region (a pair no shortcut decides reaches them).
            pool.equivalent_many([("x^2", "x^{2}")] * args.workers)
            started = time.perf_counter()
            pooled = [r.correct for r in pool.grade_many(responses, targets)]
            pool_times.append(time.perf_counter() - started)
            timeouts = pool.timeouts
    single_seconds, pool_seconds = statistics.median(single_times), statistics.median(pool_times)

    print(
        f"items: {args.items} ({'MATH500 golds' if MATH500.is_file() else 'built-in answers'}), "
        f"correct: {sum(single)}, grader timeouts in pool: {timeouts}"
    )
    print(
        f"one process:           {args.items / single_seconds:8.1f} items/s "
        f"(median {single_seconds:.2f} s of {args.repeats})"
    )
    print(
        f"pool of {args.workers} workers:     {args.items / pool_seconds:8.1f} items/s "
        f"(median {pool_seconds:.2f} s of {args.repeats})"
    )
    print(f"speed-up: {single_seconds / pool_seconds:.2f}x (target >= 1.6x on 2 cores)")
    if single != pooled:
        mismatches = sum(a != b for a, b in zip(single, pooled))
        print(f"MISMATCH: {mismatches} items graded differently")
        return 1
    print("verdicts identical in both paths")
    return 0


if __name__ == "__main__":
    sys.exit(main())
