"""Answers grouped into equivalence classes (the semantic clusters of EMPO's reward, maj@n)."""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.grading.extract import normalize_answer
from pipelines.grading.pool import DEFAULT_TIMEOUT_SECONDS, GradingPool, _shared, _shared_lock


def cluster_answers(
    answers: Sequence[str | None], pool: GradingPool | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> list[int | None]:
    """Equivalence classes of answers: a cluster id per answer (0, 1, ... by first appearance).

    Identical normalised strings share a cluster without any math-verify call; each new
    distinct answer is compared only with the existing clusters' representatives (their first
    member), in order, and joins the first equivalent one. None answers get None.
    """
    normalised = [None if a is None else normalize_answer(a) for a in answers]
    cluster_of_string: dict[str, int] = {}
    representatives: list[str] = []
    for text, answer in zip(normalised, answers):
        if text is None or text in cluster_of_string:
            continue
        assigned = None
        # Representatives in order, as many at a time as there are workers, stopping at the
        # first equivalent one: most new answers match an early (large) cluster.
        step = pool.size if pool is not None else 1
        for start in range(0, len(representatives), step):
            pairs = [(answer, rep) for rep in representatives[start : start + step]]
            if pool is not None:
                verdicts = pool.equivalent_many(pairs)
            else:
                with _shared_lock:
                    verdicts = _shared(timeout_seconds).equivalent_many(pairs)
            match = next((offset for offset, (same, _) in enumerate(verdicts) if same), None)
            if match is not None:
                assigned = start + match
                break
        if assigned is None:
            assigned = len(representatives)
            representatives.append(answer)  # type: ignore[arg-type]
        cluster_of_string[text] = assigned
    return [None if text is None else cluster_of_string[text] for text in normalised]


def majority_cluster(cluster_ids: Sequence[int | None]) -> int | None:
    """The largest cluster of `cluster_answers` output; ties go to the cluster seen first.
    Missing answers (None) never form the majority; None if no answer at all."""
    sizes: dict[int, int] = {}
    for cluster_id in cluster_ids:
        if cluster_id is not None:
            sizes[cluster_id] = sizes.get(cluster_id, 0) + 1
    return max(sizes, key=lambda cid: (sizes[cid], -cid)) if sizes else None
