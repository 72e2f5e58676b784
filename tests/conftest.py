"""Shared fixtures: paths of the repository and of the authors' real data (optional)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Tracking services started by the tests' workflows exit soon after their last call (default: 30 min).
os.environ.setdefault("EMPO_TRACKING_SERVICE_IDLE_SECONDS", "15")
SHARED_DATA = Path(os.environ.get("EMPO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data" / "empo-math"))
DEMO_DATA = REPO_ROOT / "config" / "demo_data"
BENCHMARK_FILES = {
    "math500": "math500.parquet",
    "minerva_math": "minerva_math.parquet",
    "olympiadbench": "olympiadbench.parquet",
    "aime24": "aime24_0726.parquet",
    "amc23": "amc23_1010.parquet",
}


#: What a run of the workflow needs from the repository (the rest is results/).
WORKFLOW_FILES = ("Snakefile", "workflow", "pipelines", "config", "envs", "profiles")


def copy_workflow(destination: Path) -> Path:
    """A copy of the workflow to run real Snakemake in, isolated from this checkout's results/."""
    import shutil

    for name in WORKFLOW_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture
def tracking_config(tmp_path, monkeypatch) -> dict:
    """A fresh sqlite MLflow store under tmp_path (the working directory of the test)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return {
        "tracking_uri": "sqlite:///results/mlflow/mlflow.db",
        "artifact_root": "results/mlflow/artifacts",
        "experiment": "unit",
        "enabled": True,
        "results_dir": "results",
    }


@pytest.fixture
def shared_data() -> Path:
    """The authors' parquet files, when this machine has them (never committed)."""
    if not (SHARED_DATA / "math500.parquet").is_file():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def demo_config_path() -> Path:
    return REPO_ROOT / "config" / "demo.yaml"


def demo_file_dataset(name: str, role: str, instruction: str, limit: int, max_invalid: float) -> dict:
    """A data-stage spec reading `config/demo_data/<name>.jsonl` (problem/answer columns)."""
    return {
        "name": name,
        "role": role,
        "format": "columns",
        "source": {"kind": "file", "path": str(DEMO_DATA / f"{name}.jsonl")},
        "columns": {"question": "problem", "answer": "answer"},
        "instruction": instruction,
        "limit": limit,
        "max_invalid_fraction": max_invalid,
    }


@pytest.fixture(scope="session")
def train_setup(tmp_path_factory) -> dict:
    """A 64-prompt training set and a briefly warm-started demo model (shared by the training tests)."""
    from pipelines.data import prepare_dataset
    from pipelines.models import DemoModelSpec, build_demo_model, write_manifest

    root = tmp_path_factory.mktemp("train")
    prepare_dataset(
        demo_file_dataset("arith_train", "train", "Put the final answer within \\boxed{}.", limit=64, max_invalid=0.01),
        root / "train.parquet",
    )
    rows = [json.loads(line) for line in (DEMO_DATA / "arith_train.jsonl").read_text().splitlines()][:64]
    manifest = build_demo_model(
        root / "base",
        [r["problem"] for r in rows],
        DemoModelSpec(seed=0, warm_start_steps=60),
        warm_start_examples=[(r["problem"], r["answer"]) for r in rows],
    )
    write_manifest(manifest, root / "base.json")
    return {"root": root, "data": root / "train.parquet", "base": manifest}


# ----------------------------------------------------------------------------------------
# The evaluation stages' tests (test_generate, test_grade): a real tiny model and scripted engines.


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny demo model, its manifest, and a 20-item canonical benchmark."""
    from pipelines.data import prepare_dataset
    from pipelines.models import DemoModelSpec, build_demo_model, write_manifest

    root = tmp_path_factory.mktemp("tiny")
    corpus = [json.loads(line)["problem"] for line in (DEMO_DATA / "arith_train.jsonl").read_text().splitlines()]
    manifest = build_demo_model(root / "model", corpus, DemoModelSpec(seed=0))
    write_manifest(manifest, root / "model.json")
    spec = demo_file_dataset("arith_easy", "benchmark", "Put the answer in \\boxed{}.", limit=20, max_invalid=0.0)
    prepare_dataset({**spec, "name": "bench"}, root / "bench.parquet")
    return {"root": root, "manifest": manifest, "data": root / "bench.parquet"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class ScriptedTokenizer:
    chat_template = "scripted"

    def apply_chat_template(self, conversation, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "|".join(f"{m['role']}:{m['content']}" for m in conversation) + "|assistant:"


class AnswerScript:
    """A scripted engine (the only non-model part) answering from the benchmark's own golds:
    item i gets [gold, 2*gold/2 written as a fraction, wrong, no box] if i is even and
    [gold, wrong, wrong, no box] if odd, so every metric has a known value."""

    tokenizer = ScriptedTokenizer()

    def __init__(self, golds, tag="A", fail_after_chunks=None):
        self.golds, self.tag, self.fail_after_chunks = golds, tag, fail_after_chunks
        self.next_item, self.calls = 0, 0

    def generate(self, prompts, decoding, item_seeds):
        from pipelines.generate import Completion

        if self.fail_after_chunks is not None and self.calls >= self.fail_after_chunks:
            raise RuntimeError("engine crashed")
        self.calls += 1
        results = []
        for _ in prompts:
            index, gold = self.next_item, self.golds[self.next_item]
            self.next_item += 1
            same = f"\\frac{{2 \\cdot ({gold})}}{{2}}" if index % 2 == 0 else "999"
            texts = [
                f"{self.tag}: \\boxed{{{gold}}}",
                f"{self.tag}: \\boxed{{{same}}}",
                f"{self.tag}: \\boxed{{999}}",
                f"{self.tag}: no answer",
            ]
            results.append([Completion(t, 3, 4, "stop") for t in texts[: decoding["n"]]])
        return results


def benchmark_golds(tiny) -> list[str]:
    from pipelines.data import read_canonical

    return [row["reward_model"]["ground_truth"] for row in read_canonical(tiny["data"])]


def mlflow_runs(workdir: Path) -> list[dict]:
    """Every run of a workflow copy's MLflow store (`results/mlflow`), with its tags and metric names."""
    import sqlite3

    with sqlite3.connect(workdir / "results" / "mlflow" / "mlflow.db") as db:
        rows = db.execute("SELECT run_uuid, name, status FROM runs").fetchall()
        tags = db.execute("SELECT run_uuid, key, value FROM tags").fetchall()
        metrics = db.execute("SELECT run_uuid, key FROM latest_metrics").fetchall()
    runs = {
        uuid: {"id": uuid, "name": name, "status": status, "tags": {}, "metrics": set()} for uuid, name, status in rows
    }
    for uuid, key, value in tags:
        runs[uuid]["tags"][key] = value
    for uuid, key in metrics:
        runs[uuid]["metrics"].add(key)
    return list(runs.values())
