"""The policy's token statistics of sampled completions, for the token-distribution rewards.

At each completion position t the statistic is that of the distribution that produced token t
(logits of position t - 1, divided by the sampling temperature, in float32): its entropy, the
sampled token's log-probability, and its self-certainty KL(U || p) = -mean_v log p_v - log V.
Means are over the completion's tokens (padding out, the end-of-sequence token kept), as the
authors' verl code does (`response_mask`); see `pipelines.rewards.TokenStats`. They come from
the weights that sampled the batch (before the update), as in RENT, EM-RL and INTUITOR.

`TokenStatsTrainer` (built by `token_stats_trainer_class`; TRL imported lazily) is TRL's
GRPOTrainer handing them to the reward functions as the `token_stats` column (TRL passes every
input column to them). Where TRL itself runs the old policy over the batch (its old-log-prob
pass, when a batch feeds several updates or vLLM's importance-sampling correction is on), the
entropy and log-probabilities are taken from that pass, asked for its entropies too: no second
forward. Otherwise, and always for self-certainty (which needs the log-normaliser TRL's fused
head does not return), `policy_token_statistics` runs one no-grad forward over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pipelines.rewards import TokenStats

#: Float32 values one chunk's (rows x completion length x vocabulary) logits may hold: the
#: rows per forward are chosen to stay under it (1 GiB; a 7B model's 3,072-token completions
#: over Qwen's 151,936-token vocabulary go one row at a time).
LOGITS_BUDGET = 2**28


def token_stats_from_tensors(entropy: Any, logprob: Any, mask: Any, self_certainty: Any = None) -> list[TokenStats]:
    """Per-row means of per-token tensors (rows x positions) over the mask's positions."""
    mask = mask.float()
    counts = mask.sum(-1)
    denominators = counts.clamp(min=1)

    def means(values: Any) -> list[float]:
        return ((values.float() * mask).sum(-1) / denominators).tolist()

    certainty = means(self_certainty) if self_certainty is not None else [None] * len(counts)
    return [
        TokenStats(
            entropy_mean=entropy_mean,
            logprob_mean=logprob_mean,
            self_certainty_mean=certainty_mean,
            num_tokens=int(count),
        )
        for entropy_mean, logprob_mean, certainty_mean, count in zip(
            means(entropy), means(logprob), certainty, counts.tolist()
        )
    ]


def policy_token_statistics(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    temperature: float,
    rows_per_chunk: int | None = None,
) -> list[TokenStats]:
    """Per completion: mean entropy, mean sampled-token log-prob and mean self-certainty."""
    import torch

    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(completion_ids)} completions")
    device = next(model.parameters()).device
    if rows_per_chunk is None:
        longest = max((len(ids) for ids in completion_ids), default=1) + 1
        rows_per_chunk = max(1, LOGITS_BUDGET // (longest * model.config.vocab_size))
    results: list[TokenStats] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(prompt_ids), rows_per_chunk):
                prompts = [list(ids) for ids in prompt_ids[start : start + rows_per_chunk]]
                completions = [list(ids) for ids in completion_ids[start : start + rows_per_chunk]]
                prompt_width = max(len(ids) for ids in prompts)
                completion_width = max(1, max(len(ids) for ids in completions))
                rows, masks, completion_masks = [], [], []
                for prompt, completion in zip(prompts, completions):
                    left = prompt_width - len(prompt)  # prompts left-padded, completions right-padded (as TRL)
                    right = completion_width - len(completion)
                    rows.append([pad_token_id] * left + prompt + completion + [pad_token_id] * right)
                    masks.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
                    completion_masks.append([1] * len(completion) + [0] * right)
                input_ids = torch.tensor(rows, device=device)
                attention_mask = torch.tensor(masks, device=device)
                mask = torch.tensor(completion_masks, device=device, dtype=torch.float32)
                logits = model(
                    input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=completion_width + 1
                ).logits
                # position t - 1 predicts completion token t: drop the last position's distribution
                logits = logits[:, :-1, :].float() / temperature
                log_probs = torch.log_softmax(logits, dim=-1)
                entropy = -(log_probs.exp() * log_probs).sum(-1)
                sampled = log_probs.gather(-1, input_ids[:, prompt_width:].unsqueeze(-1)).squeeze(-1)
                self_certainty = -log_probs.mean(-1) - math.log(log_probs.size(-1))
                results += token_stats_from_tensors(entropy, sampled, mask, self_certainty)
    finally:
        model.train(was_training)
    return results


def token_stats_trainer_class():
    """TRL's GRPOTrainer, handing each rollout batch's token statistics to the rewards."""
    import torch
    from trl import GRPOTrainer

    class TokenStatsTrainer(GRPOTrainer):
        """GRPOTrainer whose reward functions receive `token_stats` (one TokenStats per completion)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            #: Filled per rollout batch: the (log-probs, entropies) of TRL's own old-policy pass.
            self._captured_old_pass = None
            self._capture_armed = False
            #: Where each batch's statistics came from ("old-pass" or "own-pass"), for diagnostics.
            self.token_stats_sources: list[str] = []

        def _old_pass_runs(self) -> bool:
            """TRL's own condition for its old-log-prob pass (`_generate_and_score_completions`)."""
            generate_every = self.args.steps_per_generation * self.num_iterations
            return self.args.gradient_accumulation_steps % generate_every != 0 or bool(
                self.use_vllm and self.vllm_importance_sampling_correction
            )

        def _generate(self, prompts):
            generated = super()._generate(prompts)
            self._rollout_token_ids = (generated[0], generated[1])  # prompt and completion ids, per row
            self._captured_old_pass = None
            # self-certainty needs log Z, which the fused head of TRL's pass does not return
            reward_kinds = {getattr(function, "reward", None) for function in self.reward_funcs}
            self._capture_armed = self._old_pass_runs() and "self_certainty" not in reward_kinds
            return generated

        def _get_per_token_logps_and_entropies(
            self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
        ):
            if self._capture_armed and model is self.model and not torch.is_grad_enabled():
                self._capture_armed = False  # the batch's first no-grad pass of the policy: the old pass
                logps, entropies, aux = super()._get_per_token_logps_and_entropies(
                    model,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    batch_size=batch_size,
                    compute_entropy=True,
                    **kwargs,
                )
                self._captured_old_pass = (logps, entropies)
                return logps, entropies if compute_entropy else None, aux
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size=batch_size,
                compute_entropy=compute_entropy,
                **kwargs,
            )

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            prompt_ids, completion_ids = self._rollout_token_ids
            if [list(ids) for ids in completion_ids] != [list(ids) for ids in completion_ids_list]:
                raise RuntimeError("the rollout's token ids do not match the completions being scored")
            if self._captured_old_pass is not None:
                logps, entropies = self._captured_old_pass
                lengths = torch.tensor([len(ids) for ids in completion_ids], device=logps.device)
                mask = torch.arange(logps.size(1), device=logps.device)[None, :] < lengths[:, None]
                stats = token_stats_from_tensors(entropies, logps, mask)
                self.token_stats_sources.append("old-pass")
            else:
                stats = policy_token_statistics(
                    self.model, prompt_ids, completion_ids, self._tokenizer.pad_token_id, self.temperature
                )
                self.token_stats_sources.append("own-pass")
            inputs = [{**row, "token_stats": stat} for row, stat in zip(inputs, stats, strict=True)]
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    return TokenStatsTrainer
