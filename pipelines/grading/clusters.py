"""Answers grouped into equivalence classes (the semantic clusters of EMPO's reward, maj@n)."""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.grading.extract import AUTHORS_RULE, normalize_answer
from pipelines.grading.pool import DEFAULT_TIMEOUT_SECONDS, GradingPool, pool_or_shared


def cluster_answers(
    answers: Sequence[str | None], pool: GradingPool | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> list[int | None]:
    """Equivalence classes of answers: a cluster id per answer (0, 1, ... by first appearance).

    Identical normalised strings share a cluster without any math-verify call; each new
    distinct answer is compared only with the existing clusters' representatives (their first
    member), in order, and joins the first equivalent one. None answers get None.
    """
    if pool is not None and pool.rule == AUTHORS_RULE:
        raise ValueError(f"a {AUTHORS_RULE!r} pool clusters with cluster_answers_authors (the authors' pair order)")
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
            with pool_or_shared(pool, timeout_seconds=timeout_seconds) as grader:
                verdicts = grader.equivalent_many(pairs)
            match = next((offset for offset, (same, _) in enumerate(verdicts) if same), None)
            if match is not None:
                assigned = start + match
                break
        if assigned is None:
            assigned = len(representatives)
            representatives.append(answer)  # type: ignore[arg-type]
        cluster_of_string[text] = assigned
    return [None if text is None else cluster_of_string[text] for text in normalised]


def cluster_answers_authors(
    answers: Sequence[str | None], pool: GradingPool | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> list[int | None]:
    """The authors' clusters (verl-empo/verl/utils/reward_score/empo/compute_metrics.py,
    `post_semantic_cluster` over `run_sequential_auto_verify`), cluster ids 0, 1, ... by first
    appearance; None answers (their "") get None, each its own cluster of one to them.

    Theirs: each answer joins the first cluster whose *first member* it matches, the first member
    in the prediction's place and the new answer in the gold's (`empo_rules.reward_equivalent`,
    not symmetric). They verify all (G+1)G/2 pairs of the group and its gold up front; here only
    the pairs the clustering reads are asked, each distinct pair of strings once, several at a
    time (as many as the pool has workers, in cluster order, stopping at the first match), and
    pairs whose verdict needs no parser (`empo_rules.reward_equivalent_certainly`) are decided
    here: the same clusters. A comparison past the pool's deadline counts as not equal.
    """
    from pipelines import empo_rules

    if pool is not None and pool.rule != AUTHORS_RULE:
        raise ValueError(f"the authors' clustering needs a pool with rule {AUTHORS_RULE!r}, not {pool.rule!r}")
    step = pool.size if pool is not None else 1
    verdicts: dict[tuple[str, str], bool] = {}

    def ask(pairs: list[tuple[str, str]]) -> None:
        with pool_or_shared(pool, AUTHORS_RULE, timeout_seconds) as grader:
            outcomes = grader.equivalent_many(pairs)
        verdicts.update((pair, same) for pair, (same, _) in zip(pairs, outcomes))

    ids: list[int | None] = [None] * len(answers)
    first_members: list[str] = []
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        keys = []
        for member in first_members:
            key = (member, answer)
            if key not in verdicts and empo_rules.reward_equivalent_certainly(*key):
                verdicts[key] = True
            keys.append(key)
            if verdicts.get(key):
                break  # clusters after a certain match are never read
        assigned = None
        for position, key in enumerate(keys):
            if key not in verdicts:
                batch = list(dict.fromkeys(k for k in keys[position:] if k not in verdicts))[:step]
                ask(batch)
            if verdicts[key]:
                assigned = position
                break
        if assigned is None:
            assigned = len(first_members)
            first_members.append(answer)
        ids[index] = assigned
    return ids


def majority_cluster(cluster_ids: Sequence[int | None]) -> int | None:
    """The largest cluster of `cluster_answers` output; ties go to the cluster seen first.
    Missing answers (None) never form the majority; None if no answer at all."""
    sizes: dict[int, int] = {}
    for cluster_id in cluster_ids:
        if cluster_id is not None:
            sizes[cluster_id] = sizes.get(cluster_id, 0) + 1
    return max(sizes, key=lambda cid: (sizes[cid], -cid)) if sizes else None
