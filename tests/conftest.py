"""Shared fixtures: paths of the repository and of the authors' real data (optional)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("EMPO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data" / "empo-math"))
BENCHMARK_FILES = {
    "math500": "math500.parquet",
    "minerva_math": "minerva_math.parquet",
    "olympiadbench": "olympiadbench.parquet",
    "aime24": "aime24_0726.parquet",
    "amc23": "amc23_1010.parquet",
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
