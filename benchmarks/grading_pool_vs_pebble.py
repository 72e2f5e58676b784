"""Our GradingPool against a maintained pool, pebble's ProcessPool (per-task timeout, a killed
worker replaced), on the same items, in the same run; both must give identical verdicts.

Why it exists: issue 15 asked whether pebble could replace the hand-written pool without losing
the warmed workers' speed. pebble forks its workers from this process and warms each with an
initializer (pipelines.grading_warmup), so a worker killed at its deadline is replaced by one
that warms up again; ours forks from a fork server that was warmed once. Two workloads:
steady (MATH500-style responses, as benchmarks/grading.py builds them) and a short one with two
items that hit the 5 s deadline. pebble is not a dependency: `pip install pebble` first.
    python benchmarks/grading_pool_vs_pebble.py [--items 600] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.grading import build  # noqa: E402
from pipelines import grading  # noqa: E402
from pipelines.grading import equivalence  # noqa: E402

#: An answer whose check runs far past any deadline (big-integer factorial).
PATHOLOGICAL = "\\boxed{(10^{10^{10}})!}"


def warm_worker() -> None:
    """pebble's initializer: the warm-up our fork server runs once."""
    import pipelines.grading_warmup  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)


def verdict(answer: str | None, gold: str) -> bool:
    """What one of our workers decides for an extracted answer (math-verify rule)."""
    if answer is None:
        return False
    fast = equivalence._fast_verdict(answer, gold)
    return fast if fast is not None else equivalence._verify_in_process(answer, gold)


def with_pebble(responses: list[str], golds: list[str], workers: int, timeout: float) -> tuple[list[bool], float]:
    import pebble

    answers = [grading.extract_answer(response) for response in responses]
    started = time.perf_counter()
    with pebble.ProcessPool(max_workers=workers, initializer=warm_worker) as pool:
        futures = [pool.schedule(verdict, args=(a, g), timeout=timeout) for a, g in zip(answers, golds)]
        verdicts = []
        for future in futures:
            try:
                verdicts.append(bool(future.result()))
            except (FutureTimeout, Exception):  # a timeout or a worker error is a wrong answer, as in ours
                verdicts.append(False)
    return verdicts, time.perf_counter() - started


def with_ours(responses: list[str], golds: list[str], workers: int, timeout: float) -> tuple[list[bool], float]:
    started = time.perf_counter()
    with grading.GradingPool(workers=workers, timeout_seconds=timeout) as pool:
        verdicts = [result.correct for result in pool.grade_many(responses, golds)]
    return verdicts, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import pebble  # noqa: F401
    except ImportError:
        print("pebble is not installed: pip install pebble", file=sys.stderr)
        return 2
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    responses, golds = build(args.items)
    workloads = {
        f"steady, {len(responses)} items": (responses, golds),
        "2 items past the 5 s deadline among 100": (
            responses[:50] + [PATHOLOGICAL] * 2 + responses[50:100],
            golds[:50] + ["1"] * 2 + golds[50:100],
        ),
    }
    for name, (items, targets) in workloads.items():
        ours, theirs = [], []
        for _ in range(args.repeats):
            mine, seconds = with_ours(items, targets, args.workers, grading.DEFAULT_TIMEOUT_SECONDS)
            other, other_seconds = with_pebble(items, targets, args.workers, grading.DEFAULT_TIMEOUT_SECONDS)
            if mine != other:
                print(f"{name}: verdicts differ on {sum(a != b for a, b in zip(mine, other))} items", file=sys.stderr)
                return 1
            ours.append(seconds)
            theirs.append(other_seconds)
        ratio = statistics.median(theirs) / statistics.median(ours)
        print(
            f"{name}, {args.workers} workers, pool start included (median of {args.repeats}): "
            f"GradingPool {statistics.median(ours):.2f} s, pebble {statistics.median(theirs):.2f} s "
            f"({ratio:.2f}x), identical verdicts"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
