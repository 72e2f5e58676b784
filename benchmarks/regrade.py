"""Re-grading a benchmark's generations vs regenerating them, on CPU, in one run.

What a grader change costs now that grading is its own stage: the grade job reads the existing
generations; before, the same change regenerated them. Baseline: generating the same benchmark
with a demo-sized model (transformers on CPU; the demo's training set as the benchmark), timed in the same run.
    python benchmarks/regrade.py [--items 128] [--n 4] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def main() -> int:
    from pipelines import generate, grade
    from pipelines.data import prepare_dataset, read_canonical
    from pipelines.models import DemoModelSpec, build_demo_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    demo_data = REPO_ROOT / "config" / "demo_data"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        prepare_dataset(
            {
                "name": "bench",
                "role": "benchmark",
                "format": "columns",
                "source": {"kind": "file", "path": str(demo_data / "arith_train.jsonl")},
                "columns": {"question": "problem", "answer": "answer"},
                "limit": args.items,
                "instruction": "",
                "max_invalid_fraction": 0.01,
            },
            root / "bench.parquet",
        )
        rows = read_canonical(root / "bench.parquet")
        system = "Please reason step by step, and put your final answer within \\boxed{}."  # the demo's
        manifest = build_demo_model(  # the demo model, warm-started to write boxed answers
            root / "model",
            [r["prompt"][-1]["content"] for r in rows],
            DemoModelSpec(seed=0, warm_start_steps=300, system_prompt=system),
            warm_start_examples=[(r["prompt"][-1]["content"], r["reward_model"]["ground_truth"]) for r in rows],
        )
        spec = {
            "model": "demo",
            "method": "base",
            "benchmark": "bench",
            "protocol_name": "bench",
            "engine": "hf",
            "batch_size": 16,
            "dtype": "float32",
            "prompt": {"format": "chat", "system_prompt": system},
            "decoding": {
                "temperature": 1.0,
                "top_p": 1.0,
                "top_k": 0,
                "n": args.n,
                "seed": 0,
                "max_new_tokens": args.max_new_tokens,
                "stop": [],
            },
            "gpus": 0,
        }
        started = time.perf_counter()
        generate.run_generation(
            spec, manifest, root / "bench.parquet", root / "generations.jsonl", root / "generation.json"
        )
        generating = time.perf_counter() - started
        counts = json.loads((root / "generation.json").read_text())["counts"]
        timings, answered = {}, {}
        for grader in ("math-verify", "empo-rules"):
            (root / grader).mkdir()
            grade_spec = {
                "model": "demo",
                "method": "base",
                "benchmark": "bench",
                "protocol_name": "bench",
                "grader": {"name": grader, "timeout_seconds": 5, "math_verify": "0.9.0"},
                "pass_at_k": [1, args.n],
                "workers": 2,
                "gpus": 0,
                "bootstrap": {"samples": 2000, "seed": 0},
            }
            started = time.perf_counter()
            grade.run_grading(
                grade_spec,
                root / "generations.jsonl",
                root / "generation.json",
                root / grader / "grades.jsonl",
                root / grader / "metrics.json",
            )
            timings[grader] = time.perf_counter() - started
            answered[grader] = json.loads((root / grader / "metrics.json").read_text())["counts"]
    print(
        f"{counts['items']} questions x {args.n} samples ({counts['samples']} responses, "
        f"<= {args.max_new_tokens} new tokens, mean {counts['mean_response_tokens']:.1f}), CPU"
    )
    print(f"regenerate (baseline, hf engine, demo model): {generating:.2f} s")
    for grader, seconds in timings.items():
        print(
            f"re-grade with {grader} (2 workers, bootstrap included): {seconds:.2f} s "
            f"({generating / seconds:.1f}x faster than regenerating; "
            f"{answered[grader]['samples'] - answered[grader]['no_answer']} "
            f"answers graded, {answered[grader]['correct']} right)"
        )
    print(
        "On a GPU cluster the ratio grows with model size: a 7B model's generation costs GPU-hours, "
        "its re-grading the same CPU seconds."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
