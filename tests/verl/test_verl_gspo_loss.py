"""verl 0.9.1's GSPO loss, aggregated with `seq-mean-token-mean`, is the EMPO authors' GSPO loss:
same value and same gradient w.r.t. the current log-probs, on right-padded sequences of different
lengths, with the clip active and inactive, for positive and negative advantages, and across
micro-batches (verl divides every micro-batch by the mini-batch's sequence count). With
`token-mean` (which the authors' scripts pass, but which their GSPO ignores) verl's loss differs.

The authors' loss is written out below from reading their fork; verl's is called as the actor
worker calls it (`verl.workers.utils.losses.ppo_loss`): an `ActorConfig` whose `global_batch_info`
carries dp_size, batch_num_tokens, global_batch_size and loss_scale_factor."""

from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="verl is not installed here; run `make test-verl`")

import torch  # noqa: E402

CLIP_LOW, CLIP_HIGH = 3e-4, 4e-4  # the paper config's clip_ratio_low / clip_ratio_high
DTYPE = torch.float64


def authors_gspo_loss(log_prob, old_log_prob, advantages, response_mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH):
    """The EMPO authors' GSPO policy loss for one micro-batch, reimplemented from their verl fork
    (`verl-empo/verl/trainer/ppo/core_algos.py`, `compute_policy_loss_gspo`, lines 740-793).

    Sequence-level ratio s_b = exp(mean over the response tokens of (log_prob - old_log_prob)),
    per-sequence loss max(-A_b s_b, -A_b clamp(s_b, 1 - clip_low, 1 + clip_high)) with
    A_b = advantages[:, 0], averaged over the sequences of the micro-batch. Their function takes a
    `loss_agg_mode` argument and ignores it (it always returns `pg_losses.mean()`)."""
    m = response_mask.to(log_prob.dtype)
    seq_len = m.sum(-1)
    seq_logratio = (log_prob * m).sum(-1) / seq_len - (old_log_prob * m).sum(-1) / seq_len
    s = torch.exp(seq_logratio)
    A = advantages[:, 0]
    losses = torch.maximum(-A * s, -A * torch.clamp(s, 1 - clip_low, 1 + clip_high))
    return losses.mean()


def authors_clipped(log_prob, old_log_prob, advantages, response_mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH):
    """Per sequence: does the authors' max() pick the clipped term (so the sequence has no gradient)?"""
    m = response_mask.to(log_prob.dtype)
    s = torch.exp(((log_prob - old_log_prob) * m).sum(-1) / m.sum(-1))
    A = advantages[:, 0]
    return (-A * torch.clamp(s, 1 - clip_low, 1 + clip_high)) > (-A * s)


def make_batch(seed, n_seqs=48, max_len=24, scale=1e-5, adv="mixed"):
    """Right-padded responses of different lengths; per-token advantages broadcast from one
    per-sequence score (what GRPO's advantage estimator writes: score * response_mask)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (n_seqs,), generator=g)
    lengths[:3] = torch.tensor([1, max_len, max_len // 2])  # extremes always present
    mask = (torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.int64)
    old_log_prob = -3.0 * torch.rand(n_seqs, max_len, generator=g, dtype=DTYPE)
    log_prob = old_log_prob + scale * torch.randn(n_seqs, max_len, generator=g, dtype=DTYPE)
    # padded positions hold junk, as they may in a real batch: the mask must keep them out
    junk = 5.0 * torch.randn(n_seqs, max_len, generator=g, dtype=DTYPE)
    log_prob = torch.where(mask.bool(), log_prob, junk)
    score = torch.randn(n_seqs, generator=g, dtype=DTYPE)
    score = {"mixed": score, "positive": score.abs() + 0.1, "negative": -score.abs() - 0.1}[adv]
    advantages = score.unsqueeze(-1) * mask.to(DTYPE)
    return dict(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages, mask=mask)


def actor_config(loss_agg_mode, *, global_batch_size=None, batch_num_tokens=None, dp_size=1):
    from verl.workers.config import ActorConfig

    config = ActorConfig(
        strategy="fsdp",
        rollout_n=8,
        ppo_micro_batch_size_per_gpu=4,
        clip_ratio_low=CLIP_LOW,
        clip_ratio_high=CLIP_HIGH,
        loss_agg_mode=loss_agg_mode,
    )
    # as verl.workers.utils.losses.ppo_loss sets them before calling the policy loss
    config.global_batch_info["dp_size"] = dp_size
    config.global_batch_info["batch_num_tokens"] = batch_num_tokens
    config.global_batch_info["global_batch_size"] = global_batch_size
    config.global_batch_info["loss_scale_factor"] = config.loss_scale_factor
    return config


def verl_gspo(log_prob, batch, rows, config):
    from verl.trainer.ppo.core_algos import compute_policy_loss_gspo, get_policy_loss_fn

    assert get_policy_loss_fn("gspo") is compute_policy_loss_gspo  # what loss_mode=gspo resolves to
    loss, _ = compute_policy_loss_gspo(
        old_log_prob=batch["old_log_prob"][rows],
        log_prob=log_prob[rows],
        advantages=batch["advantages"][rows],
        response_mask=batch["mask"][rows].to(bool),
        loss_agg_mode=config.loss_agg_mode,
        config=config,
    )
    return loss


def value_and_grad(fn, log_prob):
    leaf = log_prob.clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


def authors_value_and_grad(batch):
    return value_and_grad(
        lambda lp: authors_gspo_loss(lp, batch["old_log_prob"], batch["advantages"], batch["mask"]), batch["log_prob"]
    )


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


CASES = [
    # (seed, per-token log-ratio scale, advantages, clip active?)
    (0, 1e-5, "mixed", False),
    (1, 1e-5, "positive", False),
    (2, 1e-5, "negative", False),
    (3, 3e-3, "mixed", True),
    (4, 3e-3, "positive", True),
    (5, 3e-3, "negative", True),
]


@pytest.mark.parametrize("seed,scale,adv,clipping", CASES)
def test_seq_mean_token_mean_is_the_authors_gspo(seed, scale, adv, clipping):
    batch = make_batch(seed, scale=scale, adv=adv)
    n_seqs = batch["mask"].shape[0]
    rows = slice(None)

    clipped = authors_clipped(batch["log_prob"], batch["old_log_prob"], batch["advantages"], batch["mask"])
    if clipping:  # some sequences clipped (no gradient), some not: both branches of the max are exercised
        assert 0 < clipped.sum() < n_seqs
    else:
        assert not clipped.any()

    ref_value, ref_grad = authors_value_and_grad(batch)
    config = actor_config("seq-mean-token-mean", global_batch_size=n_seqs)
    value, grad = value_and_grad(lambda lp: verl_gspo(lp, batch, rows, config), batch["log_prob"])

    torch.testing.assert_close(value, ref_value, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-10)
    assert ref_grad.abs().sum() > 0
    assert (grad[~batch["mask"].bool()] == 0).all()  # padding gets no gradient
    if clipping:  # the clipped sequences get none either, in both
        assert (grad[clipped] == 0).all() and (ref_grad[clipped] == 0).all()

    # verl's own default for global_batch_size (None: the micro-batch's non-empty sequences) agrees here too
    default = actor_config("seq-mean-token-mean")
    torch.testing.assert_close(verl_gspo(batch["log_prob"], batch, rows, default), ref_value, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("seed,scale,adv,clipping", CASES)
def test_token_mean_is_not_the_authors_gspo(seed, scale, adv, clipping):
    batch = make_batch(seed, scale=scale, adv=adv)
    ref_value, ref_grad = authors_value_and_grad(batch)
    config = actor_config("token-mean", batch_num_tokens=int(batch["mask"].sum()), global_batch_size=len(batch["mask"]))
    value, grad = value_and_grad(lambda lp: verl_gspo(lp, batch, slice(None), config), batch["log_prob"])

    # token-mean weights each sequence by its length: the gradient is clearly another one
    assert rel(grad, ref_grad) > 1e-2
    # and so is the value (token-mean = length-weighted mean of the per-sequence losses)
    assert abs(value - ref_value) / abs(ref_value) > 1e-3
    lengths = batch["mask"].sum(-1).to(DTYPE)
    per_seq = authors_per_seq_losses(batch)
    torch.testing.assert_close(value, (per_seq * lengths).sum() / lengths.sum(), rtol=1e-9, atol=1e-12)


def authors_per_seq_losses(batch):
    """The authors' per-sequence losses l_b (before their mean)."""
    m = batch["mask"].to(DTYPE)
    s = torch.exp(((batch["log_prob"] - batch["old_log_prob"]) * m).sum(-1) / m.sum(-1))
    A = batch["advantages"][:, 0]
    return torch.maximum(-A * s, -A * torch.clamp(s, 1 - CLIP_LOW, 1 + CLIP_HIGH))


@pytest.mark.parametrize("scale", [1e-5, 3e-3])
def test_micro_batches_summed_are_the_mini_batch(scale):
    """verl (FSDP engine) backpropagates every micro-batch's loss, each divided by the mini-batch's
    sequence count (global_batch_size), so the accumulated gradient is the one-batch gradient. The
    authors' fork accumulates micro-batch means scaled by len(micro_batch) / ppo_mini_batch_size
    (their dp_actor.py, use_dynamic_bsz), which comes to the same; unequal micro-batches here."""
    batch = make_batch(7, n_seqs=40, scale=scale, adv="mixed")
    n_seqs = 40
    splits = [slice(0, 13), slice(13, 40)]
    config = actor_config("seq-mean-token-mean", global_batch_size=n_seqs)

    one_value, one_grad = value_and_grad(lambda lp: verl_gspo(lp, batch, slice(None), config), batch["log_prob"])
    micro_value, micro_grad = value_and_grad(
        lambda lp: sum(verl_gspo(lp, batch, rows, config) for rows in splits), batch["log_prob"]
    )

    def authors_accumulated(lp):
        return sum(
            authors_gspo_loss(lp[rows], batch["old_log_prob"][rows], batch["advantages"][rows], batch["mask"][rows])
            * (lp[rows].shape[0] / n_seqs)
            for rows in splits
        )

    authors_value, authors_grad = value_and_grad(authors_accumulated, batch["log_prob"])
    ref_value, ref_grad = authors_value_and_grad(batch)

    for value, grad in [(micro_value, micro_grad), (authors_value, authors_grad), (one_value, one_grad)]:
        torch.testing.assert_close(value, ref_value, rtol=1e-6, atol=1e-10)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-10)

    # without global_batch_size each micro-batch would be its own mean: not the mini-batch loss
    local = actor_config("seq-mean-token-mean")
    wrong = sum(verl_gspo(batch["log_prob"], batch, rows, local) for rows in splits)
    assert abs(wrong - ref_value) / abs(ref_value) > 1e-3
