"""Generation: prompts, engines, resumable generations, generation.json — on a real tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import generate
from pipelines.provenance import file_sha256
from tests.conftest import REPO_ROOT, AnswerScript, ScriptedTokenizer, benchmark_golds, read_jsonl
from tests.job_specs import generate_spec


def _spec(**decoding) -> dict:
    return generate_spec("Be brief.", **decoding)


def test_render_prompt_formats():
    messages = [{"role": "user", "content": "What is 2+2?"}]
    tokenizer = ScriptedTokenizer()
    assert generate.render_prompt(messages, tokenizer, {"format": "plain", "system_prompt": None}) == "What is 2+2?"
    assert (
        generate.render_prompt(messages, tokenizer, {"format": "chat", "system_prompt": None})
        == "user:What is 2+2?|assistant:"
    )
    assert (
        generate.render_prompt(messages, tokenizer, {"format": "chat", "system_prompt": "S"})
        == "system:S|user:What is 2+2?|assistant:"
    )
    tokenizer.chat_template = None
    with pytest.raises(generate.GenerationError, match="prompt.format: plain"):
        generate.render_prompt(messages, tokenizer, {"format": "chat", "system_prompt": None})


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert generate.cut_at_stop("a</s>b\n\nc", ["\n\n", "</s>"]) == ("a", True)
    assert generate.cut_at_stop("abc", ["x"]) == ("abc", False)


def test_greedy_generation_writes_generations_and_record(tiny, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    result = generate.run_generation(
        _spec(), tiny["manifest"], tiny["data"], out / "generations.jsonl", out / "generation.json"
    )
    records = read_jsonl(out / "generations.jsonl")
    assert len(records) == 20 and sorted(r["index"] for r in records) == list(range(20))
    first = records[0]
    assert set(first) >= {"question", "prompt", "response", "gold", "prompt_tokens", "response_tokens", "finish_reason"}
    assert "correct" not in first  # grading is its own stage
    assert "Be brief." in first["prompt"] and first["prompt"].endswith("<|im_start|>assistant\n")
    assert first["question"] in first["prompt"]
    assert all(1 <= r["response_tokens"] <= 12 for r in records)
    saved = json.loads((out / "generation.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["protocol"]["decoding"]["max_new_tokens"] == 12 and saved["protocol"]["name"] == "p"
    assert saved["generations_sha256"] == file_sha256(out / "generations.jsonl")
    assert saved["versions"]["transformers"] and saved["dataset"]["rows"] == 20
    assert saved["counts"]["samples"] == 20
    assert not (out / "generations.partial.jsonl").exists() and not (out / "generation.json.tmp").exists()


def test_resume_after_kill_equals_uninterrupted_run(tiny, tmp_path):
    """SIGKILL the real CLI mid-run, restart it, and compare with an uninterrupted run."""
    spec = _spec(temperature=1.0, n=2, max_new_tokens=24)
    reference = tmp_path / "reference"
    reference.mkdir()
    generate.run_generation(
        spec, tiny["manifest"], tiny["data"], reference / "generations.jsonl", reference / "generation.json"
    )

    out = tmp_path / "resumed"
    out.mkdir()
    partial = out / "generations.partial.jsonl"
    command = [
        sys.executable,
        "-m",
        "pipelines.generate",
        "--spec",
        json.dumps(spec),
        "--model-manifest",
        str(tiny["root"] / "model.json"),
        "--data",
        str(tiny["data"]),
        "--record",
        str(out / "generation.json"),
        "--generations",
        str(out / "generations.jsonl"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) >= 16:  # one chunk of 8 x 2
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.exists() and not (out / "generation.json").exists()
    with open(partial, "a") as handle:  # a torn write, as a kill during write would leave
        handle.write('{"index": 19, "sample": 0, "chu')
    kept_before = len([line for line in partial.read_text().splitlines() if line.endswith("}")])

    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    resumed = read_jsonl(out / "generations.jsonl")
    expected = read_jsonl(reference / "generations.jsonl")
    key = lambda r: (r["index"], r["sample"])  # noqa: E731
    assert len(resumed) == len(expected) == 40
    assert len({key(r) for r in resumed}) == 40  # no duplicate, nothing lost
    assert sorted(resumed, key=key) == sorted(expected, key=key)  # same samples as uninterrupted
    assert kept_before >= 16
    assert (
        json.loads((out / "generation.json").read_text())["generations_sha256"]
        == json.loads((reference / "generation.json").read_text())["generations_sha256"]
    )


def test_partial_file_of_another_protocol_is_set_aside_not_reused(tiny, tmp_path):
    store = generate.GenerationStore(tmp_path / "generations.jsonl", "old-fingerprint")
    store.start()
    store.append_chunk([{"index": 0, "sample": 0, "chunk": 0}])
    generate.run_generation(
        _spec(), tiny["manifest"], tiny["data"], tmp_path / "generations.jsonl", tmp_path / "generation.json"
    )
    assert len(read_jsonl(tmp_path / "generations.jsonl")) == 20
    stale = list(tmp_path.glob("generations.partial.jsonl.stale-*"))
    assert len(stale) == 1 and read_jsonl(stale[0]) == [{"index": 0, "sample": 0, "chunk": 0}]


def test_vllm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(generate.GenerationError, match="vllm is not installed"):
        generate.make_engine({**_spec(), "engine": "vllm"}, "/models/x", threads=None)


def test_resume_reuses_finished_chunks(tiny, tmp_path):
    """A crashed run leaves chunk 0; the rerun generates only chunks 1-2 and keeps chunk 0's
    records (a generation that silently started over would regenerate them)."""
    golds = benchmark_golds(tiny)
    spec = _spec(temperature=1.0, n=4)
    crashed = AnswerScript(golds, tag="first", fail_after_chunks=1)
    with pytest.raises(RuntimeError, match="engine crashed"):
        generate.run_generation(
            spec,
            tiny["manifest"],
            tiny["data"],
            tmp_path / "generations.jsonl",
            tmp_path / "generation.json",
            engine=crashed,
        )
    assert len(read_jsonl(tmp_path / "generations.partial.jsonl")) == 8 * 4
    rerun = AnswerScript(golds, tag="second")
    rerun.next_item = 8  # it is asked for items 8.. only
    result = generate.run_generation(
        spec, tiny["manifest"], tiny["data"], tmp_path / "generations.jsonl", tmp_path / "generation.json", engine=rerun
    )
    records = read_jsonl(tmp_path / "generations.jsonl")
    assert rerun.calls == 2 and rerun.next_item == 20
    assert {r["response"].split(":")[0] for r in records if r["chunk"] == 0} == {"first"}
    assert {r["response"].split(":")[0] for r in records if r["chunk"] > 0} == {"second"}
    assert result["counts"]["samples"] == 80


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
    config_file.write_text(
        json.dumps({**shipped, "top_k": 20, "top_p": 0.8, "temperature": 0.7, "repetition_penalty": 1.05, "min_p": 0.1})
    )

    seen = []
    original = GenerationMixin._get_logits_processor

    def spy(self, *args, **kwargs):
        processors = original(self, *args, **kwargs)
        seen.append(sorted(type(p).__name__ for p in processors))
        return processors

    monkeypatch.setattr(GenerationMixin, "_get_logits_processor", spy)
    engine = generate.HFEngine(str(model_dir), "float32")
    decoding = _spec()["decoding"]
    engine.generate(["1+1="], {**decoding, "temperature": 1.0}, [0])
    engine.generate(["1+1="], {**decoding, "temperature": 0.6, "top_p": 0.95}, [0])
    engine.generate(["1+1="], {**decoding, "temperature": 0.6, "top_p": 0.95, "top_k": 20}, [0])
    engine.generate(["1+1="], decoding, [0])
    assert seen == [
        [],
        ["TemperatureLogitsWarper", "TopPLogitsWarper"],
        ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"],
        [],
    ]


def test_a_batched_prompt_generates_what_it_generates_alone(tiny):
    """Left padding must not change a greedy generation."""
    engine = generate.HFEngine(tiny["manifest"]["path"], "float32")
    decoding = {**_spec()["decoding"], "max_new_tokens": 16}
    prompts = ["What is 8 + 8?", "Compute $2 \\times 5$ and explain the steps in detail please.", "1"]
    batched = engine.generate(prompts, decoding, [0] * 3)
    for prompt, together in zip(prompts, batched):
        alone = engine.generate([prompt], decoding, [0])[0]
        assert alone[0].text == together[0].text and alone[0].response_tokens == together[0].response_tokens


def _model_jobs(tiny, out) -> list[dict]:
    """Two evaluations of one model: greedy and sampled, as a model job's spec lists them."""
    jobs = []
    for name, decoding in (("greedy", {}), ("sample2", {"temperature": 1.0, "n": 2, "max_new_tokens": 16})):
        spec = {**_spec(**decoding), "protocol_name": name}
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append(
            {
                "spec": spec,
                "data": str(tiny["data"]),
                "generations": str(folder / "generations.jsonl"),
                "record": str(folder / "generation.json"),
            }
        )
    return jobs


def _without_run_facts(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in {"finished_at", "duration_seconds", "mlflow_run_id"}}


def test_one_engine_for_a_models_evaluations_writes_what_one_job_each_writes(tiny, tmp_path):
    jobs = _model_jobs(tiny, tmp_path / "grouped")
    engines = generate.generate_evaluations(jobs, tiny["manifest"], None, None, threads=None)
    assert engines.loads == 1 and len(jobs) == 2
    for job in jobs:
        alone = tmp_path / "alone" / job["spec"]["protocol_name"]
        alone.mkdir(parents=True)
        generate.run_generation(
            job["spec"], tiny["manifest"], tiny["data"], alone / "generations.jsonl", alone / "generation.json"
        )
        assert Path(job["generations"]).read_bytes() == (alone / "generations.jsonl").read_bytes()
        assert _without_run_facts(json.loads(Path(job["record"]).read_text())) == _without_run_facts(
            json.loads((alone / "generation.json").read_text())
        )
        assert not list(Path(job["generations"]).parent.glob("*.partial*"))  # removed once all are written


def test_a_failed_model_job_keeps_the_evaluations_it_finished(tiny, tmp_path):
    jobs = _model_jobs(tiny, tmp_path)
    broken = [jobs[0], {**jobs[1], "data": str(tmp_path / "missing.parquet")}]
    with pytest.raises(FileNotFoundError, match="missing"):
        generate.generate_evaluations(broken, tiny["manifest"], None, None, threads=None)
    finished = Path(jobs[0]["generations"])
    expected = finished.read_bytes()
    finished.unlink()  # Snakemake deletes a failed job's outputs ...
    Path(jobs[0]["record"]).unlink()
    assert finished.with_name("generations.partial.jsonl").is_file()  # ... but not the resume file
    engines = generate.generate_evaluations([jobs[0]], tiny["manifest"], None, None, threads=None)
    assert engines.loads == 0, "a finished evaluation is not generated again"
    assert finished.read_bytes() == expected


def test_a_model_job_runs_the_evaluations_it_is_named_and_refuses_unknown_files(tiny, tmp_path):
    jobs = _model_jobs(tiny, tmp_path)
    spec = {"model": "tiny", "method": "base", "jobs": jobs}
    assert generate.selected_jobs(spec, [Path(jobs[1]["generations"])]) == [jobs[1]]
    assert generate.selected_jobs(spec, [Path(j["generations"]) for j in reversed(jobs)]) == jobs
    with pytest.raises(generate.GenerationError, match="no job of tiny/base in the spec writes .*other"):
        generate.selected_jobs(spec, [tmp_path / "other" / "generations.jsonl"])


def test_a_long_prompt_keeps_its_last_tokens_as_verls_left_truncation(tiny, tmp_path):
    """prompt.max_prompt_tokens (the authors' 1024): a longer model input keeps its last N tokens,
    given to the engine as ids; shorter ones are untouched; the records and counts say what was cut."""
    engine = generate.HFEngine(tiny["manifest"]["path"], "float32")
    tokenizer = engine.tokenizer
    text = "Compute $2 \\times 5$ and explain the steps in detail please."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert generate.left_truncated(text, tokenizer, None) == (text, 0)
    assert generate.left_truncated(text, tokenizer, len(ids)) == (text, 0)
    assert generate.left_truncated(text, tokenizer, 5) == (ids[-5:], len(ids) - 5)
    decoding = {**_spec()["decoding"], "max_new_tokens": 8}
    # the ids path generates what the text path does for the same tokens (with padding beside texts)
    assert [c[0].token_ids for c in engine.generate([ids, "1"], decoding, [0, 0])] == [
        c[0].token_ids for c in engine.generate([text, "1"], decoding, [0, 0])
    ]
    spec = _spec()
    spec["prompt"] = {**spec["prompt"], "max_prompt_tokens": 12}
    out = tmp_path / "cut"
    out.mkdir()
    result = generate.run_generation(spec, tiny["manifest"], tiny["data"], out / "generations.jsonl", out / "g.json")
    records = read_jsonl(out / "generations.jsonl")
    assert all(r["prompt_tokens"] <= 12 for r in records)
    assert result["counts"]["prompts_cut"] == sum(r["prompt_tokens_cut"] > 0 for r in records) > 0
    assert result["protocol"]["prompt"]["max_prompt_tokens"] == 12
    plain = generate.run_generation(_spec(), tiny["manifest"], tiny["data"], out / "p.jsonl", out / "p.json")
    assert "prompts_cut" not in plain["counts"] and "max_prompt_tokens" not in plain["protocol"]["prompt"]
