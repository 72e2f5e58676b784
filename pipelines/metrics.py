"""Benchmark metrics from graded generations: pass@1, mean@n, maj@n and unbiased pass@k.

Pure functions over plain records, so they are easy to test and reuse (the table, the
trainers' validation). Equivalence clustering for maj@n comes from the grading module, so the
majority answer is found with exactly the grader's notion of "the same answer".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from math import comb
from typing import Any

from pipelines.grading import majority_cluster

ClusterFunction = Callable[[Sequence[str | None]], list[int | None]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k draws without replacement is correct)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_is_correct(answers: Sequence[str | None], correct: Sequence[bool],
                        cluster: ClusterFunction) -> bool:
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


def summarize(records: Iterable[Mapping[str, Any]], n: int, ks: Sequence[int],
              cluster: ClusterFunction | None = None) -> dict[str, Any]:
    """Metrics (fractions in [0, 1]) and counts of one (model, benchmark) evaluation.

    `accuracy` is the mean correctness over all samples: pass@1 for greedy decoding and
    mean@n when sampling n > 1. maj@n needs `cluster` (equivalence classes of answers).
    """
    items = group_by_item(records)
    if not items:
        raise ValueError("no generation records to summarize")
    incomplete = {index: len(s) for index, s in items.items() if len(s) != n}
    if incomplete:
        raise ValueError(f"{len(incomplete)} items do not have exactly n={n} samples "
                         f"(e.g. item {next(iter(incomplete))})")
    per_item_correct = [sum(bool(r["correct"]) for r in samples) for samples in items.values()]
    all_records = [r for samples in items.values() for r in samples]
    metrics: dict[str, float] = {"accuracy": sum(per_item_correct) / (len(items) * n)}
    if n > 1:
        metrics[f"mean@{n}"] = metrics["accuracy"]
        for k in sorted(set(ks)):
            if k <= n:
                metrics[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in per_item_correct) / len(items)
        if cluster is not None:
            majority = [
                majority_is_correct([r["extracted"] for r in samples],
                                    [bool(r["correct"]) for r in samples], cluster)
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
    return {"metrics": metrics, "counts": counts}
