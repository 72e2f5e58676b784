"""Synthetic datasets for the embedded demo (a fresh machine has no real data).

Deterministic from a seed. The committed files under `config/demo_data/` are exactly what
`python -m pipelines.synthetic config/demo_data` writes (a test checks it), in the raw
question/answer layout many hub datasets use, so the demo exercises the column mapping of the
data stage. Training files carry one row without an answer on purpose: the data stage must
count and drop it.

Two tasks:
- addition ("What is a + b?", a and b in 0..21), the demo's: every (a, b) pair once, split at
  random into disjoint slices: the demo model's supervised warm start, the RL prompts (their
  answers are read only by the supervised baseline and logged diagnostics), the validation
  problems scored during training, and the test benchmark;
- mixed arithmetic (sums, products, differences, fractions), the unit tests' and the verl smoke
  run's prompts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from fractions import Fraction
from pathlib import Path

TEMPLATES = (
    ("What is {a} + {b}?", lambda a, b: a + b),
    ("Compute ${a} \\times {b}$.", lambda a, b: a * b),
    ("What is {a} - {b}?", lambda a, b: a - b),
    ("Simplify $\\frac{{{a}}}{{{b}}}$.", lambda a, b: Fraction(a, b)),
)


def _answer_text(value: int | Fraction) -> str:
    if isinstance(value, Fraction) and value.denominator != 1:
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
    return str(int(value))


def arithmetic_problems(count: int, seed: int, max_operand: int) -> list[dict[str, str]]:
    """`count` distinct problems with exact answers (fractions in lowest terms as \\frac)."""
    rng = random.Random(seed)
    problems: dict[str, str] = {}
    while len(problems) < count:
        template, solve = TEMPLATES[rng.randrange(len(TEMPLATES))]
        a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
        question = template.format(a=a, b=b)
        problems.setdefault(question, _answer_text(solve(a, b)))
    return [{"problem": q, "answer": a} for q, a in problems.items()]


def addition_splits(max_operand: int, seed: int, sizes: dict[str, int]) -> dict[str, list[dict[str, str]]]:
    """Every "What is a + b?" with a, b in 0..max_operand, shuffled, cut into disjoint slices in
    the order of `sizes`; a size of None takes the rest."""
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    random.Random(seed).shuffle(pairs)
    splits, start = {}, 0
    for name, size in sizes.items():
        end = len(pairs) if size is None else start + size
        if end > len(pairs):
            raise ValueError(f"{len(pairs)} addition problems cannot fill the slices {sizes}")
        splits[name] = [{"problem": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in pairs[start:end]]
        start = end
    return splits


#: The demo's addition slices (484 problems): test, validation and RL prompts first, the
#: warm start takes the rest.
ADDITION = {
    "max_operand": 21,
    "seed": 0,
    "sizes": {"add_test.jsonl": 80, "add_val.jsonl": 80, "add_train.jsonl": 80, "add_warmup.jsonl": None},
}

#: Mixed arithmetic for the unit tests and the verl smoke run.
ARITHMETIC_FILES = {
    "arith_train.jsonl": {"count": 240, "seed": 0, "max_operand": 20},
    "arith_easy.jsonl": {"count": 24, "seed": 1, "max_operand": 9},
    "arith_hard.jsonl": {"count": 16, "seed": 2, "max_operand": 99},
}

#: Files with one unlabeled row appended (the data stage counts and drops it).
UNLABELED_ROW = {"problem": "What is the answer to this unlabeled question?", "answer": ""}
WITH_UNLABELED_ROW = ("arith_train.jsonl", "add_train.jsonl")


def demo_files() -> dict[str, list[dict[str, str]]]:
    """Every committed demo file's rows, by file name."""
    files = addition_splits(**ADDITION)
    files.update({name: arithmetic_problems(**settings) for name, settings in ARITHMETIC_FILES.items()})
    return {name: rows + [UNLABELED_ROW] if name in WITH_UNLABELED_ROW else rows for name, rows in files.items()}


def write_demo_files(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in demo_files().items():
        path = out_dir / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the demo's synthetic datasets.")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    for path in write_demo_files(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
