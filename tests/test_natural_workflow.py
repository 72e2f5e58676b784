"""The natural-reasoning track end to end on a CPU: the real `snakemake` trains EMPO with the
semantic judge (a tiny verifier built offline) on free-form questions, evaluates a
multiple-choice benchmark and grades it with the choice-letter rule; `config/natural.yaml`
plans both models with the judge-based rewards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_workflow
from tests.test_workflow import _planned, _snakemake

pytestmark = pytest.mark.slow

COLORS = ["red", "blue", "green", "yellow"]


def _write_data(workdir: Path) -> None:
    data = workdir / "data"
    data.mkdir()
    train = [{"question": f"Which colour is crate {i} painted?", "reference_answer": COLORS[i % 4]} for i in range(16)]
    (data / "free_form.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    bench = [{"question": f"Which colour is box {i}?", "options": COLORS, "answer": "ABCD"[i % 4]} for i in range(6)]
    (data / "choices.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench))


def _config(verifier: str) -> dict:
    return {
        "results_dir": "results",
        "mlflow": {"experiment": "natural-tiny"},
        "datasets": {
            "free_form": {
                "role": "train",
                "source": {"kind": "file", "path": "data/free_form.jsonl"},
                "format": "columns",
                "columns": {"question": "question", "answer": "reference_answer"},
                "template": "Question: {question} Reason step by step and put the answer in \\boxed{}.",
                "system_prompt": "Please reason step by step, and put your final answer within \\boxed{}.",
            },
            "choices": {
                "role": "benchmark",
                "source": {"kind": "file", "path": "data/choices.jsonl"},
                "format": "columns",
                "columns": {"question": "question", "answer": "answer", "options": "options"},
                "template": "Question: {question}\n Reason step by step and put the answer (A, B, C, or D) in \\boxed{}.\n",  # noqa: E501
            },
        },
        "models": {
            "tiny": {
                "source": {
                    "kind": "demo",
                    "corpus": "free_form",
                    "seed": 0,
                    "hidden_size": 64,
                    "num_layers": 2,
                    "warm_start_steps": 30,
                },
                "dtype": "float32",
                "methods": ["base", "empo"],
            }
        },
        "evaluation": {
            "engine": "hf",
            "benchmarks": ["choices"],
            "batch_size": 8,
            "decoding": {"temperature": 0.0, "max_new_tokens": 24, "stop": ["Question:"]},
            "graders": ["choice-letter"],
            "pass_at_k": [1],
        },
        "training": {
            "dataset": "free_form",
            "defaults": {
                "equivalence": "judge",
                "loss": "grpo",
                "learning_rate": 1.0e-4,
                "num_generations": 4,
                "prompts_per_step": 4,
                "mini_batch_prompts": 4,
                "max_steps": 2,
                "max_completion_length": 24,
                "save_steps": 2,
                "bf16": False,
            },
            "methods": {"empo": {"reward": "empo"}},
            "semantic_judge": {"model": verifier, "engine": "hf", "device": "cpu", "batch_size": 8},
        },
        "grading": {"timeout_seconds": 5, "workers": 1},
        "resources": {
            "data": {"gpus": 0, "cpus": 1, "mem_mb": 2000, "runtime": 10},
            "model": {"gpus": 0, "cpus": 1, "mem_mb": 2000, "runtime": 10},
            "train": {"gpus": 0, "cpus": 1, "mem_mb": 4000, "runtime": 30},
            "generate": {"gpus": 0, "cpus": 1, "mem_mb": 4000, "runtime": 30},
        },
    }


def test_a_tiny_free_form_task_trains_with_the_judge_and_grades_letters(tmp_path):
    from tests.tiny_models import build_tiny_qwen2

    workdir = copy_workflow(tmp_path)
    _write_data(workdir)
    verifier = build_tiny_qwen2(
        workdir / "verifier",
        attention_heads=2,
        kv_heads=1,
        max_length=1024,
        extra_corpus=("Assistant: Final Decision: Yes", "Assistant: Final Decision: No"),
    )
    (workdir / "config" / "tiny-natural.yaml").write_text(yaml.safe_dump(_config(verifier)))
    _snakemake(workdir, "--configfile", "config/tiny-natural.yaml")

    history = json.loads((workdir / "results/train/tiny/empo/log_history.json").read_text())
    steps = [entry for entry in history if "reward" in entry]
    assert len(steps) == 2 and all("group/judge_forward_passes" in entry for entry in steps)
    assert sum(entry["group/judge_pairs"] for entry in steps) > 0  # the judge was asked
    manifest = json.loads((workdir / "results/models/tiny/empo/model.json").read_text())
    assert manifest["trainer"]["equivalence"] == "judge" and manifest["semantic_judge"]["model"] == verifier

    records = [
        json.loads(line)
        for line in (workdir / "results/eval/tiny/empo/choices/main/generations.jsonl").read_text().splitlines()
    ]
    assert len(records) == 6 and all(r["options"] == COLORS for r in records)
    grades = json.loads((workdir / "results/eval/tiny/empo/choices/main/choice-letter/metrics.json").read_text())
    assert grades["grader"]["name"] == "choice-letter"
    table = (workdir / "results/table.md").read_text()
    assert "choice-letter" in table and "semantic judge" in table


def test_the_natural_config_plans_judge_training_and_both_benchmarks(tmp_path):
    workdir = copy_workflow(tmp_path)
    result = _snakemake(workdir, "-n", "--configfile", "config/natural.yaml")
    counts = _planned(result)
    assert (
        counts["train_trl"] == 4 and counts["generate"] == 6 and counts["grade"] == 12
    )  # one generate job per (model, method)
    from pipelines import config as cfg

    config = cfg.load_config([workdir / "config" / "natural.yaml"])
    for model, method in cfg.train_targets(config):
        spec = cfg.train_job_spec(config, model, method)
        assert spec["trainer"]["equivalence"] == "judge" and spec["trainer"]["backend"] == "trl"
        assert spec["semantic_judge"]["model"] == "TIGER-Lab/general-verifier"
    for model in ("qwen2.5-3b", "qwen2.5-7b"):
        for benchmark in ("mmlu_pro", "gpqa"):
            assert f"results/natural/eval/{model}/empo/{benchmark}/greedy/choice-letter/metrics.json" in result.stdout
