"""Semantic-judge cost per group: the reward core's batched clustering vs the authors' loop.

The authors (QingyangZhang/EMPO, trl/src/open_r1/semantic_uncertainty.py) cluster a group by
asking their verifier one answer pair per forward pass (`get_semantic_ids` ->
`GeneralVerifier.check_implication`). The reward core (`pipelines.rewards.judge_cluster_ids`)
asks the same pairs, but each representative's pairs in one batch and each distinct pair of
strings once per group. Both run here on the same verifier model, in the same process:
  baseline: their loop, line for line (one prompt, forward, softmax, Yes > No), per pair;
  core:     `judge_cluster_ids` with `pipelines.judge.HFDecision` (left-padded batches).
The clusters must be identical. Printed: forward passes, pairs and seconds per group, and the
ratios.

The verifier is built offline (random weights, made to decide differently for different
answers): a stand-in for TIGER-Lab/general-verifier (1.5B), which cannot be downloaded here.
Its size is set by --hidden/--layers; forward passes do not depend on it, time does.
    python benchmarks/semantic_judge.py [--groups 24] [--group-size 12] [--hidden 256 --layers 4]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.judge import EquivalenceJudge, HFDecision, render_verifier_prompt  # noqa: E402
from pipelines.rewards import judge_cluster_ids  # noqa: E402
from tests.authors_semantic import authors_check_implication, authors_semantic_ids  # noqa: E402
from tests.tiny_models import build_tiny_qwen2, make_opinionated_verifier  # noqa: E402

#: Free-form questions with answers a policy might give (several phrasings of the right one,
#: plausible wrong ones), as in natural_reasoning_simple.
QUESTIONS = [
    (
        "Which gas do plants take in for photosynthesis?",
        ["carbon dioxide", "CO2", "carbon dioxide gas", "oxygen", "nitrogen", "CO_2", "water vapour"],
    ),
    (
        "What is the main function of red blood cells?",
        [
            "carrying oxygen",
            "oxygen transport",
            "to transport oxygen around the body",
            "fighting infection",
            "clotting blood",
            "carrying carbon dioxide",
        ],
    ),
    (
        "Which economic indicator measures the average change in consumer prices?",
        ["the consumer price index", "CPI", "inflation rate", "GDP deflator", "unemployment rate"],
    ),
    (
        "What causes the seasons on Earth?",
        [
            "the tilt of Earth's axis",
            "axial tilt",
            "Earth's 23.5 degree tilt",
            "distance from the Sun",
            "the Moon's orbit",
        ],
    ),
]

#: How answers spread in a group (counts of distinct answers): converged, split, diverse.
SHAPES = [(10, 2), (8, 2, 1, 1), (5, 4, 2, 1), (4, 3, 3, 2), (3, 3, 2, 2, 1, 1), (2, 2, 2, 2, 2, 2)]


def build_groups(count: int, size: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    groups = []
    for index in range(count):
        question, pool = QUESTIONS[index % len(QUESTIONS)]
        shape = SHAPES[index % len(SHAPES)]
        picks = rng.sample(pool, min(len(shape), len(pool)))
        answers = [answer for answer, n in zip(picks, shape) for _ in range(n)]
        answers = (answers + [rng.choice(pool) for _ in range(size)])[:size]
        rng.shuffle(answers)
        groups.append((question, answers))
    return groups


def partition(ids) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for position, cluster in enumerate(ids):
        groups.setdefault(cluster, set()).add(position)
    return {frozenset(g) for g in groups.values()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=24)
    parser.add_argument("--group-size", type=int, default=12, help="the authors' num_generations: 12")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass (core)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    groups = build_groups(args.groups, args.group_size)
    with tempfile.TemporaryDirectory() as folder:
        build_tiny_qwen2(
            folder,
            attention_heads=4,
            kv_heads=2,
            max_length=1024,
            seed=1,
            hidden_size=args.hidden,
            num_layers=args.layers,
            extra_corpus=("Assistant: Final Decision: Yes", "Assistant: Final Decision: No"),
        )
        make_opinionated_verifier(
            folder,
            [
                render_verifier_prompt(None, q, a, b)
                for q, answers in groups[:8]
                for a in answers[:6]
                for b in answers[6:]
            ],
        )
        decision = HFDecision(folder, None, "float32", "cpu", " Yes", " No")
        model, tokenizer = decision.model, decision.tokenizer

        authors_passes, authors_seconds, ours_passes, ours_pairs, ours_seconds, clusters = [], [], [], [], [], []
        for question, answers in groups:
            started = time.perf_counter()
            theirs, asked = authors_semantic_ids(
                answers, lambda a, b, question=question: authors_check_implication(model, tokenizer, question, a, b)
            )
            authors_seconds.append(time.perf_counter() - started)
            authors_passes.append(asked)  # one forward pass per pair

            judge = EquivalenceJudge(decision, args.batch_size)
            started = time.perf_counter()
            ours = judge_cluster_ids(answers, question, judge)
            ours_seconds.append(time.perf_counter() - started)
            ours_passes.append(judge.forward_passes)
            ours_pairs.append(judge.pairs)
            if partition(ours) != partition(theirs):
                print(f"MISMATCH on {question!r}: {answers}\n  authors {theirs}\n  core    {ours}")
                return 1
            clusters.append(len(set(ours)))

    mean = statistics.fmean
    print(
        f"{len(groups)} groups of {args.group_size} free-form answers, verifier hidden {args.hidden} x "
        f"{args.layers} layers (float32, CPU, {torch.get_num_threads()} threads); clusters per group "
        f"{mean(clusters):.1f} (min {min(clusters)}, max {max(clusters)}); identical clusters: yes"
    )
    print(
        f"  authors' loop : {mean(authors_passes):6.1f} forward passes/group ({mean(authors_passes):.1f} pairs), "
        f"{1000 * mean(authors_seconds):8.1f} ms/group"
    )
    print(
        f"  reward core   : {mean(ours_passes):6.1f} forward passes/group ({mean(ours_pairs):.1f} pairs), "
        f"{1000 * mean(ours_seconds):8.1f} ms/group"
    )
    print(
        f"  ratio         : {mean(authors_passes) / mean(ours_passes):.1f}x fewer forward passes, "
        f"{mean(authors_passes) / mean(ours_pairs):.1f}x fewer pairs, "
        f"{mean(authors_seconds) / mean(ours_seconds):.1f}x faster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
