"""Conversion on a real verl checkpoint: verl's FSDP engine writes `global_step_N/actor` on CPU
(two gloo ranks, one real optimizer step), `pipelines.convert` merges it with
`verl.model_merger`, and the result loads in transformers with exactly the trained weights
(verl's merger writes bfloat16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import convert
from pipelines.train import verl_backend
from tests.conftest import REPO_ROOT
from tests.verl.conftest import tiny_base_model

pytest.importorskip("verl", reason="verl is not installed here; run `make test-verl`")


@pytest.fixture(scope="module")
def verl_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("verl")
    base = tiny_base_model(root / "base")
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_port=29531",
            str(REPO_ROOT / "tests" / "verl" / "cpu_checkpoint.py"),
            "--base",
            str(base),
            "--out",
            str(checkpoints),
            "--step",
            "2",
        ],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    return base, checkpoints


def test_verl_writes_what_the_backend_expects(verl_checkpoint):
    _, checkpoints = verl_checkpoint
    actor = checkpoints / "global_step_2" / "actor"
    assert sorted(p.name for p in actor.glob("model_world_size_2_rank_*.pt")) == [
        "model_world_size_2_rank_0.pt",
        "model_world_size_2_rank_1.pt",
    ]
    assert json.loads((actor / "fsdp_config.json").read_text())["world_size"] == 2
    assert verl_backend.saved_steps(checkpoints) == [2]
    assert verl_backend.latest_step(checkpoints) == 2
    assert verl_backend.choose_step(checkpoints, None) == 2
    with pytest.raises(FileNotFoundError, match="holds steps \\[2\\]"):
        verl_backend.choose_step(checkpoints, 192)


def test_conversion_gives_the_trained_weights(verl_checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, checkpoints = verl_checkpoint
    final = tmp_path / "hf"
    result = convert.convert_checkpoint(checkpoints, None, final, str(base))
    assert result["step"] == 2 and not (tmp_path / "hf.converting").exists()
    model = AutoModelForCausalLM.from_pretrained(final)
    reference = torch.load(checkpoints / "reference_state_dict.pt")
    untrained = AutoModelForCausalLM.from_pretrained(base).state_dict()
    state = model.state_dict()
    assert set(state) == set(reference)
    for name, tensor in state.items():
        assert torch.equal(tensor, reference[name].to(tensor.dtype)), name
    assert any(not torch.equal(state[n], untrained[n].to(state[n].dtype)) for n in state), "weights not trained"
    tokenizer = AutoTokenizer.from_pretrained(final)
    original = AutoTokenizer.from_pretrained(base)
    text = "so \\boxed{42}<|im_end|>"
    assert tokenizer.encode(text) == original.encode(text)


def test_convert_cli_writes_a_manifest_eval_can_use(verl_checkpoint, tmp_path):
    from pipelines import config as cfg
    from pipelines.models import read_manifest, validate_model_dir

    base, checkpoints = verl_checkpoint
    training = tmp_path / "training.json"
    training.write_text(
        json.dumps(
            {
                "checkpoint_dir": str(checkpoints),
                "base": {"kind": "local", "path": str(base)},
                "saved_steps": [2],
                "verl_version": verl_backend.VERL_VERSION,
                "mlflow_run_id": None,
            }
        )
    )
    spec = {"model": "tiny", "method": "empo", "step": 2, "train": {"trainer": {"reward": "empo"}}}
    output = tmp_path / "models" / "tiny" / "empo" / "model.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.convert",
            "--spec",
            cfg.to_json(spec),
            "--training",
            str(training),
            "--output",
            str(output),
        ],
        cwd=REPO_ROOT,
        check=True,
    )
    manifest = read_manifest(output)
    assert manifest["kind"] == "trained" and manifest["backend"] == "verl" and manifest["global_step"] == 2
    validate_model_dir(Path(manifest["path"]))
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.convert",
            "--spec",
            cfg.to_json({**spec, "step": 7}),
            "--training",
            str(training),
            "--output",
            str(tmp_path / "other.json"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "convert_step is 7" in bad.stderr
    assert not (tmp_path / "other.json").exists()
