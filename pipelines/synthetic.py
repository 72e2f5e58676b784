"""Synthetic arithmetic datasets for the embedded demo (a fresh machine has no real data).

Deterministic from a seed. The committed files under `config/demo_data/` are exactly what
`python -m pipelines.synthetic config/demo_data` writes (a test checks it), in the raw
question/answer layout many hub datasets use, so the demo exercises the column mapping of the
data stage. The training file carries one row without an answer on purpose: the data stage
must count and drop it.
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


DEMO_FILES = {
    "arith_train.jsonl": {"count": 240, "seed": 0, "max_operand": 20},
    "arith_easy.jsonl": {"count": 24, "seed": 1, "max_operand": 9},
    "arith_hard.jsonl": {"count": 16, "seed": 2, "max_operand": 99},
}


def write_demo_files(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, settings in DEMO_FILES.items():
        rows = arithmetic_problems(**settings)
        if name == "arith_train.jsonl":
            rows.append({"problem": "What is the answer to this unlabeled question?", "answer": ""})
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
