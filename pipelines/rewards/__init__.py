"""The reward core every trainer shares (TRL here, verl on clusters): pure Python, no torch.

Label-free rewards look at a *group* (the G completions of one prompt):
- `empo_rewards`: each completion gets the fraction of the group whose final answer is
  equivalent to its own (semantic-entropy minimisation, EMPO);
- `majority_rewards`: 1 if the completion agrees with the group's majority answer (TTRL).
Baselines and the supervised reference look at one completion at a time:
`supervised_rewards` (matches the gold), `format_rewards` (has a boxed answer),
`random_rewards` ("spurious rewards"). Rewards from the policy's own token distribution read
`TokenStats` the trainer computes: `token_entropy_rewards` (RENT, EM-RL), `self_certainty_rewards`
(INTUITOR), `trajectory_likelihood_rewards` (EM-RL sequence level). `score_group` adds the group
diagnostics trainers log and applies the entropy filter.

Answers come from `pipelines.grading.extract_answer` and equivalence from the grading
module, so rewards share the grader's normalisation and its hard time bound. For free-form
answers (the natural-reasoning track) a semantic judge model decides equivalence instead:
`judge_cluster_ids` clusters with it, `empo_free_form_rewards` and `judge_supervised_rewards`
shape rewards as the authors' `empo_common` and `general_accuracy` do.
"""

from pipelines.rewards.core import (
    EMPTY_POLICIES,
    EQUIVALENCE_RULES,
    EQUIVALENCES,
    REWARDS,
    TOKEN_REWARDS,
    GroupDiagnostics,
    GroupScore,
    JudgeWork,
    SemanticJudge,
    TokenStats,
    cluster_group,
    empo_free_form_rewards,
    empo_rewards,
    format_rewards,
    group_diagnostics,
    group_metrics,
    judge_cluster_group,
    judge_cluster_ids,
    judge_supervised_rewards,
    majority_rewards,
    passes_entropy_filter,
    random_rewards,
    score_group,
    self_certainty_rewards,
    supervised_rewards,
    token_entropy_rewards,
    trajectory_likelihood_rewards,
)

__all__ = [
    "EMPTY_POLICIES",
    "EQUIVALENCE_RULES",
    "EQUIVALENCES",
    "REWARDS",
    "TOKEN_REWARDS",
    "GroupDiagnostics",
    "GroupScore",
    "JudgeWork",
    "SemanticJudge",
    "TokenStats",
    "self_certainty_rewards",
    "token_entropy_rewards",
    "trajectory_likelihood_rewards",
    "cluster_group",
    "empo_free_form_rewards",
    "empo_rewards",
    "format_rewards",
    "group_diagnostics",
    "group_metrics",
    "judge_cluster_group",
    "judge_cluster_ids",
    "judge_supervised_rewards",
    "majority_rewards",
    "passes_entropy_filter",
    "random_rewards",
    "score_group",
    "supervised_rewards",
]
