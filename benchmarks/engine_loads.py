"""One engine per model vs one per evaluation: engine load time against generation time.

Three evaluations of one tiny Qwen2 built offline (the demo's protocols: two benchmarks greedy,
one sampled n=4), in the same run:
  one engine per evaluation:  what `generate_per: benchmark` does (a fresh engine per job);
  one engine per model:       `pipelines.generate.generate_evaluations` with its EngineCache
                              (`generate_per: model`, the default),
checking that both write identical generations. Engine `vllm` needs real vLLM (run it with the
vLLM virtualenv: `make test-vllm` builds .venv-vllm; VLLM_TARGET_DEVICE=cpu on a CPU), `hf` runs
anywhere. Then the paper table's arithmetic: evaluations, model jobs, engine loads saved, at the
load time `cluster.estimate_engine_load_minutes` assumes for a 7B model on a GPU.
    python benchmarks/engine_loads.py [--engine vllm|hf] [--items 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from pipelines import generate  # noqa: E402
from tests.tiny_models import build_tiny_qwen2  # noqa: E402
from tests.vllm.conftest import TINY_MAX_LEN, canonical_demo_rows  # noqa: E402

DECODING = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "n": 1, "seed": 0, "max_new_tokens": 32, "stop": []}


def evaluations(root: Path, engine: str, items: int) -> list[dict]:
    jobs = []
    for benchmark, protocol, decoding in (("arith_easy", "greedy", {}), ("arith_hard", "greedy", {}),
                                          ("arith_hard", "sample4", {"temperature": 1.0, "n": 4})):
        data = root / f"{benchmark}.parquet"
        if not data.exists():
            canonical_demo_rows(data, f"{benchmark}.jsonl", items)
        spec = {"model": "tiny", "method": "base", "benchmark": benchmark, "protocol_name": protocol,
                "engine": engine, "batch_size": 8, "dtype": "float32",
                "prompt": {"format": "chat", "system_prompt": None}, "decoding": {**DECODING, **decoding}, "gpus": 0}
        jobs.append({"spec": spec, "data": str(data)})
    return jobs


def with_outputs(jobs: list[dict], folder: Path) -> list[dict]:
    placed = []
    for job in jobs:
        out = folder / job["spec"]["benchmark"] / job["spec"]["protocol_name"]
        out.mkdir(parents=True, exist_ok=True)
        placed.append({**job, "generations": str(out / "generations.jsonl"), "record": str(out / "generation.json")})
    return placed


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
        manifest = {"path": model, "kind": "demo"}
        jobs = evaluations(root, args.engine, args.items)

        started = time.perf_counter()
        separate_loads = 0.0
        for job in with_outputs(jobs, root / "separate"):
            engines = generate.generate_evaluations([job], manifest, None, None, threads=None)
            separate_loads += engines.load_seconds
        separate = time.perf_counter() - started

        started = time.perf_counter()
        engines = generate.generate_evaluations(with_outputs(jobs, root / "shared"), manifest, None, None, threads=None)
        shared = time.perf_counter() - started

        identical = all((root / "separate" / p.relative_to(root / "shared")).read_bytes() == p.read_bytes()
                        for p in (root / "shared").rglob("generations.jsonl"))
    generation = shared - engines.load_seconds
    print(f"engine {args.engine}, tiny Qwen2, {len(jobs)} evaluations ({args.items} questions each)")
    print(f"one engine per evaluation: {separate:7.2f} s ({len(jobs)} loads, {separate_loads:.2f} s loading)")
    print(f"one engine per model:      {shared:7.2f} s (1 load, {engines.load_seconds:.2f} s loading; "
          f"{generation:.2f} s generating)")
    print(f"load / generation of one evaluation: {engines.load_seconds / (generation / len(jobs)):.1f}x; "
          f"speed-up of the model job: {separate / shared:.2f}x")
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
