"""One engine per model vs one per evaluation: engine load time against generation time.

Three evaluations of one tiny Qwen2 built offline (the demo's protocols: two benchmarks greedy,
one sampled n=4), in the same run:
  one job per evaluation:  `generate_per: benchmark`, each job a process with its own engine;
  one job per model:       `generate_per: model` (the default), one process, one engine,
each as the `python -m pipelines.generate` command the rules run, checking that both write
identical generations. Engine `vllm` needs real vLLM (run it with the
vLLM virtualenv: `make test-vllm` builds .venv-vllm; VLLM_TARGET_DEVICE=cpu on a CPU), `hf` runs
anywhere. Then the paper table's arithmetic: evaluations, model jobs, engine loads saved, at the
load time `cluster.estimate_engine_load_minutes` assumes for a 7B model on a GPU.
    python benchmarks/engine_loads.py [--engine vllm|hf] [--items 24]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from tests.conftest import REPO_ROOT  # noqa: E402
from tests.tiny_models import build_tiny_qwen2  # noqa: E402
from tests.vllm.conftest import TINY_MAX_LEN, canonical_demo_rows  # noqa: E402

DECODING = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "n": 1, "seed": 0, "max_new_tokens": 32, "stop": []}


def evaluations(root: Path, engine: str, items: int) -> list[dict]:
    jobs = []
    for benchmark, protocol, decoding in (
        ("arith_easy", "greedy", {}),
        ("arith_hard", "greedy", {}),
        ("arith_hard", "sample4", {"temperature": 1.0, "n": 4}),
    ):
        data = root / f"{benchmark}.parquet"
        if not data.exists():
            canonical_demo_rows(data, f"{benchmark}.jsonl", items)
        spec = {
            "model": "tiny",
            "method": "base",
            "benchmark": benchmark,
            "protocol_name": protocol,
            "engine": engine,
            "batch_size": 8,
            "dtype": "float32",
            "prompt": {"format": "chat", "system_prompt": None},
            "decoding": {**DECODING, **decoding},
            "gpus": 0,
        }
        jobs.append({"spec": spec, "data": str(data)})
    return jobs


def with_outputs(jobs: list[dict], folder: Path) -> list[dict]:
    placed = []
    for job in jobs:
        out = folder / job["spec"]["benchmark"] / job["spec"]["protocol_name"]
        out.mkdir(parents=True, exist_ok=True)
        placed.append({**job, "generations": str(out / "generations.jsonl"), "record": str(out / "generation.json")})
    return placed


def run_jobs(jobs: list[dict], manifest_file: Path, spec_file: Path) -> tuple[float, float]:
    """One `python -m pipelines.generate` process (one job as Snakemake runs it) for these jobs:
    wall seconds, and the engine load seconds it logged."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.generate",
            "--spec",
            str(spec_file),
            "--model-manifest",
            str(manifest_file),
            "--generations",
            *[j["generations"] for j in jobs],
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    loaded = re.search(r"engine load\(s\) \(([0-9.]+) s\)", result.stderr)
    return wall, float(loaded.group(1)) if loaded else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--items", type=int, default=24, help="questions per benchmark")
    args = parser.parse_args()
    if args.engine == "vllm":
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_qwen2(root / "model", attention_heads=2, kv_heads=2, max_length=TINY_MAX_LEN)
        manifest_file = root / "model.json"
        manifest_file.write_text(json.dumps({"path": model, "kind": "demo"}))
        jobs = evaluations(root, args.engine, args.items)
        separate_jobs, shared_jobs = with_outputs(jobs, root / "separate"), with_outputs(jobs, root / "shared")
        spec_file = root / "spec.json"
        spec_file.write_text(json.dumps({"model": "tiny", "method": "base", "jobs": separate_jobs + shared_jobs}))

        separate = [run_jobs([job], manifest_file, spec_file) for job in separate_jobs]
        shared, shared_load = run_jobs(shared_jobs, manifest_file, spec_file)
        identical = all(
            Path(a["generations"]).read_bytes() == Path(b["generations"]).read_bytes()
            for a, b in zip(separate_jobs, shared_jobs)
        )
    separate_wall = sum(wall for wall, _ in separate)
    separate_load = sum(load for _, load in separate)
    print(
        f"engine {args.engine}, tiny Qwen2, {len(jobs)} evaluations ({args.items} questions each), "
        "each way as `python -m pipelines.generate` processes"
    )
    print(
        f"one job per evaluation: {separate_wall:7.2f} s in {len(jobs)} processes "
        f"({separate_load:.2f} s of it loading engines)"
    )
    print(f"one job per model:      {shared:7.2f} s in 1 process ({shared_load:.2f} s loading its engine)")
    print(
        f"speed-up of the model job: {separate_wall / shared:.2f}x; engine load "
        f"{separate_load / len(jobs):.2f} s vs {(shared - shared_load) / len(jobs):.2f} s of other work "
        "per evaluation"
    )
    print("generations identical both ways" if identical else "MISMATCH between the two ways")
    print(paper_engine_loads())
    return 0 if identical else 1


def paper_engine_loads() -> str:
    """What plan.md says for the paper table (config/config.yaml)."""
    from pipelines import config as cfg
    from pipelines.plan import engine_loads

    config = cfg.load_config([Path(__file__).resolve().parent.parent / "config" / "config.yaml"])
    return "paper table: " + " ".join(engine_loads(cfg.plan_spec(config))[2:]).strip()


if __name__ == "__main__":
    sys.exit(main())
