"""TRL adapter of the reward core: a reward function over a batch of groups.

TRL calls a reward function with this process's completions; each prompt's `num_generations`
completions are consecutive in the *global* batch, but with several processes a group can be
split across ranks. Group rewards (EMPO, majority) need the whole group, so the adapter gathers
completions from every rank, scores every group (the same result on each rank), and returns
this rank's slice. Per-batch diagnostics go to TRL's `log_metric`, hence to MLflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines import grading
from pipelines.rewards import METHOD_REWARDS, group_metrics, score_group

LOG = logging.getLogger(__name__)


def completion_text(completion: Any) -> str:
    """Text of a completion: a plain string, or the last message of a conversational one."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def gather_across_ranks(local: list[Any]) -> tuple[list[Any], int]:
    """All ranks' items in rank order, and where this rank's items start."""
    try:
        import torch.distributed as dist
    except ImportError:  # the core itself never needs torch
        return local, 0
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    gathered: list[list[Any]] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, local)
    offset = sum(len(part) for part in gathered[: dist.get_rank()])
    return [item for part in gathered for item in part], offset


class GroupRewardFunction:
    """Callable TRL reward function for one training method."""

    def __init__(self, method: str, reward: str, num_generations: int, empty_policy: str = "singleton",
                 entropy_filter: Sequence[float] | None = None, seed: int = 0,
                 grading_workers: int = 1, grading_timeout: float = grading.DEFAULT_TIMEOUT_SECONDS):
        if reward not in set(METHOD_REWARDS.values()):
            raise ValueError(f"unknown reward {reward!r}")
        self.__name__ = f"{method}_{reward}"  # TRL names logged reward columns after it
        self.reward = reward
        self.num_generations = num_generations
        self.empty_policy = empty_policy
        self.entropy_filter = tuple(entropy_filter) if entropy_filter else None
        self.seed = seed
        self.pool = grading.GradingPool(workers=grading_workers, timeout_seconds=grading_timeout)

    def __call__(self, prompts: list[Any], completions: list[Any], log_metric=None,
                 reward_model: list[Mapping[str, Any]] | None = None, **_: Any) -> list[float | None]:
        golds = [None if rm is None else rm.get("ground_truth") for rm in (reward_model or [None] * len(prompts))]
        local = [(json.dumps(p, sort_keys=True, default=str), completion_text(c), g)
                 for p, c, g in zip(prompts, completions, golds)]
        everything, offset = gather_across_ranks(local)
        if len(everything) % self.num_generations:
            raise ValueError(f"{len(everything)} completions are not whole groups of {self.num_generations}")
        rewards: list[float | None] = []
        scores = []
        for start in range(0, len(everything), self.num_generations):
            group = everything[start:start + self.num_generations]
            if len({prompt for prompt, _, _ in group}) != 1:
                raise ValueError("a group's completions do not share one prompt: the batch layout is not "
                                 "num_generations consecutive completions per prompt")
            score = score_group([text for _, text, _ in group], self.reward, gold=group[0][2],
                                empty_policy=self.empty_policy, entropy_filter=self.entropy_filter,
                                seed=self.seed, pool=self.pool)
            rewards.extend(score.rewards)
            scores.append(score)
        if log_metric is not None:
            for name, value in group_metrics(scores).items():
                log_metric(name, value)
        return rewards[offset:offset + len(local)]

    def close(self) -> None:
        self.pool.close()
