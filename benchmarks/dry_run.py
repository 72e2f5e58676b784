"""How long Snakemake takes to plan the paper table (target: < 5 s for >= 15 generation jobs).

Baseline in the same run: `snakemake --version` (interpreter + Snakemake import), so the
figure separates our parse/validation/DAG cost from Snakemake's own start-up.
    python benchmarks/dry_run.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def timed(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configfile", default="config/config.yaml")
    args = parser.parse_args()
    baseline = [timed([SNAKEMAKE, "--version"])[0] for _ in range(args.repeats)]
    plans = [timed([SNAKEMAKE, "-n", "--quiet", "rules", "--configfile", args.configfile]) for _ in range(args.repeats)]
    _, output = timed([SNAKEMAKE, "-n", "--configfile", args.configfile])
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in output.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    plan_seconds = statistics.median(t for t, _ in plans)
    start_seconds = statistics.median(baseline)
    print(
        f"config: {args.configfile}; generate jobs planned: {counts.get('generate', 0)}, "
        f"grade jobs: {counts.get('grade', 0)}"
    )
    print(f"snakemake start-up (--version), median of {args.repeats}: {start_seconds:.2f} s")
    print(
        f"dry-run of the full DAG, median of {args.repeats}: {plan_seconds:.2f} s "
        f"({plan_seconds / start_seconds:.1f}x start-up; target < 5 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
