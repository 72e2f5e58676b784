"""Groups of completions for checking our `empo-rules` rewards against the authors' `empo_metrics`.

Each group is one gold answer (from the authors' training set and the five benchmark files in
../shared/data/empo-math) and G completions written the ways models write answers: the gold as
is, equivalent and near-equivalent spellings (spacing, \\dfrac, decimals at several precisions,
scientific notation, units, `x = ...`, `\\text{}`), near-miss integers (their rounding accepts some),
other golds, empty boxes, an unclosed last box after a complete one, `\\fbox`, `\\boxed` without
braces, nested boxes and no box at all.

    python benchmarks/authors_reward_groups.py build --seed 1 --groups 200 OUT.json
    <python with the authors' code importable> benchmarks/authors_reward_groups.py pin OUT.json

`build` writes the groups; `pin` runs the authors' unmodified `empo_metrics`
(QingyangZhang/EMPO, verl-empo/verl/utils/reward_score/empo/compute_metrics.py; their package
on PYTHONPATH, never in this repository) with reward_type "entropy" and "gt" on every group and
adds their rewards to the file. tests/test_authors_rewards.py asserts ours equal them;
benchmarks/rewards.py --authors times ours against their all-pairs algorithm on the same groups.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("EMPO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "empo-math"))
SOURCES = (
    "NM_20K_1010.parquet",
    "math500.parquet",
    "minerva_math.parquet",
    "olympiadbench.parquet",
    "aime24_0726.parquet",
    "amc23_1010.parquet",
)
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_INTEGER = re.compile(r"-?\d+")
_FRACTION = re.compile(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")


def read_golds(rng: random.Random, per_file: int = 120) -> list[str]:
    import pyarrow.parquet as pq

    golds: list[str] = []
    for name in SOURCES:
        rows = pq.read_table(SHARED / name, columns=["reward_model"]).to_pylist()
        picked = rng.sample(rows, min(per_file, len(rows)))
        for row in picked:
            truth = row["reward_model"]["ground_truth"]
            golds.append(str(truth[-1] if isinstance(truth, list) else truth))
    return golds


def _decimal(value: float, rng: random.Random) -> str:
    return f"{value:.{rng.choice([1, 2, 3, 4])}f}"


def spellings(gold: str, rng: random.Random) -> str:
    """One way a model writes an answer near `gold` (equal, near-equal or plainly different)."""
    fraction = _FRACTION.fullmatch(gold)
    if fraction:
        value = int(fraction.group(1)) / int(fraction.group(2))
        return rng.choice(
            [
                _decimal(value, rng),
                f"\\dfrac{{{fraction.group(1)}}}{{{fraction.group(2)}}}",
                f"{fraction.group(1)}/{fraction.group(2)}",
                f"\\frac{{{2 * int(fraction.group(1))}}}{{{2 * int(fraction.group(2))}}}",
                str(round(value)),
            ]
        )
    if _INTEGER.fullmatch(gold):
        n = int(gold)
        return rng.choice(
            [
                f"{n}.0",
                str(n + rng.choice([-1, 1])),
                str(round(n * rng.choice([0.95, 0.98, 1.02, 1.05, 1.3]))),
                f"{n:,}" if abs(n) >= 1000 else f"x = {n}",
                f"{n}^\\circ",
                f"\\text{{{n}}}",
                f"{n} \\text{{ cm}}",
                f"\\${n}",
                f"{n}\\%",
                f"{n / 1000:g}\\times 10^{{3}}",
                f"{n:.1e}",
            ]
        )
    if _NUMBER.fullmatch(gold):
        value = float(gold)
        return rng.choice(
            [
                _decimal(value, rng),
                f"{value:.2e}".replace("e+0", "e").replace("e-0", "e-"),
                f"{value:.1e}".split("e")[0] + f"\\times 10^{{{int(f'{value:.1e}'.split('e')[1])}}}",
                str(round(value)),
                f"{value * 1.01:.3g}",
                f"{value} \\mathrm{{~m}}",
            ]
        )
    return rng.choice(
        [
            gold.replace("\\frac", "\\dfrac"),
            gold.replace(" ", ""),
            gold.replace(",", ", "),
            f"\\left({gold}\\right)",
            f"x = {gold}",
            gold + " ",
        ]
    )


def completion(answer: str, rng: random.Random) -> str:
    lead = rng.choice(["", "We compute step by step. ", "Thus the result follows.\n"])
    return lead + rng.choice(
        [f"The answer is \\boxed{{{answer}}}.", f"$\\boxed{{{answer}}}$", f"So \\boxed{{ {answer} }}"]
    )


def broken(answer: str, other: str, rng: random.Random) -> str:
    """A completion without a proper answer, or whose answer a careless extractor misreads."""
    return rng.choice(
        [
            "I could not finish the computation.",
            "The answer is \\boxed{}.",
            "The answer is \\boxed{ }.",
            f"First \\boxed{{{other}}}, then finally \\boxed{{{answer}",
            f"The answer is \\fbox{{{answer}}}.",
            f"The answer is \\boxed {answer}.",
            f"\\boxed{{\\boxed{{{answer}}}}}",
            f"The answer is {answer}.",
            f"\\boxed{{{answer}}} or maybe \\boxed{{{other}}}",
        ]
    )


def build(seed: int, groups: int) -> list[dict]:
    rng = random.Random(seed)
    golds = read_golds(rng)
    built = []
    for index in range(groups):
        gold = rng.choice(golds)
        size = rng.choice([4, 8, 16])
        consensus = gold if rng.random() < 0.6 else spellings(gold, rng)
        others = [rng.choice(golds), spellings(gold, rng)]
        texts = []
        for _ in range(size):
            roll = rng.random()
            if roll < 0.3:
                answer = consensus
            elif roll < 0.55:
                answer = spellings(gold, rng)
            elif roll < 0.75:
                answer = rng.choice(others)
            else:
                texts.append(broken(rng.choice([consensus, gold]), rng.choice(others), rng))
                continue
            texts.append(completion(answer, rng))
        boxed_gold = rng.random() < 0.05  # a gold written boxed: their grader unwraps it
        built.append({"index": index, "gold": f"\\boxed{{{gold}}}" if boxed_gold else gold, "completions": texts})
    return built


def pin(path: Path) -> None:
    """Add the authors' rewards (their unmodified empo_metrics must be importable)."""
    from verl.utils.reward_score.empo.compute_metrics import empo_metrics

    data = json.loads(path.read_text())
    started = time.perf_counter()
    for position, group in enumerate(data["groups"]):
        golds = [group["gold"]] * len(group["completions"])
        group["authors_entropy"] = [
            float(r) for r in empo_metrics(group["completions"], golds, reward_type="entropy")[0]
        ]
        group["authors_gt"] = [float(r) for r in empo_metrics(group["completions"], golds, reward_type="gt")[0]]
        if position % 20 == 0:
            print(f"{position}/{len(data['groups'])} groups, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    data["pinned_with"] = "QingyangZhang/EMPO c5eccd4 empo_metrics (unmodified), " + _versions()
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(
        f"{name} {version(name)}" for name in ("math-verify", "sympy", "pylatexenc", "latex2sympy2_extended")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build")
    make.add_argument("--seed", type=int, required=True)
    make.add_argument("--groups", type=int, default=200)
    make.add_argument("out", type=Path)
    fill = sub.add_parser("pin")
    fill.add_argument("path", type=Path)
    args = parser.parse_args()
    if args.command == "build":
        groups = build(args.seed, args.groups)
        args.out.write_text(json.dumps({"seed": args.seed, "groups": groups}, indent=1, ensure_ascii=False) + "\n")
    else:
        pin(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
