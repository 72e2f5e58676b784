"""Job specs the unit tests build by hand, in one place: a tiny generate job and the settings
of a tiny TRL training job (each test overrides what it is about)."""

from __future__ import annotations

from typing import Any

#: A two-step TRL job on a tiny model: EMPO with GSPO's clip range, 4 prompts x 4 completions.
TINY_TRAINER: dict[str, Any] = {
    "reward": "empo",
    "loss": "gspo",
    "empty_policy": "singleton",
    "entropy_filter": None,
    "learning_rate": 1e-3,
    "num_generations": 4,
    "prompts_per_step": 4,
    "mini_batch_prompts": 2,
    "max_steps": 2,
    "max_completion_length": 12,
    "temperature": 1.0,
    "epsilon": 3e-4,
    "epsilon_high": 4e-4,
    "beta": 0.0,
    "save_steps": 1,
    "seed": 0,
    "bf16": True,
    "vllm_rollouts": False,
    "vllm_gpu_memory_utilization": 0.3,
}


def trainer_settings(**changes: Any) -> dict[str, Any]:
    """`TINY_TRAINER` with `changes`; a key it does not have is a mistake in the test."""
    unknown = set(changes) - set(TINY_TRAINER)
    if unknown:
        raise KeyError(f"not a trainer setting: {sorted(unknown)}")
    return {**TINY_TRAINER, **changes}


def generate_spec(system_prompt: str | None = None, **decoding: Any) -> dict[str, Any]:
    """A greedy hf generate job of model `tiny` on benchmark `bench` (decoding keys override)."""
    return {
        "model": "tiny",
        "method": "base",
        "benchmark": "bench",
        "protocol_name": "p",
        "engine": "hf",
        "batch_size": 8,
        "dtype": "float32",
        "prompt": {"format": "chat", "system_prompt": system_prompt},
        "decoding": {
            "temperature": 0.0,
            "top_p": 1.0,
            "top_k": 0,
            "n": 1,
            "seed": 0,
            "max_new_tokens": 12,
            "stop": [],
            **decoding,
        },
        "gpus": 0,
    }


def llm_judge_settings(model: str, engine: str = "hf") -> dict[str, Any]:
    """An llm-judge grader's settings for a tiny local model (4 new tokens, no endpoint)."""
    return {
        "model": model,
        "revision": None,
        "engine": engine,
        "endpoint": None,
        "api_key_env": "X",
        "dtype": "float32",
        "max_new_tokens": 4,
        "batch_size": 8,
        "timeout_seconds": 30,
    }
