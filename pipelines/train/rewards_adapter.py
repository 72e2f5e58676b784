"""TRL adapter of the reward core: a reward function over a batch of groups.

TRL calls a reward function with this process's completions; each prompt's `num_generations`
completions are consecutive in the *global* batch, but with several processes a group can be
split across ranks. Group rewards (EMPO, majority) need the whole group, so the adapter gathers
completions from every rank, each rank scores its share of the groups (a semantic judge's
forward passes are not repeated on every rank), the scores are gathered, and each rank returns
its slice. Per-batch diagnostics go to TRL's `log_metric`, hence to MLflow. The token-distribution
rewards also read the `token_stats` column (`pipelines.train.token_stats.TokenStatsTrainer`
adds it), gathered with the texts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines import grading
from pipelines.rewards import EQUIVALENCE_RULES, REWARDS, TOKEN_REWARDS, group_metrics, score_group

LOG = logging.getLogger(__name__)


def completion_text(completion: Any) -> str:
    """Text of a completion: a plain string, or the last message of a conversational one."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def _distributed() -> Any:
    """torch.distributed when several ranks run, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # the core itself never needs torch
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return dist


def gather_across_ranks(local: list[Any]) -> tuple[list[Any], int]:
    """All ranks' items in rank order, and where this rank's items start."""
    dist = _distributed()
    if dist is None:
        return local, 0
    gathered: list[list[Any]] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, local)
    offset = sum(len(part) for part in gathered[: dist.get_rank()])
    return [item for part in gathered for item in part], offset


def map_shared(items: Sequence[Any], function: Any) -> list[Any]:
    """`function` over `items`, each rank computing every world-size-th item, results gathered
    (in order, the same list on every rank)."""
    dist = _distributed()
    if dist is None:
        return [function(item) for item in items]
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = [(index, function(items[index])) for index in range(rank, len(items), world)]
    gathered: list[list[Any]] = [None] * world  # type: ignore[list-item]
    dist.all_gather_object(gathered, mine)
    results: list[Any] = [None] * len(items)
    for part in gathered:
        for index, result in part:
            results[index] = result
    return results


class GroupRewardFunction:
    """Callable TRL reward function for one training method."""

    def __init__(
        self,
        method: str,
        reward: str,
        num_generations: int,
        empty_policy: str = "singleton",
        entropy_filter: Sequence[float] | None = None,
        seed: int = 0,
        grading_workers: int = 1,
        grading_timeout: float = grading.DEFAULT_TIMEOUT_SECONDS,
        judge: Any = None,
        equivalence: str = "math",
    ):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}")
        if judge is None and equivalence not in EQUIVALENCE_RULES:
            raise ValueError(f"equivalence {equivalence!r} needs a semantic judge or is unknown")
        self.__name__ = f"{method}_{reward}"  # TRL names logged reward columns after it
        self.reward = reward
        self.num_generations = num_generations
        self.empty_policy = empty_policy
        self.entropy_filter = tuple(entropy_filter) if entropy_filter else None
        self.seed = seed
        # the judge decides equivalence itself; its group diagnostics grade with math-verify
        self.equivalence = "math" if judge is not None else equivalence
        self._grading = (grading_workers, grading_timeout)
        self.pool = grading.GradingPool(
            workers=grading_workers, timeout_seconds=grading_timeout, rule=EQUIVALENCE_RULES[self.equivalence]
        )
        self._math_pool: grading.GradingPool | None = None
        self.judge = judge  # the semantic judge (equivalence backend `judge`), or None

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        log_metric=None,
        reward_model: list[Mapping[str, Any]] | None = None,
        extra_info: list[Mapping[str, Any]] | None = None,
        token_stats: list[Any] | None = None,
        **_: Any,
    ) -> list[float | None]:
        golds = [None if rm is None else rm.get("ground_truth") for rm in (reward_model or [None] * len(prompts))]
        questions = [None if info is None else info.get("question") for info in (extra_info or [None] * len(prompts))]
        if self.reward in TOKEN_REWARDS and token_stats is None:
            raise ValueError(
                f"reward {self.reward!r} needs the policy's token statistics: train with "
                "pipelines.train.token_stats.TokenStatsTrainer"
            )
        stats = token_stats or [None] * len(prompts)
        local = [
            (json.dumps(p, sort_keys=True, default=str), completion_text(c), g, q, t)
            for p, c, g, q, t in zip(prompts, completions, golds, questions, stats)
        ]
        everything, offset = gather_across_ranks(local)
        if len(everything) % self.num_generations:
            raise ValueError(f"{len(everything)} completions are not whole groups of {self.num_generations}")
        groups = [
            everything[start : start + self.num_generations]
            for start in range(0, len(everything), self.num_generations)
        ]
        for group in groups:
            if len({prompt for prompt, *_ in group}) != 1:
                raise ValueError(
                    "a group's completions do not share one prompt: the batch layout is not "
                    "num_generations consecutive completions per prompt"
                )
        scores = map_shared(groups, self._score)
        rewards: list[float | None] = [reward for score in scores for reward in score.rewards]
        if log_metric is not None:
            for name, value in group_metrics(scores).items():
                log_metric(name, value)
        return rewards[offset : offset + len(local)]

    def _score(self, group: Sequence[tuple[str, str, str | None, str | None, Any]]) -> Any:
        stats = [row[4] for row in group] if self.reward in TOKEN_REWARDS else None
        return score_group(
            [row[1] for row in group],
            self.reward,
            gold=group[0][2],
            empty_policy=self.empty_policy,
            entropy_filter=self.entropy_filter,
            seed=self.seed,
            pool=self.pool,
            judge=self.judge,
            question=group[0][3],
            token_stats=stats,
            equivalence=self.equivalence,
        )

    @property
    def math_pool(self) -> grading.GradingPool:
        """A math-verify pool (held-out validation grades with math-verify whatever the reward's
        equivalence): the reward's own pool where it is one, else one of the same size."""
        if self.pool.rule == "math-verify":
            return self.pool
        if self._math_pool is None:
            workers, timeout = self._grading
            self._math_pool = grading.GradingPool(workers=workers, timeout_seconds=timeout)
        return self._math_pool

    def close(self) -> None:
        self.pool.close()
        if self._math_pool is not None:
            self._math_pool.close()
