"""The demo DAG on a real SLURM (one node, fake GPUs; workflow/scripts/local_slurm.sh):
real sbatch submissions, GPUs handed to GPU jobs, the same table as a local run, and a failing
job reported with its log, the workflow exiting, and a fixed rerun redoing nothing finished.

Run by `make test-slurm` (which starts and stops the daemons); skipped elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_workflow, mlflow_runs

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("EMPO_TEST_SLURM") != "1" or not shutil.which("sbatch"),
        reason="needs the local SLURM of `make test-slurm`",
    ),
]

BIN = Path(sys.executable).parent
GPU_OVERLAY = {"resources": {"generate": {"gpus": 1, "cpus": 1, "mem_mb": 2000, "runtime": 30}}}


def _workdir(destination: Path) -> Path:
    """The demo with one protocol, one grader, a shorter warm start and fewer RL steps (SLURM
    mechanics, not every block of the table nor the demo's effect: 16 jobs instead of 25, minutes
    less), and an overlay that gives generation jobs a GPU."""
    copy_workflow(destination)
    demo = yaml.safe_load((destination / "config" / "demo.yaml").read_text())
    demo["evaluation"]["protocols"] = {"greedy": {"temperature": 0.0, "n": 1}}
    demo["evaluation"]["graders"] = ["math-verify"]
    demo["models"]["tiny-qwen2"]["source"].update(warm_start_steps=200, noisy_steps=20)
    demo["training"]["defaults"].update(max_steps=8, save_steps=4)
    demo["training"]["defaults"]["validation"]["every_steps"] = 4
    (destination / "config" / "demo.yaml").write_text(yaml.safe_dump(demo, sort_keys=False))
    (destination / "config" / "gpu-overlay.yaml").write_text(yaml.safe_dump(GPU_OVERLAY))
    return destination


def _snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [str(BIN / "snakemake"), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


def _cells(workdir: Path) -> dict:
    table = json.loads((workdir / "results" / "demo" / "table.json").read_text())
    return {
        (block["grader"], block["protocol"], row["method"], benchmark): cell["value"]
        for block in table["blocks"]
        for row in block["rows"]
        for benchmark, cell in row["cells"].items()
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    workdir = _workdir(tmp_path_factory.mktemp("local"))
    result = _snakemake(workdir, "--cores", "2", "--configfile", "config/demo.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_demo_runs_under_slurm_with_gpus_and_matches_a_local_run(local_run, tmp_path):
    workdir = _workdir(tmp_path)
    result = _snakemake(
        workdir, "--profile", "profiles/slurm-test", "--configfile", "config/demo.yaml", "config/gpu-overlay.yaml"
    )
    assert result.returncode == 0, result.stderr[-6000:]
    records = list((workdir / "results" / "demo" / "eval").glob("*/*/*/*/generation.json"))
    grades = list((workdir / "results" / "demo" / "eval").glob("*/*/*/*/*/metrics.json"))
    assert len(records) == 3 and len(grades) == 3
    for path in records:
        runtime = json.loads(path.read_text())["runtime"]
        assert runtime["slurm_job_id"], f"{path} did not run as a SLURM job"
        assert runtime["cuda_visible_devices"] in {"0", "1"}, f"{path} got no GPU"
    for path in grades:
        assert json.loads(path.read_text())["runtime"]["slurm_job_id"], f"{path} did not run as a SLURM job"
    slurm_logs = list((workdir / "results" / "logs" / "slurm").rglob("*.log"))
    assert (
        len(slurm_logs) >= 13
    )  # 4 data + 1 model + 2 train + 3 generate (one per model job) + 3 grade jobs, logs kept
    assert _cells(workdir) == _cells(local_run)
    # each SLURM job found the tracking spec (EMPO_TRACKING_SPEC, set where Snakemake reads the
    # Snakefile again on the node) and logged its own MLflow run
    stages = [run["tags"].get("pipeline.stage") for run in mlflow_runs(workdir)]
    assert stages.count("generate") == 3 and stages.count("grade") == 3 and stages.count("train") == 2, stages


def test_failing_job_is_reported_and_a_fixed_rerun_redoes_nothing(tmp_path):
    workdir = _workdir(tmp_path)
    # a file that exists (a missing one fails validation, before any job) but that its job refuses
    (workdir / "config" / "demo_data" / "empty.jsonl").write_text("")
    broken = {"datasets": {"add_test": {"source": {"kind": "file", "path": "config/demo_data/empty.jsonl"}}}}
    (workdir / "config" / "broken.yaml").write_text(yaml.safe_dump(broken))
    failed = _snakemake(
        workdir,
        "--profile",
        "profiles/slurm-test",
        "--configfile",
        "config/demo.yaml",
        "config/broken.yaml",
        timeout=600,
    )
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "results/demo/logs/data/add_test.log" in output
    assert (
        "dataset file config/demo_data/empty.jsonl is empty"
        in (workdir / "results" / "demo" / "logs" / "data" / "add_test.log").read_text()
    )
    finished = {
        path: path.stat().st_mtime_ns
        for path in (workdir / "results").rglob("*")
        if path.is_file() and path.suffix in {".parquet", ".json"} and "mlflow" not in path.parts
    }
    assert any(path.name == "add_train.parquet" for path in finished)

    fixed = _snakemake(workdir, "--profile", "profiles/slurm-test", "--configfile", "config/demo.yaml")
    assert fixed.returncode == 0, fixed.stderr[-6000:]
    assert (workdir / "results" / "demo" / "table.md").is_file()
    redone = [str(path) for path, mtime in finished.items() if path.stat().st_mtime_ns != mtime]
    assert not redone, f"finished outputs were produced again: {redone}"
