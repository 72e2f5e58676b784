"""Held-out accuracy during TRL training: the curve that shows whether agreement is correctness.

Every `every_steps` rollout steps (and once before the first update) the policy answers each
validation problem `samples` times at the rollout temperature and once greedily; the answers
are graded against the gold with the evaluation's grader (math-verify) and its maj@n
(`metrics.majority_is_correct`). Three numbers per point, logged beside the trainer's own:
`validation/mean_accuracy` (mean@n), `validation/majority_accuracy` (maj@n, the ceiling that
label-free rewards pull the sampled accuracy towards) and `validation/greedy_accuracy`.

The entries go into TRL's `log_history` (so checkpoints carry them and a resumed job's curves
stay whole) and to the job's MLflow run. Validation never changes training: it samples under
`torch.random.fork_rng` with its own seed, so the random state the trainer sees afterwards is
the one it left, and it restores the model's train/eval mode. It is therefore left out of the
checkpoint fingerprint, like verl's validation. Labels are read here only, never by a reward.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from pipelines import grading
from pipelines.metrics import majority_is_correct

LOG = logging.getLogger(__name__)

#: Metric names, in the order the curves show them.
VALIDATION_METRICS = ("validation/mean_accuracy", "validation/majority_accuracy", "validation/greedy_accuracy")


def score_answers(
    samples: Sequence[Sequence[str]], greedy: Sequence[str], golds: Sequence[str], pool: grading.GradingPool
) -> dict[str, float]:
    """mean@n, maj@n and greedy accuracy of responses (one list of n samples per problem)."""
    if pool.rule != "math-verify":
        raise ValueError(f"held-out validation grades with math-verify, not with a {pool.rule!r} pool")
    if not (len(samples) == len(greedy) == len(golds)) or not golds:
        raise ValueError(f"{len(samples)} sample lists, {len(greedy)} greedy responses and {len(golds)} golds")
    flat = [response for group in samples for response in group]
    flat_golds = [gold for group, gold in zip(samples, golds) for _ in group]
    results = pool.grade_many(list(flat) + list(greedy), flat_golds + list(golds))
    sampled, greedy_results = results[: len(flat)], results[len(flat) :]
    cluster = partial(grading.cluster_answers, pool=pool)
    majority, start = [], 0
    for group in samples:
        graded = sampled[start : start + len(group)]
        start += len(group)
        majority.append(majority_is_correct([r.extracted for r in graded], [r.correct for r in graded], cluster))
    return {
        "validation/mean_accuracy": sum(r.correct for r in sampled) / len(sampled),
        "validation/majority_accuracy": sum(majority) / len(majority),
        "validation/greedy_accuracy": sum(r.correct for r in greedy_results) / len(greedy_results),
    }


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 64,
) -> tuple[list[list[str]], list[str]]:
    """`samples` sampled responses and one greedy response per chat prompt, without touching the
    caller's random state or the model's mode."""
    import torch

    texts = [
        tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True) for prompt in prompts
    ]
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    sampled: list[list[str]] = []
    greedy: list[str] = []
    devices = [model.device] if model.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(model.device)
                width = batch["input_ids"].shape[1]
                # top_k=0: transformers' default top_k=50 would silently change the distribution
                drawn = model.generate(
                    **batch,
                    do_sample=True,
                    temperature=temperature,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=samples,
                )
                decoded = tokenizer.batch_decode(drawn[:, width:], skip_special_tokens=True)
                sampled += [decoded[i : i + samples] for i in range(0, len(decoded), samples)]
                best = model.generate(
                    **batch, do_sample=False, max_new_tokens=max_new_tokens, temperature=None, top_p=None, top_k=None
                )
                greedy += tokenizer.batch_decode(best[:, width:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return sampled, greedy


def validation_due(global_step: int, every_steps: int, updates_per_step: int) -> bool:
    """Validate after every `every_steps` rollout steps (optimizer steps / updates per rollout)."""
    return global_step % (every_steps * updates_per_step) == 0


def held_out_accuracy_callback(
    rows: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    *,
    tokenizer: Any,
    pool: grading.GradingPool,
    updates_per_step: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    tracker: Any = None,
):
    """A TrainerCallback validating on canonical rows (`prompt`, `reward_model.ground_truth`)."""
    from transformers import TrainerCallback

    prompts = [row["prompt"] for row in rows]
    golds = [row["reward_model"]["ground_truth"] for row in rows]

    class HeldOutAccuracy(TrainerCallback):
        def _validate(self, state, model) -> None:
            sampled, greedy = generate_answers(
                model,
                tokenizer,
                prompts,
                samples=settings["samples"],
                temperature=temperature,
                max_new_tokens=max_new_tokens,
                seed=seed,
            )
            numbers = score_answers(sampled, greedy, golds, pool)
            state.log_history.append({"step": state.global_step, **numbers})
            LOG.info(
                "validation at step %d: %s",
                state.global_step,
                ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in numbers.items()),
            )
            if tracker is not None and getattr(tracker, "active", False):
                tracker.log_metrics(numbers, step=int(state.global_step))

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:  # the starting point, once (a resumed job has it in its history)
                self._validate(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if validation_due(state.global_step, settings["every_steps"], updates_per_step):
                self._validate(state, model)

    return HeldOutAccuracy()
