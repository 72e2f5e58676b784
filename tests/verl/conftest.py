"""Tests that need verl itself: run in the verl virtualenv (`make test-verl`).

In the main environment (no verl) every module here skips at import with that reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_qwen2


@pytest.fixture(scope="session")
def verl_config_dir() -> str:
    verl = pytest.importorskip("verl", reason="verl is not installed here; run `make test-verl`")
    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


@pytest.fixture(scope="session")
def compose_verl(verl_config_dir):
    """Compose verl's own `ppo_trainer` config with our overrides (struct mode: unknown keys fail)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def run(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=verl_config_dir, version_base=None):
            return compose(config_name="ppo_trainer", overrides=list(overrides))

    return run


def tiny_base_model(path: Path) -> Path:
    """A 0.14 M-parameter Qwen2 model (4 heads, 512-token vocabulary) and its tokenizer."""
    build_tiny_qwen2(path, attention_heads=4, kv_heads=2, max_length=256, vocab_size=512)
    return path
