"""The verl branch of the DAG with real Snakemake: demo data and model -> train_verl (our
launcher, the job's MLflow child run) -> convert (verl.model_merger) -> generate (transformers) -> grade ->
table. Only verl's GPU training loop is replaced, by tests/verl/standin_trainer.py, which
composes the launcher's overrides against verl's config and writes real verl checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("verl", reason="verl is not installed here; run `make test-verl`")

OVERLAY = """\
results_dir: results
models:
  tiny-qwen2:
    source: {warm_start_steps: 200, noisy_steps: 0}   # the verl branch, not the demo's effect: seconds
    methods: [base, empo]
training:
  defaults: {backend: verl, max_steps: 2, save_steps: 1, validation: null}
  verl:
    trainer_module: tests.verl.standin_trainer
    validation_benchmarks: [add_test]
    convert_step: 1
resources:
  train: {gpus: 1, nodes: 1, cpus: 2, mem_mb: 4000, runtime: 30}
"""


@pytest.mark.slow
def test_verl_train_convert_eval_with_real_snakemake(tmp_path):
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.exists():
        pytest.skip("snakemake is not in this environment")
    workdir = tmp_path / "work"
    shutil.copytree(
        REPO_ROOT,
        workdir,
        ignore=shutil.ignore_patterns(".venv*", "results", ".snakemake", ".git", "__pycache__", "*.egg-info"),
    )
    (workdir / "config" / "verl-test.yaml").write_text(OVERLAY)
    target = "results/eval/tiny-qwen2/empo/add_test/greedy/math-verify/metrics.json"
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(workdir),
    }
    result = subprocess.run(
        [str(snakemake), "--configfile", "config/demo.yaml", "config/verl-test.yaml", "--cores", "2", target],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    results = workdir / "results"
    training = json.loads((results / "train/tiny-qwen2/empo/training.json").read_text())
    assert training["saved_steps"] == [1, 2] and training["latest_step"] == 2
    assert any(o.startswith("trainer.total_training_steps=2") for o in training["overrides"])
    command = (results / "train/tiny-qwen2/empo/verl_command.txt").read_text()
    assert "-m tests.verl.standin_trainer" in command and "add_test.parquet" in command
    manifest = json.loads((results / "models/tiny-qwen2/empo/model.json").read_text())
    assert manifest["backend"] == "verl" and manifest["global_step"] == 1  # convert_step
    assert manifest["base"]["kind"] == "demo"
    metrics = json.loads((workdir / target).read_text())
    assert metrics["counts"]["items"] > 0
    with sqlite3.connect(results / "mlflow" / "mlflow.db") as db:
        runs = dict(db.execute("select name, status from runs").fetchall())
    assert runs["train:tiny-qwen2/empo"] == "FINISHED" and runs["convert:tiny-qwen2/empo"] == "FINISHED"
    # a changed convert_step reruns the conversion, generation and grading, never the training
    (workdir / "config" / "verl-test.yaml").write_text(OVERLAY.replace("convert_step: 1", "convert_step: 2"))
    plan = subprocess.run(
        [str(snakemake), "-n", "--configfile", "config/demo.yaml", "config/verl-test.yaml", "--cores", "2", target],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "rule convert:" in plan.stdout and "rule generate:" in plan.stdout and "rule grade:" in plan.stdout
    assert "rule train_verl:" not in plan.stdout
