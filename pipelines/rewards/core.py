"""Reward functions over one prompt's group of completions, and the group diagnostics."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

from pipelines import grading

#: What an empty/unparseable answer gets under EMPO.
#: "singleton" = the authors' verl release: its own cluster, reward 1/G;
#: "zero" = their older TRL release: reward 0, and the whole group 0 when all answers differ.
EMPTY_POLICIES = ("singleton", "zero")


@dataclass(frozen=True)
class GroupClusters:
    """Answers of a group and their equivalence classes (None = no answer)."""

    answers: list[str | None]
    cluster_ids: list[int | None]

    @property
    def sizes(self) -> Counter:
        return Counter(c for c in self.cluster_ids if c is not None)

    @property
    def majority(self) -> int | None:
        """Largest cluster; ties go to the cluster seen first. None if no completion answered."""
        return grading.majority_cluster(self.cluster_ids)


def cluster_group(completions: Sequence[str], pool: grading.GradingPool | None = None) -> GroupClusters:
    """Extract each completion's final answer and cluster the answers by equivalence."""
    answers = [grading.extract_answer(text) for text in completions]
    return GroupClusters(answers, grading.cluster_answers(answers, pool=pool))


def _empo_from_clusters(clusters: GroupClusters, empty_policy: str) -> list[float]:
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}")
    size = len(clusters.answers)
    sizes = clusters.sizes
    if empty_policy == "zero" and (not sizes or max(sizes.values()) == 1):
        return [0.0] * size
    rewards = []
    for cluster_id in clusters.cluster_ids:
        if cluster_id is None:
            rewards.append(1.0 / size if empty_policy == "singleton" else 0.0)
        else:
            rewards.append(sizes[cluster_id] / size)
    return rewards


def empo_rewards(completions: Sequence[str], empty_policy: str = "singleton",
                 pool: grading.GradingPool | None = None) -> list[float]:
    """EMPO: the fraction of the group whose answer is equivalent to this completion's answer."""
    if not completions:
        return []
    return _empo_from_clusters(cluster_group(completions, pool), empty_policy)


def majority_rewards(completions: Sequence[str], pool: grading.GradingPool | None = None) -> list[float]:
    """TTRL: 1 for completions in the majority cluster, else 0 (no answer never wins)."""
    return _majority_from_clusters(cluster_group(completions, pool))


def _majority_from_clusters(clusters: GroupClusters) -> list[float]:
    majority = clusters.majority
    return [1.0 if majority is not None and c == majority else 0.0 for c in clusters.cluster_ids]


def supervised_rewards(completions: Sequence[str], gold: str,
                       pool: grading.GradingPool | None = None) -> list[float]:
    """The labelled reference: 1 if the completion's answer is equivalent to the gold."""
    if pool is None:
        return [1.0 if grading.grade(text, gold) else 0.0 for text in completions]
    return [1.0 if r.correct else 0.0 for r in pool.grade_many(list(completions), [gold] * len(completions))]


def format_rewards(completions: Sequence[str]) -> list[float]:
    """Format-only baseline: 1 if the completion ends with an extractable boxed answer."""
    return [0.0 if grading.extract_answer(text) is None else 1.0 for text in completions]


def random_rewards(completions: Sequence[str], seed: int, probability: float = 0.5) -> list[float]:
    """Random baseline ("spurious rewards"): Bernoulli(probability), reproducible from the
    seed and the completion text, whatever the batch order or process."""
    rewards = []
    for text in completions:
        # surrogatepass: a lone surrogate in model output hashes instead of raising (same bytes
        # as plain UTF-8 for every valid string, so rewards are unchanged)
        digest = hashlib.sha256(f"{seed}\0{text}".encode("utf-8", "surrogatepass")).digest()
        rewards.append(1.0 if int.from_bytes(digest[:8], "big") / 2**64 < probability else 0.0)
    return rewards


@dataclass(frozen=True)
class GroupDiagnostics:
    """What trainers log per group; `majority_correct` needs a gold and is never a reward input."""

    semantic_entropy: float
    num_clusters: int
    majority_ratio: float
    no_answer_fraction: float
    majority_correct: bool | None


def group_diagnostics(clusters: GroupClusters, gold: str | None = None,
                      pool: grading.GradingPool | None = None) -> GroupDiagnostics:
    """Semantic entropy (nats; each missing answer its own cluster), clusters, majority share."""
    size = len(clusters.answers)
    counts = list(clusters.sizes.values()) + [1] * sum(c is None for c in clusters.cluster_ids)
    entropy = -sum((n / size) * math.log(n / size) for n in counts) if size else 0.0
    majority = clusters.majority
    majority_ratio = clusters.sizes[majority] / size if majority is not None else 0.0
    majority_correct = None
    if gold is not None:
        if majority is None:
            majority_correct = False
        else:
            representative = clusters.answers[clusters.cluster_ids.index(majority)]
            verdicts = (pool.equivalent_many([(representative, gold)])[0][0] if pool is not None
                        else grading.is_equivalent(representative, gold))
            majority_correct = bool(verdicts)
    return GroupDiagnostics(semantic_entropy=abs(entropy), num_clusters=len(clusters.sizes),
                            majority_ratio=majority_ratio,
                            no_answer_fraction=sum(a is None for a in clusters.answers) / max(size, 1),
                            majority_correct=majority_correct)


def passes_entropy_filter(majority_ratio: float, low: float, high: float) -> bool:
    """Keep a prompt only if its largest cluster's share lies in [low, high] (authors: 0.3/1.0)."""
    return low <= majority_ratio <= high


#: The reward each training method optimises.
METHOD_REWARDS = {"empo": "empo", "ttrl": "majority", "grpo": "supervised", "gspo": "supervised",
                  "random": "random", "format": "format"}


@dataclass(frozen=True)
class GroupScore:
    rewards: list[float | None]
    diagnostics: GroupDiagnostics
    filtered: bool


def score_group(completions: Sequence[str], reward: str, gold: str | None = None, *,
                empty_policy: str = "singleton", entropy_filter: tuple[float, float] | None = None,
                seed: int = 0, pool: grading.GradingPool | None = None) -> GroupScore:
    """Rewards of one group for a reward kind, its diagnostics, and the entropy filter.

    A filtered group gets None rewards: trainers treat those completions as unscorable
    (no advantage, no gradient). Label-free rewards never read `gold`; it is used for the
    logged majority-vs-gold diagnostic and by the supervised reward only.
    """
    clusters = cluster_group(completions, pool)
    diagnostics = group_diagnostics(clusters, gold, pool)
    if reward == "empo":
        rewards: list[float | None] = list(_empo_from_clusters(clusters, empty_policy))
    elif reward == "majority":
        rewards = list(_majority_from_clusters(clusters))
    elif reward == "supervised":
        if gold is None:
            raise ValueError("the supervised reward needs the gold answer")
        rewards = list(supervised_rewards(completions, gold, pool))
    elif reward == "format":
        rewards = list(format_rewards(completions))
    elif reward == "random":
        rewards = list(random_rewards(completions, seed))
    else:
        raise ValueError(f"unknown reward {reward!r} (one of {sorted(set(METHOD_REWARDS.values()))})")
    filtered = entropy_filter is not None and not passes_entropy_filter(diagnostics.majority_ratio, *entropy_filter)
    if filtered:
        rewards = [None] * len(completions)
    return GroupScore(rewards=rewards, diagnostics=diagnostics, filtered=filtered)


def group_metrics(scores: Sequence[GroupScore]) -> dict[str, float]:
    """The per-batch diagnostics every trainer logs (means over the batch's groups, filtered
    ones included); majority-vs-gold only over groups that had a gold."""
    if not scores:
        return {}
    diagnostics = [score.diagnostics for score in scores]
    metrics = {
        "group/semantic_entropy": fmean(d.semantic_entropy for d in diagnostics),
        "group/num_clusters": fmean(d.num_clusters for d in diagnostics),
        "group/majority_ratio": fmean(d.majority_ratio for d in diagnostics),
        "group/no_answer_fraction": fmean(d.no_answer_fraction for d in diagnostics),
        "group/filtered_fraction": sum(score.filtered for score in scores) / len(scores),
    }
    judged = [d.majority_correct for d in diagnostics if d.majority_correct is not None]
    if judged:
        metrics["group/majority_vs_gold_accuracy"] = fmean(map(float, judged))
    return metrics
