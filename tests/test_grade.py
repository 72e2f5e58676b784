"""Grading: one generation file x one grader -> grades.jsonl + metrics.json with intervals.

Generations come from the real generate stage (scripted engines where a known answer is needed);
the graders are real (math-verify, the authors' rules, a judge behind a real local HTTP server or
a tiny offline model)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from pipelines import generate, grade
from pipelines.generate import Completion
from tests.conftest import AnswerScript, ScriptedTokenizer, benchmark_golds, read_jsonl
from tests.job_specs import generate_spec, llm_judge_settings


def _generation_spec(**decoding) -> dict:
    return generate_spec(None, **decoding)


def _grade_spec(grader: str = "math-verify", timeout_seconds: float = 5, judge: dict | None = None) -> dict:
    spec = {"name": grader, "timeout_seconds": timeout_seconds, "math_verify": "0.9.0"}
    if judge is not None:
        spec["judge"] = judge
    return {
        "model": "tiny",
        "method": "base",
        "benchmark": "bench",
        "protocol_name": "p",
        "grader": spec,
        "pass_at_k": [1, 2],
        "workers": 1,
        "gpus": 0,
        "bootstrap": {"samples": 500, "seed": 0},
    }


def _generate(tiny, out: Path, engine, **decoding) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    generate.run_generation(
        _generation_spec(**decoding),
        tiny["manifest"],
        tiny["data"],
        out / "generations.jsonl",
        out / "generation.json",
        engine=engine,
    )
    return out


def _grade(out: Path, grader: str = "math-verify", **kwargs) -> dict:
    judge = kwargs.pop("judge_engine", None)
    folder = out / grader
    folder.mkdir(exist_ok=True)
    return grade.run_grading(
        _grade_spec(grader, **kwargs),
        out / "generations.jsonl",
        out / "generation.json",
        folder / "grades.jsonl",
        folder / "metrics.json",
        judge=judge,
    )


class Replies:
    """An engine whose every item gets the same scripted responses."""

    tokenizer = ScriptedTokenizer()

    def __init__(self, *responses: str):
        self.responses = responses

    def generate(self, prompts, decoding, item_seeds):
        return [[Completion(text, 3, 4, "stop") for text in self.responses[: decoding["n"]]] for _ in prompts]


def test_metrics_from_scripted_answers_some_right(tiny, tmp_path):
    """Accuracy, counts, pass@k and maj@n against values computed by hand (a grader or metric
    that marks every answer wrong, or finds no majority, fails here)."""
    out = _generate(tiny, tmp_path, AnswerScript(benchmark_golds(tiny)), temperature=1.0, n=4)
    result = _grade(out)
    verdicts = read_jsonl(out / "math-verify" / "grades.jsonl")
    assert [v["correct"] for v in verdicts[:8]] == [True, True, False, False, True, False, False, False]
    assert result["counts"]["correct"] == 10 * 2 + 10 * 1 and result["counts"]["no_answer"] == 20
    assert result["accuracy"] == pytest.approx(30 / 80) and result["metrics"]["mean@4"] == pytest.approx(30 / 80)
    assert result["metrics"]["maj@4"] == pytest.approx(0.5)  # even items: gold twice (as 7 and 14/2)
    assert result["metrics"]["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert result["per_item"]["correct"][:2] == [2, 1]
    saved = json.loads((out / "math-verify" / "metrics.json").read_text())
    assert saved["protocol"]["grader"]["name"] == "math-verify" and saved["protocol"]["name"] == "p"
    assert saved["generation"]["sha256"] == json.loads((out / "generation.json").read_text())["generations_sha256"]


def test_every_metric_has_an_interval_that_contains_it(tiny, tmp_path):
    out = _generate(tiny, tmp_path, AnswerScript(benchmark_golds(tiny)), temperature=1.0, n=4)
    result = _grade(out)
    for name in ("accuracy", "mean@4", "maj@4", "pass@1", "pass@2"):
        low, high = result["uncertainty"][name]["ci95"]
        assert low <= result["metrics"][name] <= high, name
        assert result["uncertainty"][name]["se"] > 0
    # 20 questions at 37.5%: a binomial-scale standard error, not a per-sample one
    assert 0.03 < result["uncertainty"]["accuracy"]["se"] < 0.15


def test_the_same_generations_under_two_graders(tiny, tmp_path):
    """Gold 1.6 answered 1.63: wrong to math-verify, right to the authors' rounding; the grader
    that decided is recorded per sample."""
    out = _generate(tiny, tmp_path, Replies("so \\boxed{1.63}"))
    for record in read_jsonl(out / "generations.jsonl"):
        assert record["gold"]  # the benchmark's own golds; rewrite them to 1.6 for this test
    lines = [dict(r, gold="1.6") for r in read_jsonl(out / "generations.jsonl")]
    (out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(grade.GradeError, match="changed after generation"):
        _grade(out)
    record = json.loads((out / "generation.json").read_text())
    from pipelines.provenance import file_sha256

    record["generations_sha256"] = file_sha256(out / "generations.jsonl")
    (out / "generation.json").write_text(json.dumps(record))
    strict, authors = _grade(out, "math-verify"), _grade(out, "empo-rules")
    assert strict["accuracy"] == 0.0 and authors["accuracy"] == 1.0
    assert {v["decided_by"] for v in read_jsonl(out / "empo-rules" / "grades.jsonl")} == {"sympy"}
    assert authors["counts"]["decided_by"] == {"sympy": 20}


def test_grader_timeouts_are_recorded_in_grades_and_metrics(tiny, tmp_path):
    class Stuck(Replies):
        def generate(self, prompts, decoding, item_seeds):
            return [
                [Completion("\\boxed{(10^{10^{10}})!}" if i == 0 else "\\boxed{1}", 3, 4, "stop")]
                for i, _ in enumerate(prompts)
            ]

    out = _generate(tiny, tmp_path, Stuck())
    result = _grade(out, timeout_seconds=1)
    stuck = [v for v in read_jsonl(out / "math-verify" / "grades.jsonl") if v["grader_timeout"]]
    assert [v["index"] for v in stuck] == [0, 8, 16]  # the first item of each chunk of 8
    assert not any(v["correct"] for v in stuck)
    assert result["counts"]["grader_timeouts"] == 3


class JudgeServer:
    """A real OpenAI-compatible chat-completions endpoint on 127.0.0.1 replying from a script,
    recording each request (what the judge stage sends is asserted, not assumed)."""

    def __init__(self, reply):
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                payload = json.dumps({"choices": [{"message": {"content": reply(body)}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_llm_judge_is_asked_only_where_the_rules_say_wrong(tiny, tmp_path, monkeypatch):
    """Three answers per item: the gold (rules: right, never sent), 999 (rules: wrong; the judge
    says Correct), and y = 998 (the judge replies with something else: unparseable, wrong, counted;
    asked again about the part after "=", as the authors retry)."""
    golds = benchmark_golds(tiny)
    script = AnswerScript(golds)

    class ThreeAnswers(Replies):
        def generate(self, prompts, decoding, item_seeds):
            results = []
            for _ in prompts:
                gold = golds[script.next_item]
                script.next_item += 1
                results.append(
                    [
                        Completion(t, 3, 4, "stop")
                        for t in (f"\\boxed{{{gold}}}", "x = \\boxed{999}", "\\boxed{y = 998}")
                    ]
                )
            return results

    def reply(body):
        prompt = body["messages"][0]["content"]
        return "Correct" if 'Output sentence: """999"""' in prompt else "Maybe"

    server = JudgeServer(reply)
    monkeypatch.setenv("JUDGE_KEY", "secret")
    try:
        out = _generate(tiny, tmp_path, ThreeAnswers(), temperature=1.0, n=3)
        judge_settings = {
            "model": "xverify-test",
            "revision": None,
            "engine": "openai",
            "endpoint": server.url,
            "api_key_env": "JUDGE_KEY",
            "dtype": "auto",
            "max_new_tokens": 16,
            "batch_size": 4,
            "timeout_seconds": 30,
        }
        result = _grade(out, "llm-judge", judge=judge_settings)
    finally:
        server.close()
    sent = [r["body"]["messages"][0]["content"] for r in server.requests]
    asked = sorted({p.split('Output sentence: """')[1].split('"""')[0] for p in sent})
    assert asked == [" 998", "999", "y = 998"] and len(sent) == 20 * 3  # never the right answers
    assert all(r["auth"] == "Bearer secret" and r["path"] == "/v1/chat/completions" for r in server.requests)
    assert all(r["body"]["temperature"] == 0.0 and r["body"]["model"] == "xverify-test" for r in server.requests)
    assert 'Question: """' in sent[0] and 'Correct answer: """' in sent[0]
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["counts"]["judge_flipped_to_correct"] == 20 and result["counts"]["judge_unparseable"] == 40
    verdicts = read_jsonl(out / "llm-judge" / "grades.jsonl")
    assert {v["decided_by"] for v in verdicts} == {"mathd", "judge", "judge unparseable"}


def test_llm_judge_runs_a_model_built_offline_on_cpu(tiny, tmp_path):
    """The hf engine's code path end to end with a real (random, tiny) model: its replies are
    not verdicts, so every judged answer is counted unparseable and stays wrong."""
    out = _generate(tiny, tmp_path, Replies("\\boxed{999}"))
    settings = llm_judge_settings(tiny["manifest"]["path"])
    result = _grade(out, "llm-judge", judge=settings)
    assert result["counts"]["judged"] >= 20 and result["counts"]["judge_unparseable"] == result["counts"]["judged"]
    assert result["accuracy"] == 0.0
    assert all(len(v["judge_replies"]) >= 1 for v in read_jsonl(out / "llm-judge" / "grades.jsonl"))


def test_a_sampling_judge_sends_its_temperature_and_seed_and_repeats_its_verdicts(tiny):
    """llm_judge.temperature (the authors' 0.1): the server gets it with a fixed seed; the hf
    engine samples with a fixed seed, so the same prompts give the same replies twice."""
    from pipelines import judge as judges

    server = JudgeServer(lambda body: "Correct")
    try:
        complete = judges.OpenAICompletion(server.url, "xverify-test", 4096, "NO_SUCH_KEY_ENV", 30, 2, temperature=0.1)
        assert complete(["a", "b"]) == ["Correct", "Correct"]
    finally:
        server.close()
    assert all(r["body"]["temperature"] == 0.1 and r["body"]["seed"] == judges.JUDGE_SEED for r in server.requests)
    assert all(r["body"]["max_tokens"] == 4096 for r in server.requests)
    sampled = judges.HFCompletion(tiny["manifest"]["path"], None, "float32", 12, temperature=1.0)
    prompts = ["Is 2 + 2 = 4?", "Is 3 > 5?"]
    first = sampled(prompts)
    assert sampled(prompts) == first
    greedy = judges.HFCompletion(tiny["manifest"]["path"], None, "float32", 12)
    assert greedy(prompts) == greedy(prompts) and greedy.temperature == 0.0
