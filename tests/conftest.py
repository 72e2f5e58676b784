"""Shared fixtures: paths of the repository and of the authors' real data (optional)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
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
    return {"tracking_uri": "sqlite:///results/mlflow/mlflow.db", "artifact_root": "results/mlflow/artifacts",
            "experiment": "unit", "enabled": True, "results_dir": "results"}


@pytest.fixture
def shared_data() -> Path:
    """The authors' parquet files, when this machine has them (never committed)."""
    if not (SHARED_DATA / "math500.parquet").is_file():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def demo_config_path() -> Path:
    return REPO_ROOT / "config" / "demo.yaml"


@pytest.fixture(scope="session")
def train_setup(tmp_path_factory) -> dict:
    """A 64-prompt training set and a briefly warm-started demo model (shared by the training tests)."""
    from pipelines.data import prepare_dataset
    from pipelines.models import DemoModelSpec, build_demo_model, write_manifest

    root = tmp_path_factory.mktemp("train")
    data_spec = {"name": "arith_train", "role": "train", "format": "columns",
                 "source": {"kind": "file", "path": str(DEMO_DATA / "arith_train.jsonl")},
                 "columns": {"question": "problem", "answer": "answer"},
                 "instruction": "Put the final answer within \\boxed{}.", "limit": 64, "max_invalid_fraction": 0.01}
    prepare_dataset(data_spec, root / "train.parquet")
    rows = [json.loads(line) for line in (DEMO_DATA / "arith_train.jsonl").read_text().splitlines()][:64]
    manifest = build_demo_model(root / "base", [r["problem"] for r in rows],
                                DemoModelSpec(seed=0, warm_start_steps=60),
                                warm_start_examples=[(r["problem"], r["answer"]) for r in rows])
    write_manifest(manifest, root / "base.json")
    return {"root": root, "data": root / "train.parquet", "base": manifest}
