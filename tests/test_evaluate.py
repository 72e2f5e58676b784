"""Evaluation: prompts, engines, resumable generations, metrics.json — on a real tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from pipelines import evaluate
from pipelines.data import prepare_dataset
from pipelines.models import DemoModelSpec, build_demo_model, write_manifest
from tests.conftest import REPO_ROOT

DEMO_DATA = REPO_ROOT / "config" / "demo_data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny demo model, its manifest, and a 20-item canonical benchmark."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = [json.loads(line)["problem"] for line in (DEMO_DATA / "arith_train.jsonl").read_text().splitlines()]
    manifest = build_demo_model(root / "model", corpus, DemoModelSpec(seed=0))
    write_manifest(manifest, root / "model.json")
    spec = {"name": "bench", "role": "benchmark", "format": "columns",
            "source": {"kind": "file", "path": str(DEMO_DATA / "arith_easy.jsonl")},
            "columns": {"question": "problem", "answer": "answer"},
            "instruction": "Put the answer in \\boxed{}.", "limit": 20, "max_invalid_fraction": 0.0}
    prepare_dataset(spec, root / "bench.parquet")
    return {"root": root, "manifest": manifest, "data": root / "bench.parquet"}


def _spec(**decoding) -> dict:
    return {"model": "tiny", "method": "base", "benchmark": "bench", "engine": "hf", "batch_size": 8,
            "dtype": "float32", "prompt": {"format": "chat", "system_prompt": "Be brief."},
            "decoding": {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "n": 1, "seed": 0,
                         "max_new_tokens": 12, "stop": [], **decoding},
            "pass_at_k": [1, 2], "grading": {"timeout_seconds": 5, "workers": 1}, "gpus": 0}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class ScriptedTokenizer:
    chat_template = "scripted"

    def apply_chat_template(self, conversation, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "|".join(f"{m['role']}:{m['content']}" for m in conversation) + "|assistant:"


def test_render_prompt_formats():
    messages = [{"role": "user", "content": "What is 2+2?"}]
    tokenizer = ScriptedTokenizer()
    assert evaluate.render_prompt(messages, tokenizer, {"format": "plain", "system_prompt": None}) == "What is 2+2?"
    assert evaluate.render_prompt(messages, tokenizer, {"format": "chat", "system_prompt": None}) == \
        "user:What is 2+2?|assistant:"
    assert evaluate.render_prompt(messages, tokenizer, {"format": "chat", "system_prompt": "S"}) == \
        "system:S|user:What is 2+2?|assistant:"
    tokenizer.chat_template = None
    with pytest.raises(evaluate.EvalError, match="prompt.format: plain"):
        evaluate.render_prompt(messages, tokenizer, {"format": "chat", "system_prompt": None})


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert evaluate.cut_at_stop("a</s>b\n\nc", ["\n\n", "</s>"]) == ("a", True)
    assert evaluate.cut_at_stop("abc", ["x"]) == ("abc", False)


def test_greedy_eval_writes_generations_and_metrics(tiny, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    result = evaluate.run_evaluation(_spec(), tiny["manifest"], tiny["data"], out / "metrics.json",
                                     out / "generations.jsonl")
    records = _lines(out / "generations.jsonl")
    assert len(records) == 20 and sorted(r["index"] for r in records) == list(range(20))
    first = records[0]
    assert set(first) >= {"prompt", "response", "extracted", "gold", "correct", "prompt_tokens",
                          "response_tokens", "finish_reason", "grader_timeout"}
    assert "Be brief." in first["prompt"] and first["prompt"].endswith("<|im_start|>assistant\n")
    assert all(1 <= r["response_tokens"] <= 12 for r in records)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["metrics"]["pass@1"] == saved["accuracy"]
    assert saved["protocol"]["decoding"]["max_new_tokens"] == 12
    assert saved["protocol"]["grader"]["version"] == "0.9.0"
    assert saved["versions"]["transformers"] and saved["dataset"]["rows"] == 20
    assert not (out / "generations.partial.jsonl").exists()


def test_graded_records_use_the_grader(tiny, tmp_path):
    """A scripted engine (the only non-model part) proves grading and counts end up in metrics."""
    class Scripted:
        tokenizer = ScriptedTokenizer()

        def generate(self, prompts, decoding, item_seeds):
            return [[evaluate.Completion(text=f"so \\boxed{{{answer}}}", prompt_tokens=3,
                                         response_tokens=4, finish_reason="stop")
                     for answer in ("0", "x", "0", "y")[: decoding["n"]]] for _ in prompts]

    out = tmp_path
    result = evaluate.run_evaluation(_spec(temperature=1.0, n=4), tiny["manifest"], tiny["data"],
                                     out / "metrics.json", out / "generations.jsonl", engine=Scripted())
    records = _lines(out / "generations.jsonl")
    assert [r["extracted"] for r in records[:4]] == ["0", "x", "0", "y"]
    assert all(r["correct"] == (r["extracted"] == r["gold"]) for r in records)
    assert result["counts"]["correct"] == sum(r["correct"] for r in records)
    assert result["counts"]["samples"] == 80 and "maj@4" in result["metrics"]


def test_resume_after_kill_equals_uninterrupted_run(tiny, tmp_path):
    """SIGKILL the real CLI mid-run, restart it, and compare with an uninterrupted run."""
    spec = _spec(temperature=1.0, n=2, max_new_tokens=24)
    reference = tmp_path / "reference"
    reference.mkdir()
    evaluate.run_evaluation(spec, tiny["manifest"], tiny["data"], reference / "metrics.json",
                            reference / "generations.jsonl")

    out = tmp_path / "resumed"
    out.mkdir()
    partial = out / "generations.partial.jsonl"
    command = [sys.executable, "-m", "pipelines.evaluate", "--spec", json.dumps(spec),
               "--model-manifest", str(tiny["root"] / "model.json"), "--data", str(tiny["data"]),
               "--metrics", str(out / "metrics.json"), "--generations", str(out / "generations.jsonl")]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) >= 16:  # one chunk of 8 x 2
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.exists() and not (out / "metrics.json").exists()
    with open(partial, "a") as handle:  # a torn write, as a kill during write would leave
        handle.write('{"index": 19, "sample": 0, "chu')
    kept_before = len([l for l in partial.read_text().splitlines() if l.endswith("}")])

    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    resumed = _lines(out / "generations.jsonl")
    expected = _lines(reference / "generations.jsonl")
    key = lambda r: (r["index"], r["sample"])  # noqa: E731
    assert len(resumed) == len(expected) == 40
    assert len({key(r) for r in resumed}) == 40  # no duplicate, nothing lost
    assert sorted(resumed, key=key) == sorted(expected, key=key)  # same samples as uninterrupted
    assert kept_before >= 16
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == \
        json.loads((reference / "metrics.json").read_text())["accuracy"]


def test_partial_file_of_another_protocol_is_set_aside_not_reused(tiny, tmp_path):
    store = evaluate.GenerationStore(tmp_path / "generations.jsonl", "old-fingerprint")
    store.start()
    store.append_chunk([{"index": 0, "sample": 0, "chunk": 0}])
    evaluate.run_evaluation(_spec(), tiny["manifest"], tiny["data"], tmp_path / "metrics.json",
                            tmp_path / "generations.jsonl")
    assert len(_lines(tmp_path / "generations.jsonl")) == 20
    stale = list(tmp_path.glob("generations.partial.jsonl.stale-*"))
    assert len(stale) == 1 and _lines(stale[0]) == [{"index": 0, "sample": 0, "chunk": 0}]


def test_vllm_adapter_maps_the_protocol(monkeypatch):
    """vLLM needs a GPU; a stand-in module records what our adapter asks of its API."""
    calls = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def get_tokenizer(self):
            return ScriptedTokenizer()

        def generate(self, prompts, params, use_tqdm):
            calls["params"] = params
            output = types.SimpleNamespace(text="\\boxed{1}", token_ids=[1, 2, 3], finish_reason="length")
            return [types.SimpleNamespace(prompt_token_ids=[0] * 5, outputs=[output] * p.n)
                    for p in params]

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    spec = {**_spec(temperature=0.6, n=2, stop=["</s>"]), "engine": "vllm", "gpus": 4, "dtype": "bfloat16"}
    engine = evaluate.make_engine(spec, "/models/x", threads=None)
    assert calls["init"] == {"model": "/models/x", "dtype": "bfloat16", "seed": 0, "tensor_parallel_size": 4}
    results = engine.generate(["a", "b"], spec["decoding"], [10, 11])
    assert [p.seed for p in calls["params"]] == [10, 11]
    assert calls["params"][0].__dict__ == {"n": 2, "temperature": 0.6, "top_p": 1.0, "top_k": 0, "min_p": 0.0,
                                           "repetition_penalty": 1.0, "max_tokens": 12, "stop": ["</s>"],
                                           "seed": 10}
    spec["decoding"]["top_k"] = 20
    engine.generate(["a"], spec["decoding"], [0])
    assert calls["params"][0].top_k == 20
    assert results[1][1] == evaluate.Completion("\\boxed{1}", 5, 3, "length")


def test_vllm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(evaluate.EvalError, match="vllm is not installed"):
        evaluate.make_engine({**_spec(), "engine": "vllm"}, "/models/x", threads=None)


class AnswerScript:
    """A scripted engine (the only non-model part) answering from the benchmark's own golds:
    item i gets [gold, 2*gold/2 written as a fraction, wrong, no box] if i is even and
    [gold, wrong, wrong, no box] if odd, so every metric has a known value."""

    tokenizer = ScriptedTokenizer()

    def __init__(self, golds, tag="A", fail_after_chunks=None):
        self.golds, self.tag, self.fail_after_chunks = golds, tag, fail_after_chunks
        self.next_item, self.calls = 0, 0

    def generate(self, prompts, decoding, item_seeds):
        if self.fail_after_chunks is not None and self.calls >= self.fail_after_chunks:
            raise RuntimeError("engine crashed")
        self.calls += 1
        results = []
        for _ in prompts:
            index, gold = self.next_item, self.golds[self.next_item]
            self.next_item += 1
            same = f"\\frac{{2 \\cdot ({gold})}}{{2}}" if index % 2 == 0 else "999"
            texts = [f"{self.tag}: \\boxed{{{gold}}}", f"{self.tag}: \\boxed{{{same}}}",
                     f"{self.tag}: \\boxed{{999}}", f"{self.tag}: no answer"]
            results.append([evaluate.Completion(t, 3, 4, "stop") for t in texts[:decoding["n"]]])
        return results


def _golds(tiny):
    from pipelines.data import read_canonical

    return [row["reward_model"]["ground_truth"] for row in read_canonical(tiny["data"])]


def test_metrics_from_scripted_answers_some_right(tiny, tmp_path):
    """Accuracy, counts, pass@k and maj@n against values computed by hand (a grader or metric
    that marks every answer wrong, or finds no majority, fails here)."""
    result = evaluate.run_evaluation(_spec(temperature=1.0, n=4), tiny["manifest"], tiny["data"],
                                     tmp_path / "metrics.json", tmp_path / "generations.jsonl",
                                     engine=AnswerScript(_golds(tiny)))
    records = _lines(tmp_path / "generations.jsonl")
    assert [r["correct"] for r in records[:8]] == [True, True, False, False, True, False, False, False]
    assert result["counts"]["correct"] == 10 * 2 + 10 * 1 and result["counts"]["no_answer"] == 20
    assert result["accuracy"] == pytest.approx(30 / 80) and result["metrics"]["mean@4"] == pytest.approx(30 / 80)
    assert result["metrics"]["maj@4"] == pytest.approx(0.5)  # even items: gold twice (as 7 and 14/2)
    assert result["metrics"]["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert result["metrics"]["pass@1"] == pytest.approx(30 / 80)


def test_resume_reuses_finished_chunks(tiny, tmp_path):
    """A crashed run leaves chunk 0; the rerun generates only chunks 1-2 and keeps chunk 0's
    records (an evaluation that silently started over would regenerate them)."""
    golds = _golds(tiny)
    spec = _spec(temperature=1.0, n=4)
    crashed = AnswerScript(golds, tag="first", fail_after_chunks=1)
    with pytest.raises(RuntimeError, match="engine crashed"):
        evaluate.run_evaluation(spec, tiny["manifest"], tiny["data"], tmp_path / "metrics.json",
                                tmp_path / "generations.jsonl", engine=crashed)
    assert len(_lines(tmp_path / "generations.partial.jsonl")) == 8 * 4
    rerun = AnswerScript(golds, tag="second")
    rerun.next_item = 8  # it is asked for items 8.. only
    result = evaluate.run_evaluation(spec, tiny["manifest"], tiny["data"], tmp_path / "metrics.json",
                                     tmp_path / "generations.jsonl", engine=rerun)
    records = _lines(tmp_path / "generations.jsonl")
    assert rerun.calls == 2 and rerun.next_item == 20
    assert {r["response"].split(":")[0] for r in records if r["chunk"] == 0} == {"first"}
    assert {r["response"].split(":")[0] for r in records if r["chunk"] > 0} == {"second"}
    assert result["counts"]["correct"] == 30 and result["metrics"]["maj@4"] == pytest.approx(0.5)


def test_grader_timeouts_are_recorded_in_records_and_metrics(tiny, tmp_path):
    class Stuck:
        tokenizer = ScriptedTokenizer()

        def generate(self, prompts, decoding, item_seeds):
            return [[evaluate.Completion("\\boxed{(10^{10^{10}})!}" if i == 0 else "\\boxed{1}", 3, 4, "stop")]
                    for i, _ in enumerate(prompts)]

    spec = {**_spec(), "grading": {"timeout_seconds": 1, "workers": 1}}
    result = evaluate.run_evaluation(spec, tiny["manifest"], tiny["data"], tmp_path / "metrics.json",
                                     tmp_path / "generations.jsonl", engine=Stuck())
    records = _lines(tmp_path / "generations.jsonl")
    stuck = [r for r in records if r["grader_timeout"]]
    assert [r["index"] for r in stuck] == [0, 8, 16]  # the first item of each chunk of 8
    assert not any(r["correct"] for r in stuck)
    assert result["counts"]["grader_timeouts"] == 3


def test_hf_sampling_uses_exactly_the_protocols_logits_processors(tiny, monkeypatch, tmp_path):
    """transformers fills unset knobs from its defaults (top_k=50) and the model's
    generation_config: the processors generate really applies must be the protocol's only."""
    import shutil

    from transformers.generation.utils import GenerationMixin

    model_dir = tmp_path / "model"
    shutil.copytree(tiny["manifest"]["path"], model_dir)
    config_file = model_dir / "generation_config.json"
    shipped = json.loads(config_file.read_text()) if config_file.exists() else {}
    # What Qwen2.5-Math ships: sampling defaults the protocol must not inherit.
    config_file.write_text(json.dumps({**shipped, "top_k": 20, "top_p": 0.8, "temperature": 0.7,
                                       "repetition_penalty": 1.05, "min_p": 0.1}))

    seen = []
    original = GenerationMixin._get_logits_processor

    def spy(self, *args, **kwargs):
        processors = original(self, *args, **kwargs)
        seen.append(sorted(type(p).__name__ for p in processors))
        return processors

    monkeypatch.setattr(GenerationMixin, "_get_logits_processor", spy)
    engine = evaluate.HFEngine(str(model_dir), "float32")
    decoding = _spec()["decoding"]
    engine.generate(["1+1="], {**decoding, "temperature": 1.0}, [0])
    engine.generate(["1+1="], {**decoding, "temperature": 0.6, "top_p": 0.95}, [0])
    engine.generate(["1+1="], {**decoding, "temperature": 0.6, "top_p": 0.95, "top_k": 20}, [0])
    engine.generate(["1+1="], decoding, [0])
    assert seen == [[], ["TemperatureLogitsWarper", "TopPLogitsWarper"],
                    ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"], []]


def test_a_batched_prompt_generates_what_it_generates_alone(tiny):
    """Left padding must not change a greedy generation."""
    engine = evaluate.HFEngine(tiny["manifest"]["path"], "float32")
    decoding = {**_spec()["decoding"], "max_new_tokens": 16}
    prompts = ["What is 8 + 8?", "Compute $2 \\times 5$ and explain the steps in detail please.", "1"]
    batched = engine.generate(prompts, decoding, [0] * 3)
    for prompt, together in zip(prompts, batched):
        alone = engine.generate([prompt], decoding, [0])[0]
        assert alone[0].text == together[0].text and alone[0].response_tokens == together[0].response_tokens
