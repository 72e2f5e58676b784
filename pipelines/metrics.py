"""Benchmark metrics from graded generations: pass@1, mean@n, maj@n and unbiased pass@k,
each with a bootstrap standard error and 95% interval.

Pure functions over plain records, so they are easy to test and reuse (the table, the
trainers' validation). Equivalence clustering for maj@n comes from the grading module, so the
majority answer is found with exactly the grader's notion of "the same answer".

Uncertainty. Questions are the unit that varies between benchmark draws, so the bootstrap
resamples questions with replacement; for mean@n and pass@k the n samples of each resampled
question are resampled too (nested: a question answered right c of n times contributes
Binomial(n, c/n) correct samples), which adds the sampling noise of the generations. maj@n
resamples questions only (its per-question verdict is kept). The standard error is the
standard deviation of the bootstrap replicates; the interval is their 2.5 and 97.5 percentiles.
A fixed seed makes every interval reproducible.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from math import comb
from typing import Any

import numpy as np

from pipelines.grading import majority_cluster

ClusterFunction = Callable[[Sequence[str | None]], list[int | None]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k draws without replacement is correct)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_is_correct(answers: Sequence[str | None], correct: Sequence[bool], cluster: ClusterFunction) -> bool:
    """Is the most frequent answer (by equivalence) correct? Ties go to the answer seen first.

    Responses without an answer never form the majority.
    """
    cluster_ids = cluster(answers)
    winner = majority_cluster(cluster_ids)
    if winner is None:
        return False
    return any(ok for cid, ok in zip(cluster_ids, correct) if cid == winner)


def group_by_item(records: Iterable[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    """Generation records (one per sample) grouped by benchmark item, samples in order."""
    items: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        items[int(record["index"])].append(record)
    for samples in items.values():
        samples.sort(key=lambda r: int(r["sample"]))
    return dict(sorted(items.items()))


def summarize(
    records: Iterable[Mapping[str, Any]],
    n: int,
    ks: Sequence[int],
    cluster: ClusterFunction | None = None,
    bootstrap: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Metrics (fractions in [0, 1]), their uncertainty, counts and per-question results of
    one (model, benchmark, protocol, grader) evaluation.

    `accuracy` is the mean correctness over all samples: pass@1 for greedy decoding and
    mean@n when sampling n > 1. maj@n needs `cluster` (equivalence classes of answers).
    `bootstrap` ({samples, seed}) adds `uncertainty` per metric; `per_item` (correct samples
    and majority verdict per question index) lets the table pair two evaluations.
    """
    items = group_by_item(records)
    if not items:
        raise ValueError("no generation records to summarize")
    incomplete = {index: len(s) for index, s in items.items() if len(s) != n}
    if incomplete:
        raise ValueError(
            f"{len(incomplete)} items do not have exactly n={n} samples (e.g. item {next(iter(incomplete))})"
        )
    per_item_correct = [sum(bool(r["correct"]) for r in samples) for samples in items.values()]
    all_records = [r for samples in items.values() for r in samples]
    metrics: dict[str, float] = {"accuracy": sum(per_item_correct) / (len(items) * n)}
    majority: list[bool] | None = None
    if n > 1:
        metrics[f"mean@{n}"] = metrics["accuracy"]
        for k in sorted(set(ks)):
            if k <= n:
                metrics[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in per_item_correct) / len(items)
        if cluster is not None:
            majority = [
                majority_is_correct([r["extracted"] for r in samples], [bool(r["correct"]) for r in samples], cluster)
                for samples in items.values()
            ]
            metrics[f"maj@{n}"] = sum(majority) / len(items)
    else:
        metrics["pass@1"] = metrics["accuracy"]
    counts = {
        "items": len(items),
        "samples": len(all_records),
        "correct": sum(per_item_correct),
        "no_answer": sum(r["extracted"] is None for r in all_records),
        "grader_timeouts": sum(bool(r.get("grader_timeout")) for r in all_records),
        "truncated": sum(r.get("finish_reason") == "length" for r in all_records),
        "mean_response_tokens": sum(int(r["response_tokens"]) for r in all_records) / len(all_records),
    }
    summary: dict[str, Any] = {
        "metrics": metrics,
        "counts": counts,
        "per_item": {"index": list(items), "correct": per_item_correct, "majority_correct": majority},
    }
    if bootstrap is not None:
        uncertainty = bootstrap_intervals(per_item_correct, n, ks, majority, **bootstrap)
        if n == 1:
            uncertainty["pass@1"] = uncertainty["accuracy"]
        else:
            uncertainty[f"mean@{n}"] = uncertainty["accuracy"]
        summary["uncertainty"] = uncertainty
    return summary


def _nested_counts(rng: np.random.Generator, correct: np.ndarray, n: int, picks: np.ndarray) -> np.ndarray:
    """Correct-sample counts of resampled questions, their samples resampled too."""
    chosen = correct[picks]
    return rng.binomial(n, chosen / n) if n > 1 else chosen


def bootstrap_intervals(
    per_item_correct: Sequence[int],
    n: int,
    ks: Sequence[int] = (),
    per_item_majority: Sequence[bool] | None = None,
    samples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Standard error and 95% interval of accuracy (mean@n), pass@k and maj@n (see the module
    docstring for the resampling), as fractions like the metrics themselves."""
    correct = np.asarray(per_item_correct, dtype=np.int64)
    items = len(correct)
    if items == 0:
        raise ValueError("no items to bootstrap")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, items, size=(samples, items))
    counts = _nested_counts(rng, correct, n, picks)
    replicates: dict[str, np.ndarray] = {"accuracy": counts.sum(axis=1) / (items * n)}
    if n > 1:
        for k in sorted(set(ks)):
            if k <= n:
                table = np.array([pass_at_k(n, c, k) for c in range(n + 1)])
                replicates[f"pass@{k}"] = table[counts].mean(axis=1)
        if per_item_majority is not None:
            majority = np.asarray(per_item_majority, dtype=np.float64)
            replicates[f"maj@{n}"] = majority[picks].mean(axis=1)
    method = f"bootstrap over questions ({samples} resamples, seed {seed})" + (
        ", samples nested within questions" if n > 1 else ""
    )
    return {
        name: {
            "se": float(values.std(ddof=1)),
            "ci95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "method": method
            if not name.startswith("maj@")
            else f"bootstrap over questions ({samples} resamples, seed {seed})",
        }
        for name, values in replicates.items()
    }


def paired_difference(
    correct_a: Mapping[int, int], correct_b: Mapping[int, int], n_a: int, n_b: int, samples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy difference a - b over the questions both answered (paired: the same resampled
    questions on both sides, samples nested within each), with its 95% interval and whether the
    interval excludes 0."""
    shared = sorted(set(correct_a) & set(correct_b))
    if not shared:
        raise ValueError("the two evaluations share no question")
    a = np.asarray([correct_a[i] for i in shared], dtype=np.int64)
    b = np.asarray([correct_b[i] for i in shared], dtype=np.int64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(shared), size=(samples, len(shared)))
    replicates = _nested_counts(rng, a, n_a, picks).sum(axis=1) / (len(shared) * n_a) - _nested_counts(
        rng, b, n_b, picks
    ).sum(axis=1) / (len(shared) * n_b)
    low, high = float(np.percentile(replicates, 2.5)), float(np.percentile(replicates, 97.5))
    return {
        "difference": float(a.sum() / (len(shared) * n_a) - b.sum() / (len(shared) * n_b)),
        "ci95": [low, high],
        "excludes_zero": low > 0 or high < 0,
        "items": len(shared),
    }
