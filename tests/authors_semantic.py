"""The authors' semantic clustering, line for line (QingyangZhang/EMPO at c5eccd4,
trl/src/open_r1/semantic_uncertainty.py): the reference the reward core's batched clustering is
tested against (tests/test_semantic_judge.py) and timed against (benchmarks/semantic_judge.py)."""

from __future__ import annotations

from collections.abc import Callable

from pipelines.judge import render_verifier_prompt


def authors_check_implication(model, tokenizer, question: str, answer1: str, answer2: str) -> bool:
    """GeneralVerifier.check_implication: one prompt, one forward pass, Yes vs No probability."""
    import torch

    input_ids = tokenizer(render_verifier_prompt(None, question, answer1, answer2), return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = model.forward(input_ids).logits
    probs = torch.softmax(logits[0, input_ids.shape[1] - 1, :], dim=0)
    decision = tokenizer(" Yes", " No", add_special_tokens=False)
    return probs[decision.input_ids[0]].item() > probs[decision.input_ids[1]].item()


def authors_semantic_ids(strings: list[str], check: Callable[[str, str], bool]) -> tuple[list[int], int]:
    """get_semantic_ids with are_equivalent ('' is never equivalent), one pair per `check` call;
    returns the ids and the number of pairs asked."""
    ids = [-1] * len(strings)
    next_id, asked = 0, 0
    for i, first in enumerate(strings):
        if ids[i] == -1:
            ids[i] = next_id
            for j in range(i + 1, len(strings)):
                if first != "" and strings[j] != "":
                    asked += 1
                    if check(first, strings[j]):
                        ids[j] = next_id
            next_id += 1
    return ids, asked
