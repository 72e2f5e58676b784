"""verl extension: group-level rewards (EMPO and its sister methods) inside verl's v1 trainer.

verl scores each completion on its own (its reward loop calls one function per completion), but
EMPO's reward needs the whole group: a completion earns the share of the group whose answer is
equivalent to its own. verl's v1 trainer lets a custom replay buffer decide which finished
groups become a training batch (`trainer.v1.sampler.custom_sampler`); that is where a whole
group is first visible, so `GroupRewardReplayBuffer`:

1. reads each newly finished group's responses from TransferQueue and decodes them (the same
   decoding as verl's reward manager);
2. scores the group with `pipelines.rewards.score_group` - the same core the TRL backend uses -
   and writes the rewards back as `rm_scores` (the reward on the last response token, verl's
   layout), which verl's GRPO advantage then reads;
3. applies the entropy filter: a group whose majority share is outside [low, high] is evicted
   and replaced by fresh prompts (verl's own evict-and-refill machinery, as for DAPO);
4. returns the group diagnostics (semantic entropy, clusters, majority share, filtered share,
   majority-vs-gold accuracy) with the batch, so verl logs them to MLflow beside its own.

The token-distribution rewards (`token_entropy`, `trajectory_likelihood`) read the policy's
per-token entropy and log-probabilities, which verl computes only after sampling, in its
old-policy pass (`PPOTrainer._compute_old_log_prob`, with `calculate_entropy` and the rollout
temperature). For them the buffer scores nothing at sampling time; it runs just before verl's
advantage step (`score_token_rewards`, installed on the trainer whose bound method verl passes as
`refill_fn`), reads `old_log_probs`, `entropy` and `response_mask` from TransferQueue, and writes
`rm_scores` that `_compute_advantage` then reads: no extra forward pass. Self-certainty needs each
token's log-normaliser, which verl's actor does not return: it is refused (TRL computes it).

`gold_accuracy_score` is the per-completion function verl's reward loop runs: 1 if the answer
matches the gold. Validation reports it (accuracy against the gold answers); for training
groups it is replaced by the method's reward in step 2 and kept only as a diagnostic.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping
from statistics import fmean
from typing import Any

import torch
import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils import tensordict_utils as tu

from pipelines import grading
from pipelines.rewards import (
    EQUIVALENCE_RULES,
    EQUIVALENCES,
    REWARDS,
    TOKEN_REWARDS,
    GroupScore,
    TokenStats,
    group_metrics,
    score_group,
)

LOG = logging.getLogger(__name__)

#: The name our filter registers as verl's group-filter metric (it only has to be non-empty).
GROUP_FILTER_METRIC = "pipelines_entropy_filter"

#: Token-distribution rewards verl can give: from the old-policy entropies and log-probabilities
#: it computes anyway. Self-certainty needs per-token log-normalisers its actor does not return.
VERL_TOKEN_REWARDS = frozenset({"token_entropy", "trajectory_likelihood"})

_score_lock = threading.Lock()
_score_pool: grading.GradingPool | None = None


def gold_accuracy_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Mapping[str, Any] | None = None, **_: Any
) -> dict[str, float]:
    """verl per-completion reward: 1.0 if the final answer matches the gold (our grader).

    verl calls this from several threads of a reward worker; one grading process per worker,
    used under a lock, keeps the hard time bound (math-verify's own timeouts need the main
    thread).
    """
    global _score_pool
    with _score_lock:
        if _score_pool is None:
            _score_pool = grading.GradingPool(workers=1)
        result = _score_pool.grade_many([solution_str], [str(ground_truth)])[0]
    correct = 1.0 if result.correct else 0.0
    return {"score": correct, "acc": correct, "has_answer": float(grading.extract_answer(solution_str) is not None)}


def _session_of(key: str) -> tuple[int, int]:
    """`{uid}_{session}_{index}` -> (session, index)."""
    _, session, index = key.rsplit("_", 2)
    return int(session), int(index)


def _uid_of(key: str) -> str:
    return key.rsplit("_", 2)[0]


def _sessions_of(keys: list[str]) -> tuple[list[int], dict[int, list[tuple[int, str]]], list[str]]:
    """A group's sessions in order, each session's (index, key) outputs in order, and all keys
    in that order."""
    sessions: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for key in keys:
        session, index = _session_of(key)
        sessions[session].append((index, key))
    order = sorted(sessions)
    for session in order:
        sessions[session].sort()
    return order, sessions, [key for session in order for _, key in sessions[session]]


def token_stats_of_response(entropy: torch.Tensor, log_probs: torch.Tensor, mask: torch.Tensor) -> TokenStats:
    """One response's statistics from verl's per-token old-policy entropy and log-probabilities
    (response positions), averaged over its `response_mask` (RENT: `entropys[i, :valid_response_length]`)."""
    mask = mask.float()
    count = float(mask.sum())
    denominator = max(count, 1.0)
    return TokenStats(
        entropy_mean=float((entropy.float() * mask).sum() / denominator),
        logprob_mean=float((log_probs.float() * mask).sum() / denominator),
        self_certainty_mean=None,
        num_tokens=int(count),
    )


class GroupRewardReplayBuffer(ReplayBuffer):
    """verl's sync replay buffer, scoring each finished group with our reward core.

    Configured through `trainer.v1.sampler.sampler_kwargs` (written by `verl_backend`): method,
    reward, empty_policy, entropy_filter, seed, num_generations, train_batch_size, tokenizer,
    grading_workers, grading_timeout, and for the free-form track equivalence (`judge`) and
    semantic_judge (the judge's settings; loaded on first use, in this process).
    """

    def __init__(
        self,
        trainer_mode: str,
        trainer_config: Any,
        max_off_policy_threshold: int | None,
        max_off_policy_strategy: str,
        sampler_kwargs: Mapping[str, Any],
        poll_interval: float = 2.0,
        refill_fn=None,
        tokenizer: Any = None,
        **_: Any,
    ):
        options = dict(sampler_kwargs or {})
        if trainer_mode != "sync":
            raise ValueError(f"GroupRewardReplayBuffer supports trainer.v1.trainer_mode=sync, not {trainer_mode!r}")
        missing = [key for key in ("reward", "train_batch_size") if key not in options]
        if missing:
            raise ValueError(f"trainer.v1.sampler.sampler_kwargs is missing {missing}")
        if options["reward"] not in REWARDS:
            raise ValueError(f"unknown reward {options['reward']!r}")
        token_reward = options["reward"] in TOKEN_REWARDS
        if token_reward and options["reward"] not in VERL_TOKEN_REWARDS:
            raise ValueError(
                f"reward {options['reward']!r} needs each token's log-normaliser, which verl's actor "
                "does not return; train it with the TRL backend"
            )
        if token_reward and options.get("entropy_filter"):
            raise ValueError(
                f"reward {options['reward']!r} is scored after sampling (from verl's old-policy pass), "
                "when groups can no longer be evicted: the entropy filter is not available with it"
            )
        if options.get("equivalence", "math") == "judge" and not options.get("semantic_judge"):
            raise ValueError("equivalence 'judge' needs trainer.v1.sampler.sampler_kwargs.semantic_judge")
        super().__init__(
            trainer_mode,
            trainer_config,
            max_off_policy_threshold,
            max_off_policy_strategy,
            sampler_kwargs,
            poll_interval=poll_interval,
            refill_fn=refill_fn,
            filter_groups_metric=GROUP_FILTER_METRIC,
            train_batch_size=int(options["train_batch_size"]),
            gen_batch_size=1,
            max_inflight_gen_batches=int(options.get("max_inflight_gen_batches", 1)),
        )
        self.reward = str(options["reward"])
        self.empty_policy = str(options.get("empty_policy", "singleton"))
        entropy_filter = options.get("entropy_filter")
        self.entropy_filter = tuple(float(x) for x in entropy_filter) if entropy_filter else None
        self.seed = int(options.get("seed", 0))
        self.num_generations = options.get("num_generations")
        self._tokenizer = tokenizer
        self._tokenizer_path = options.get("tokenizer")
        self.equivalence = str(options.get("equivalence", "math"))
        if self.equivalence not in EQUIVALENCES:
            raise ValueError(f"trainer.v1.sampler.sampler_kwargs.equivalence must be one of {EQUIVALENCES}")
        # the judge decides equivalence itself; its group diagnostics grade with math-verify
        self._pool_equivalence = "math" if self.equivalence == "judge" else self.equivalence
        self.pool = grading.GradingPool(
            workers=int(options.get("grading_workers", 1)),
            timeout_seconds=float(options.get("grading_timeout", grading.DEFAULT_TIMEOUT_SECONDS)),
            rule=EQUIVALENCE_RULES[self._pool_equivalence],
        )
        self._scored: list[tuple[GroupScore, dict[str, float]]] = []
        self._judge_settings = dict(options.get("semantic_judge") or {})
        self._judge = None
        if token_reward:
            self._score_before_advantage(refill_fn)

    def _score_before_advantage(self, refill_fn: Any) -> None:
        """Run `score_token_rewards` on each training batch just before verl's advantage step.

        verl builds the buffer from its trainer and passes the trainer's bound method
        `_add_prompts_to_generate` as `refill_fn`: that is the trainer whose `_compute_advantage`
        is wrapped (on the instance; the class is untouched).
        """
        trainer = getattr(refill_fn, "__self__", None)
        compute_advantage = getattr(trainer, "_compute_advantage", None)
        if compute_advantage is None:
            raise TypeError(
                f"reward {self.reward!r} is scored from verl's old-policy pass: the buffer must be built "
                "by verl's PPOTrainer (refill_fn its bound _add_prompts_to_generate)"
            )

        def compute_advantage_after_token_rewards(batch: Any, metrics: dict) -> Any:
            self.score_token_rewards(batch)
            metrics.update(self.pop_diagnostics())
            return compute_advantage(batch, metrics)

        trainer._compute_advantage = compute_advantage_after_token_rewards

    # -------------------------------------------------------------- what verl calls

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if not self._tokenizer_path:
                raise ValueError("trainer.v1.sampler.sampler_kwargs.tokenizer (the model path) is not set")
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
        return self._tokenizer

    @property
    def judge(self):
        """The semantic judge (equivalence `judge`), loaded once; None for math equivalence."""
        if self.equivalence != "judge":
            return None
        if self._judge is None:
            from pipelines.judge import make_equivalence_judge

            self._judge = make_equivalence_judge(self._judge_settings)
        return self._judge

    def _dapo_filtered_keys(self, partition_id: str) -> tuple[set[str], Counter]:
        """Score newly finished training groups; return those the entropy filter evicts."""
        if partition_id == "val" or self.reward in TOKEN_REWARDS:  # token rewards: scored before advantages
            return set(), Counter()
        finished = self.finished_keys[partition_id]
        cache = self._dapo_classification_cache[partition_id]
        for uid in cache.keys() - finished:
            del cache[uid]
        new = finished - cache.keys()
        if new:
            by_uid: dict[str, list[str]] = defaultdict(list)
            for key in self.partitions[partition_id]:
                uid = _uid_of(key)
                if uid in new:
                    by_uid[uid].append(key)
            for uid in new:
                keys = by_uid.get(uid)
                # A group with no trajectories is verl's failure case; leave it to verl.
                cache[uid] = self.score_and_write(partition_id, keys) if keys else None
        filtered = {uid: share for uid, share in cache.items() if share is not None}
        return set(filtered), Counter(filtered.values())

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id != "val":
            metrics.update(self.pop_diagnostics())
        return batch, metrics

    # -------------------------------------------------------------- our part

    def score_token_rewards(self, batch: Any) -> None:
        """Score a sampled training batch's groups from verl's old-policy pass (token rewards)."""
        by_uid: dict[str, list[str]] = defaultdict(list)
        for key in batch.keys:
            by_uid[_uid_of(key)].append(key)
        for keys in by_uid.values():
            self.score_and_write(batch.partition_id, keys, token_statistics=True)

    def score_and_write(self, partition_id: str, keys: list[str], token_statistics: bool = False) -> float | None:
        """Score one group, write its rewards to TransferQueue; the majority share if filtered.

        With `token_statistics`, each completion's TokenStats come from verl's old-policy pass."""
        order, sessions, all_keys = _sessions_of(keys)
        fields = ["responses", "reward_model", "extra_fields"] + (["extra_info"] if self.judge is not None else [])
        if token_statistics:
            fields += ["old_log_probs", "entropy", "response_mask"]
        data = tq.kv_batch_get(keys=all_keys, partition_id=partition_id, select_fields=fields)
        row_of = {key: position for position, key in enumerate(all_keys)}
        responses = list(data["responses"].unbind(0))
        extra_fields = list(data["extra_fields"])
        final = [row_of[sessions[session][-1][1]] for session in order]  # a session's last output
        stats = None
        if token_statistics:
            if "entropy" not in data.keys() or "old_log_probs" not in data.keys():
                raise RuntimeError(
                    f"reward {self.reward!r} reads verl's old-policy entropy and log-probabilities, "
                    "which this batch lacks (rollout_correction bypass mode skips that pass)"
                )
            entropy, log_probs, mask = (
                list(data[name].unbind(0)) for name in ("entropy", "old_log_probs", "response_mask")
            )
            stats = [token_stats_of_response(entropy[row], log_probs[row], mask[row]) for row in final]
        texts = [self.tokenizer.decode(responses[row].tolist(), skip_special_tokens=True) for row in final]
        gold = _ground_truth(list(data["reward_model"])[0])
        if self.num_generations and len(texts) != int(self.num_generations):
            LOG.warning(
                "group of %d completions (expected %s); scoring what finished", len(texts), self.num_generations
            )
        question = _unwrap(list(data["extra_info"])[0]).get("question") if self.judge is not None else None
        score = score_group(
            texts,
            self.reward,
            gold=gold,
            empty_policy=self.empty_policy,
            entropy_filter=self.entropy_filter,
            seed=self.seed,
            pool=self.pool,
            judge=self.judge,
            question=question,
            token_stats=stats,
            equivalence=self._pool_equivalence,
        )
        extras = {}
        gold_accuracy = [_unwrap(_unwrap(extra_fields[row]).get("reward_extra_info")).get("acc") for row in final]
        if all(value is not None for value in gold_accuracy):
            extras["group/rollout_gold_accuracy"] = fmean(float(v) for v in gold_accuracy)
        self._scored.append((score, extras))
        if score.filtered:
            return score.diagnostics.majority_ratio
        # Every output of a session carries the session's reward (as verl's agent loop does).
        write_keys, scores = [], []
        for session, reward in zip(order, score.rewards):
            for _, key in sessions[session]:
                length = int(responses[row_of[key]].shape[0])
                if length == 0:
                    continue
                value = torch.zeros(length, dtype=torch.float32)
                value[-1] = 0.0 if reward is None else float(reward)  # None: a response with no scored token
                write_keys.append(key)
                scores.append(value)
        if write_keys:
            tq.kv_batch_put(
                keys=write_keys,
                partition_id=partition_id,
                fields=tu.get_tensordict({"rm_scores": torch.nested.as_nested_tensor(scores, layout=torch.jagged)}),
            )
        return None

    def pop_diagnostics(self) -> dict[str, float]:
        """The TRL backend's group metrics (`group_metrics`) over the groups scored since the
        last batch, kept and filtered, plus what only verl has (per-completion gold accuracy)."""
        scored, self._scored = self._scored, []
        if not scored:
            return {}
        metrics = group_metrics([score for score, _ in scored])
        for name in sorted({name for _, extras in scored for name in extras}):
            metrics[name] = fmean(extras[name] for _, extras in scored if name in extras)
        metrics["group/scored_groups"] = float(len(scored))
        return metrics


def _unwrap(value: Any) -> Mapping[str, Any]:
    """A per-sample dict as TransferQueue returns it (plain, or wrapped in NonTensorData)."""
    value = getattr(value, "data", value)
    return value if isinstance(value, Mapping) else {}


def _ground_truth(reward_model: Any) -> str | None:
    truth = _unwrap(reward_model).get("ground_truth")
    return None if truth is None else str(truth)
