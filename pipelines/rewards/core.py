"""Reward functions over one prompt's group of completions, and the group diagnostics.

Equivalence of two answers has three backends: `math` (the grading module: math-verify on our
extraction, for answers a parser can compare), `empo-rules` (the authors' training reward
literally: their extraction, their rule chain without the judge, their pair order and
clustering; `EQUIVALENCE_RULES` names the grading pool's rule for each) and `judge` (a verifier
model asked about each pair, for free-form answers; the natural-reasoning track). The judge is any object with
`equivalent_many([(question, reference, answer), ...]) -> [bool, ...]` and the counters
`pairs`, `forward_passes`, `seconds` (pipelines.judge.EquivalenceJudge); the core never
imports torch.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import fmean
from typing import Any, Protocol

from pipelines import free_form, grading


class SemanticJudge(Protocol):
    pairs: int
    forward_passes: int
    seconds: float

    def equivalent_many(self, triples: Sequence[tuple[str, str, str]]) -> list[bool]: ...


#: What an empty/unparseable answer gets under EMPO.
#: "singleton" = the authors' verl release: its own cluster, reward 1/G;
#: "zero" = their older TRL release: reward 0, and the whole group 0 when all answers differ.
EMPTY_POLICIES = ("singleton", "zero")

#: The grading-pool rule behind each parser-based training equivalence (`trainer.equivalence`;
#: `judge` needs no pool rule, the semantic judge decides).
EQUIVALENCE_RULES = {"math": "math-verify", "empo-rules": grading.AUTHORS_RULE}
EQUIVALENCES = (*EQUIVALENCE_RULES, "judge")


def _pool_rule(equivalence: str, pool: grading.GradingPool | None) -> str:
    """The pool rule `equivalence` needs; a pool that applies another rule is refused (it would
    grade with the wrong rule chain without a word)."""
    if equivalence not in EQUIVALENCE_RULES:
        raise ValueError(f"equivalence must be one of {tuple(EQUIVALENCE_RULES)}, got {equivalence!r}")
    rule = EQUIVALENCE_RULES[equivalence]
    if pool is not None and pool.rule != rule:
        raise ValueError(
            f"equivalence {equivalence!r} compares answers with the pool rule {rule!r}, but the pool "
            f"applies {pool.rule!r}: build it with GradingPool(rule={rule!r})"
        )
    return rule


def _equivalent_many(
    pairs: Sequence[tuple[str, str]], pool: grading.GradingPool | None, equivalence: str
) -> list[bool]:
    """(prediction, gold) verdicts under `equivalence`, timeouts as not equivalent."""
    with grading.pool_or_shared(pool, _pool_rule(equivalence, pool)) as grader:
        return [same for same, _ in grader.equivalent_many(pairs)]


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


def cluster_group(
    completions: Sequence[str], pool: grading.GradingPool | None = None, equivalence: str = "math"
) -> GroupClusters:
    """Extract each completion's final answer and cluster the answers by equivalence: `math` with
    our extraction and math-verify (`grading.cluster_answers`), `empo-rules` with the authors'
    extraction and clustering (`grading.cluster_answers_authors`)."""
    rule = _pool_rule(equivalence, pool)
    answers = [grading.WORKER_EXTRACTORS[rule](text) for text in completions]
    cluster = grading.cluster_answers_authors if equivalence == "empo-rules" else grading.cluster_answers
    return GroupClusters(answers, cluster(answers, pool=pool))


def judge_cluster_ids(answers: Sequence[str | None], question: str, judge: SemanticJudge) -> list[int | None]:
    """The authors' clustering (semantic_uncertainty.py, `get_semantic_ids`), batched.

    Their loop: each answer not yet in a cluster opens one, and every *later* answer the judge
    calls equivalent to it joins it (an answer already in an earlier cluster moves). They ask
    one pair per forward pass. The pairs of one representative do not depend on each other, so
    here they go to the judge together, and a pair of strings already asked in this group is
    not asked again: the same clusters (the judge is deterministic in its prompt), with as many
    judge calls as clusters. A missing answer (the authors' '') is never equivalent to anything:
    no cluster (None)."""
    ids: list[int | None] = [None if answer is None else -1 for answer in answers]
    asked: dict[tuple[str, str], bool] = {}
    next_id = 0
    for i, representative in enumerate(answers):
        if representative is None or ids[i] != -1:
            continue
        ids[i] = next_id
        later = [j for j in range(i + 1, len(answers)) if answers[j] is not None]
        new_pairs = list(
            dict.fromkeys((representative, answers[j]) for j in later if (representative, answers[j]) not in asked)
        )
        if new_pairs:
            verdicts = judge.equivalent_many([(question, a, b) for a, b in new_pairs])
            asked.update(zip(new_pairs, verdicts))
        for j in later:
            if asked[(representative, answers[j])]:  # type: ignore[index]
                ids[j] = next_id
        next_id += 1
    return ids


def judge_cluster_group(completions: Sequence[str], question: str, judge: SemanticJudge) -> GroupClusters:
    """Free-form answers (the authors' extraction) clustered by the semantic judge."""
    answers = [free_form.free_form_answer(text) for text in completions]
    return GroupClusters(answers, judge_cluster_ids(answers, question, judge))


#: The authors' free-form EMPO shaping (rewards.py, `empo_common`): no answer scores -0.5, and a
#: group whose largest cluster holds under this share of it (more than one cluster) scores 0.
FREE_FORM_EMPTY_REWARD = -0.5
FREE_FORM_MIN_MAJORITY_SHARE = 0.2


def empo_free_form_rewards(clusters: GroupClusters, question: str) -> list[float]:
    """EMPO on free-form answers as the authors shape it (`empo_common`): -0.5 without an answer;
    0 for an answer lifted from the question (`free_form.copies_question`); 0 for everyone when
    the group is too dispersed; else the share of the group in the answer's cluster."""
    size = len(clusters.answers)
    sizes = clusters.sizes
    singletons = sum(c is None for c in clusters.cluster_ids)  # the authors' '' are clusters of one
    largest = max(list(sizes.values()) + ([1] if singletons else [0]))
    dispersed = largest / size < FREE_FORM_MIN_MAJORITY_SHARE and len(sizes) + singletons > 1
    rewards = []
    for answer, cluster_id in zip(clusters.answers, clusters.cluster_ids):
        if answer is None:
            rewards.append(FREE_FORM_EMPTY_REWARD)
        elif free_form.copies_question(answer, question) or dispersed:
            rewards.append(0.0)
        else:
            rewards.append(sizes[cluster_id] / size)
    return rewards


def judge_supervised_rewards(
    answers: Sequence[str | None], gold: str, question: str, judge: SemanticJudge
) -> list[float]:
    """The labelled reference of the free-form track (rewards.py, `general_accuracy`): 1 if the
    judge calls the answer equivalent to the reference answer, -0.5 without an answer, else 0.
    Their call order is kept: the answer fills the prompt's "Ground Truth Answer" slot and the
    reference the "Student Answer" slot (`are_equivalent(prediction, gold_answer, ...)`)."""
    present = [i for i, answer in enumerate(answers) if answer is not None]
    verdicts = dict(zip(present, judge.equivalent_many([(question, answers[i], gold) for i in present])))
    return [
        FREE_FORM_EMPTY_REWARD if answer is None else (1.0 if verdicts[i] else 0.0) for i, answer in enumerate(answers)
    ]


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


def empo_rewards(
    completions: Sequence[str],
    empty_policy: str = "singleton",
    pool: grading.GradingPool | None = None,
    equivalence: str = "math",
) -> list[float]:
    """EMPO: the fraction of the group whose answer is equivalent to this completion's answer.
    With `equivalence="empo-rules"` (and the default singleton policy) what the authors'
    `empo_metrics(..., reward_type="entropy")` returns on the same completions."""
    if not completions:
        return []
    return _empo_from_clusters(cluster_group(completions, pool, equivalence), empty_policy)


def majority_rewards(
    completions: Sequence[str], pool: grading.GradingPool | None = None, equivalence: str = "math"
) -> list[float]:
    """TTRL: 1 for completions in the majority cluster, else 0 (no answer never wins)."""
    return _majority_from_clusters(cluster_group(completions, pool, equivalence))


def _majority_from_clusters(clusters: GroupClusters) -> list[float]:
    majority = clusters.majority
    return [1.0 if majority is not None and c == majority else 0.0 for c in clusters.cluster_ids]


def supervised_rewards(
    completions: Sequence[str], gold: str, pool: grading.GradingPool | None = None, equivalence: str = "math"
) -> list[float]:
    """The labelled reference: 1 if the completion's answer is equivalent to the gold. With
    `equivalence="empo-rules"` what the authors' `empo_metrics(..., reward_type="gt")` returns."""
    with grading.pool_or_shared(pool, _pool_rule(equivalence, pool)) as grader:
        results = grader.grade_many(list(completions), [gold] * len(completions))
    return [1.0 if r.correct else 0.0 for r in results]


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
class TokenStats:
    """One completion's response tokens under the policy that sampled it (the old policy, its
    logits divided by the sampling temperature), averaged over the tokens: padding out, the
    end-of-sequence token kept, as the authors' verl code masks (`response_mask`).

    The trainer computes these (torch); the rewards below only read them."""

    entropy_mean: float
    """mean_t H(p(. | y<t)): the next-token distribution's entropy (nats)."""
    logprob_mean: float
    """mean_t log p(y_t | y<t): the sampled tokens' log-probability."""
    self_certainty_mean: float | None
    """mean_t KL(U || p(. | y<t)) = logsumexp(z) - mean(z) - log V over the vocabulary V; None
    where the trainer did not compute it (no self-certainty reward)."""
    num_tokens: int


def token_entropy_rewards(stats: Sequence[TokenStats]) -> list[float | None]:
    """Minus the mean token entropy (RENT, satrams/rent-rl `verl/trainer/ppo/ray_trainer.py`
    `RayPPOTrainer.fit`: `entropys[i, :valid_response_length].mean() * -1.0`; EM-RL token level,
    chotkrin/EM_PT `emrl_token_manager.py` `EMRLTokenRewardManager.__call__`). None for a
    completion without tokens (unscorable)."""
    return [-s.entropy_mean if s.num_tokens else None for s in stats]


def self_certainty_rewards(stats: Sequence[TokenStats]) -> list[float | None]:
    """Mean self-certainty KL(U || p) (INTUITOR, sunblaze-ucb/Intuitor
    `verl-intuitor/verl/utils/torch_functional.py` `self_certainty_from_logits`, averaged per
    sequence in `ray_trainer.py` `compute_advantage`; theirs drops the constant -log V, which
    group normalisation cancels)."""
    if any(s.self_certainty_mean is None for s in stats):
        raise ValueError("the self-certainty reward needs TokenStats.self_certainty_mean")
    return [s.self_certainty_mean if s.num_tokens else None for s in stats]


def trajectory_likelihood_rewards(stats: Sequence[TokenStats]) -> list[float | None]:
    """Mean log-probability of the sampled tokens (EM-RL sequence level, chotkrin/EM_PT
    `emrl_sequence_manager.py` `EMRLSequenceRewardManager.__call__`: `old_log_probs[:valid_response_length].mean()`)."""
    return [s.logprob_mean if s.num_tokens else None for s in stats]


@dataclass(frozen=True)
class JudgeWork:
    """What the semantic judge did for one group: pairs asked, forward passes, seconds."""

    pairs: int = 0
    forward_passes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class GroupDiagnostics:
    """What trainers log per group; `majority_correct` needs a gold and is never a reward input."""

    semantic_entropy: float
    num_clusters: int
    majority_ratio: float
    no_answer_fraction: float
    majority_correct: bool | None
    judge: JudgeWork | None = None


def group_diagnostics(
    clusters: GroupClusters,
    gold: str | None = None,
    pool: grading.GradingPool | None = None,
    judge: SemanticJudge | None = None,
    question: str | None = None,
    equivalence: str = "math",
) -> GroupDiagnostics:
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
            if judge is not None:
                verdicts = judge.equivalent_many([(question or "", representative, gold)])[0]
            else:
                verdicts = _equivalent_many([(representative, gold)], pool, equivalence)[0]
            majority_correct = bool(verdicts)
    return GroupDiagnostics(
        semantic_entropy=abs(entropy),
        num_clusters=len(clusters.sizes),
        majority_ratio=majority_ratio,
        no_answer_fraction=sum(a is None for a in clusters.answers) / max(size, 1),
        majority_correct=majority_correct,
    )


def passes_entropy_filter(majority_ratio: float, low: float, high: float) -> bool:
    """Keep a prompt only if its largest cluster's share lies in [low, high] (authors: 0.3/1.0)."""
    return low <= majority_ratio <= high


@dataclass(frozen=True)
class RewardInputs:
    """What a reward may read about one group (label-free rewards never read `gold`)."""

    completions: Sequence[str]
    clusters: Any
    gold: str | None
    question: str | None
    empty_policy: str
    seed: int
    pool: grading.GradingPool | None
    judge: SemanticJudge | None
    token_stats: Sequence[TokenStats] | None = None
    equivalence: str = "math"


def _gold_of(group: RewardInputs) -> str:
    if group.gold is None:
        raise ValueError("the supervised reward needs the gold answer")
    return group.gold


def _empo_reward(group: RewardInputs) -> Sequence[float]:
    if group.judge is not None:  # free-form answers: the authors' empo_common shaping
        return empo_free_form_rewards(group.clusters, group.question)
    return _empo_from_clusters(group.clusters, group.empty_policy)


def _token_stats_of(group: RewardInputs) -> Sequence[TokenStats]:
    if group.token_stats is None:
        raise ValueError("this reward reads the policy's token statistics; the trainer must pass token_stats")
    if len(group.token_stats) != len(group.completions):
        raise ValueError(f"{len(group.token_stats)} token statistics for {len(group.completions)} completions")
    return group.token_stats


def _supervised_reward(group: RewardInputs) -> Sequence[float]:
    if group.judge is not None:  # free-form answers: the authors' general_accuracy
        return judge_supervised_rewards(group.clusters.answers, _gold_of(group), group.question, group.judge)
    return supervised_rewards(group.completions, _gold_of(group), group.pool, group.equivalence)


#: Every reward kind by its config name (`trainer.reward`; the schema's enum is tested against
#: these keys): a function of the group's completions, answer clusters and settings.
REWARDS: dict[str, Callable[[RewardInputs], Sequence[float | None]]] = {
    "empo": _empo_reward,
    "supervised": _supervised_reward,
    "majority": lambda group: _majority_from_clusters(group.clusters),
    "random": lambda group: random_rewards(group.completions, group.seed),
    "format": lambda group: format_rewards(group.completions),
    "token_entropy": lambda group: token_entropy_rewards(_token_stats_of(group)),
    "self_certainty": lambda group: self_certainty_rewards(_token_stats_of(group)),
    "trajectory_likelihood": lambda group: trajectory_likelihood_rewards(_token_stats_of(group)),
}

#: Rewards computed from the policy's token distribution (the trainer passes TokenStats).
TOKEN_REWARDS = frozenset({"token_entropy", "self_certainty", "trajectory_likelihood"})


@dataclass(frozen=True)
class GroupScore:
    rewards: list[float | None]
    diagnostics: GroupDiagnostics
    filtered: bool


def _judge_counters(judge: SemanticJudge) -> tuple[int, int, float]:
    return judge.pairs, judge.forward_passes, judge.seconds


def score_group(
    completions: Sequence[str],
    reward: str,
    gold: str | None = None,
    *,
    empty_policy: str = "singleton",
    entropy_filter: tuple[float, float] | None = None,
    seed: int = 0,
    pool: grading.GradingPool | None = None,
    judge: SemanticJudge | None = None,
    question: str | None = None,
    token_stats: Sequence[TokenStats] | None = None,
    equivalence: str = "math",
) -> GroupScore:
    """Rewards of one group for a reward kind, its diagnostics, and the entropy filter.

    A filtered group gets None rewards: trainers treat those completions as unscorable
    (no advantage, no gradient). Label-free rewards never read `gold`; it is used for the
    logged majority-vs-gold diagnostic and by the supervised reward only.

    With a `judge` (the `judge` equivalence backend), answers are free-form, clustered by the
    judge for the `question`, and EMPO and the supervised reward take the authors' free-form
    shape (`empo_free_form_rewards`, `judge_supervised_rewards`); the judge's work for this
    group is in `diagnostics.judge`.

    The token-distribution rewards (`TOKEN_REWARDS`) read `token_stats`, one per completion;
    answers are still clustered, for the same diagnostics and entropy filter as every reward.

    `equivalence` (`math` or `empo-rules`, `EQUIVALENCE_RULES`) says how answers are read and
    compared when there is no judge; the pool must apply its rule.
    """
    if judge is not None:
        if question is None:
            raise ValueError("the judge equivalence backend needs the group's question")
        before = _judge_counters(judge)
        clusters = judge_cluster_group(completions, question, judge)
    else:
        clusters = cluster_group(completions, pool, equivalence)
    if reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r} (one of {sorted(REWARDS)})")
    diagnostics = group_diagnostics(clusters, gold, pool, judge, question, equivalence)
    group = RewardInputs(
        completions, clusters, gold, question, empty_policy, seed, pool, judge, token_stats, equivalence
    )
    rewards: list[float | None] = list(REWARDS[reward](group))
    if judge is not None:
        after = _judge_counters(judge)
        diagnostics = _with_judge_work(
            diagnostics, JudgeWork(after[0] - before[0], after[1] - before[1], after[2] - before[2])
        )
    filtered = entropy_filter is not None and not passes_entropy_filter(diagnostics.majority_ratio, *entropy_filter)
    if filtered:
        rewards = [None] * len(completions)
    return GroupScore(rewards=rewards, diagnostics=diagnostics, filtered=filtered)


def _with_judge_work(diagnostics: GroupDiagnostics, work: JudgeWork) -> GroupDiagnostics:
    return replace(diagnostics, judge=work)


def group_metrics(scores: Sequence[GroupScore]) -> dict[str, float]:
    """The per-batch diagnostics every trainer logs (means over the batch's groups, filtered
    ones included); majority-vs-gold only over groups that had a gold."""
    if not scores:
        return {}
    diagnostics = [score.diagnostics for score in scores]
    group_means = [
        fmean(kept)
        for score in scores
        if not score.filtered
        for kept in [[reward for reward in score.rewards if reward is not None]]
        if kept
    ]
    metrics = {
        # the method's own reward, mean over the groups that trained: one name for every trainer
        **({"group/reward_mean": fmean(group_means)} if group_means else {}),
        "group/semantic_entropy": fmean(d.semantic_entropy for d in diagnostics),
        "group/num_clusters": fmean(d.num_clusters for d in diagnostics),
        "group/majority_ratio": fmean(d.majority_ratio for d in diagnostics),
        "group/no_answer_fraction": fmean(d.no_answer_fraction for d in diagnostics),
        "group/filtered_fraction": sum(score.filtered for score in scores) / len(scores),
    }
    judged = [d.majority_correct for d in diagnostics if d.majority_correct is not None]
    if judged:
        metrics["group/majority_vs_gold_accuracy"] = fmean(map(float, judged))
    work = [d.judge for d in diagnostics if d.judge is not None]
    if work:
        metrics["group/judge_pairs"] = fmean(w.pairs for w in work)
        metrics["group/judge_forward_passes"] = fmean(w.forward_passes for w in work)
        metrics["group/judge_seconds"] = fmean(w.seconds for w in work)
    return metrics
