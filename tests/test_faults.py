"""Faults a user meets (kills, changed settings, broken files and stores): each either gives
exactly what a fresh run gives or stops with an error naming what is wrong. The numbers refer
to the README's fault table; workflow-level cases (stale table, profile, a finished training
job rerun by Snakemake, a broken store under Snakemake) are in tests/test_workflow.py, and the
grader's digit groups (8) and sampling knobs (9) in tests/test_grading.py and tests/test_generate.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipelines import config as cfg
from pipelines import grading, tracking
from pipelines.data import DataError, prepare_dataset
from pipelines.train import checkpoints, trl_backend
from tests.conftest import REPO_ROOT
from tests.job_specs import trainer_settings

# The random reward ("spurious rewards" baseline) gives every group nonzero advantages, so two
# steps of a barely warmed-up model surely move the weights; the reward does not matter here.
TRAINER = trainer_settings(reward="random", loss="grpo", mini_batch_prompts=4, bf16=False)


def _train_spec(**trainer) -> dict:
    return {
        "model": "tiny",
        "method": "random",
        "dataset": "arith_train",
        "trainer": {**TRAINER, **trainer},
        "gpus": 0,
        "grading": {"workers": 1, "timeout_seconds": 5},
    }


def _weights(manifest: dict) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(manifest["path"]) / "model.safetensors"))


def _same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 1 + 2. Training resumes only what it started and stops at max_steps ----------------------


def test_changed_learning_rate_trains_from_the_base_and_a_finished_rerun_changes_nothing(train_setup, tmp_path):
    base, data = train_setup["base"], train_setup["data"]
    ckpt, final = tmp_path / "ckpt", tmp_path / "final"
    old = trl_backend.train(_train_spec(learning_rate=1e-3), base, data, ckpt, final)
    assert old["global_step"] == 2 and old["resumed_from"] is None
    old_weights = _weights(old)
    assert not _same_weights(old_weights, _weights(base)), "training must move the weights"

    changed_spec = _train_spec(learning_rate=5e-3)
    changed = trl_backend.train(changed_spec, base, data, ckpt, final)
    assert changed["resumed_from"] is None, "must not resume checkpoints of another learning rate"
    assert changed["global_step"] == 2 and not changed["exported_only"]
    superseded = Path(changed["superseded_checkpoints"])
    assert superseded.is_dir() and (superseded / "checkpoint-2").is_dir()  # moved aside, not deleted
    assert json.loads((ckpt / "settings.json").read_text())["settings"]["trainer"]["learning_rate"] == 5e-3

    fresh = trl_backend.train(changed_spec, base, data, tmp_path / "fresh-ckpt", tmp_path / "fresh")
    assert _same_weights(_weights(changed), _weights(fresh)), "a changed setting must equal a fresh run"
    assert not _same_weights(_weights(changed), old_weights)

    rerun = trl_backend.train(changed_spec, base, data, ckpt, final)
    assert rerun["exported_only"] and rerun["global_step"] == 2, "a finished job must not train on"
    assert not (ckpt / "checkpoint-3").exists()
    assert _same_weights(_weights(rerun), _weights(fresh))
    history = json.loads((ckpt / "log_history.json").read_text())
    assert [entry["step"] for entry in history if "reward" in entry] == [1, 2]


def test_settings_fingerprint_ignores_resources_but_not_what_shapes_weights(tmp_path):
    data = tmp_path / "train.parquet"
    data.write_bytes(b"rows")
    base = {"kind": "hub", "path": "/a/models/x", "hub_id": "Qwen/x", "revision": "abc", "sha256": {"config.json": "1"}}
    spec = {
        **_train_spec(),
        "gpus": 8,
        "verl": {
            "rollout_tensor_parallel": 4,
            "offload": True,
            "loss_agg_mode": "token-mean",
            "validation_every_steps": 8,
        },
    }

    def fingerprint(spec=spec, base=base):
        from pipelines.provenance import fingerprint as digest

        return digest(checkpoints.shaping_settings(spec, base, data))

    reference = fingerprint()
    assert fingerprint({**spec, "gpus": 4}) == reference
    assert fingerprint({**spec, "trainer": {**spec["trainer"], "save_steps": 7}}) == reference
    assert fingerprint({**spec, "verl": {**spec["verl"], "rollout_tensor_parallel": 2, "offload": False}}) == reference
    assert fingerprint(base={**base, "path": "/moved/models/x"}) == reference  # a moved results tree
    assert fingerprint({**spec, "trainer": {**spec["trainer"], "reward": "majority"}}) != reference
    assert fingerprint({**spec, "trainer": {**spec["trainer"], "seed": 1}}) != reference
    assert fingerprint({**spec, "trainer": {**spec["trainer"], "max_steps": 3}}) != reference
    assert fingerprint({**spec, "verl": {**spec["verl"], "loss_agg_mode": "seq-mean-token-mean"}}) != reference
    assert fingerprint(base={**base, "revision": "def"}) != reference
    # the semantic judge decides the rewards of judge-based methods: another judge, other weights
    judged = {
        **spec,
        "trainer": {**spec["trainer"], "equivalence": "judge"},
        "semantic_judge": {"model": "TIGER-Lab/general-verifier", "engine": "hf", "batch_size": 16},
    }
    assert fingerprint(judged) != reference
    assert fingerprint(
        {**judged, "semantic_judge": {**judged["semantic_judge"], "model": "other/verifier"}}
    ) != fingerprint(judged)
    data.write_bytes(b"other rows")
    assert fingerprint() != reference


def test_verl_checkpoints_of_other_settings_are_moved_aside(tmp_path):
    folder = tmp_path / "train" / "empo"
    (folder / "global_step_4" / "actor").mkdir(parents=True)
    (folder / "latest_checkpointed_iteration.txt").write_text("4")
    (folder / "verl_command.txt").write_text("python -m verl.trainer.main_ppo\n")  # the job's input stays
    first = checkpoints.claim_checkpoint_dir(folder, {"lr": 1})  # checkpoints without a fingerprint
    assert not first["resumable"] and Path(first["superseded"], "global_step_4").is_dir()
    assert not (folder / "global_step_4").exists()
    (folder / "global_step_2" / "actor").mkdir(parents=True)
    assert checkpoints.claim_checkpoint_dir(folder, {"lr": 1})["resumable"]
    assert (folder / "global_step_2").is_dir()
    changed = checkpoints.claim_checkpoint_dir(folder, {"lr": 2})
    assert not changed["resumable"] and Path(changed["superseded"], "global_step_2").is_dir()
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json", "verl_command.txt"]


# 3. The grader never crashes on one model output ------------------------------------------


def test_a_boxed_integer_past_pythons_digit_limit_is_graded_not_raised():
    digits = "9" * 5000
    assert grading.grade("\\boxed{" + digits + "}", digits) is True
    assert grading.grade("\\boxed{" + digits + "}", "1") is False
    assert grading.is_equivalent("4.5e" + "9" * 5000, "1") is False
    assert grading.cluster_answers([digits, digits, "1"]) == [0, 0, 1]


# 4. Tracking never fails the workflow, never leaves orphans --------------------------------


def _hook(action: str, tracking_config: dict, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """The Snakefile's hook as Snakemake runs it: a child process (here of a short-lived shell,
    so the Snakemake pid it records is gone afterwards, as after a kill)."""
    command = " ".join(
        [
            sys.executable,
            "-m",
            "pipelines.tracking",
            action,
            "--tracking",
            f"'{json.dumps(tracking_config)}'",
            "--results-dir",
            "results",
            *extra,
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_hooks_on_a_broken_store_warn_once_and_exit_zero(tracking_config, tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    broken = {**tracking_config, "tracking_uri": "sqlite:///not-a-dir/mlflow.db"}
    (tmp_path / "results" / "mlflow").mkdir(parents=True)
    (tmp_path / "results" / "mlflow" / "workflow_run.json").write_text('{"run_id": "stale"}')
    record = tmp_path / "results" / "mlflow" / "workflow_run.json"
    result = _hook("start", broken, tmp_path)
    assert result.returncode == 0 and result.stderr.count("WARNING: MLflow tracking unavailable") == 1, result.stderr
    assert not record.exists(), "jobs must not nest under an earlier invocation's run"
    record.write_text('{"run_id": "0123"}')
    result = _hook("end", broken, tmp_path, "--status", "FINISHED")
    assert result.returncode == 0 and result.stderr.count("WARNING: MLflow tracking unavailable") == 1, result.stderr
    with tracking.job_run(broken, "eval", "m/base/b", {"a": 1}) as tracker:  # the job itself runs
        assert not tracker.active


def test_runs_left_running_by_kills_are_closed_as_killed(tracking_config, tmp_path):
    import mlflow

    assert _hook("start", tracking_config, tmp_path).returncode == 0
    parent = json.loads((tmp_path / "results" / "mlflow" / "workflow_run.json").read_text())["run_id"]
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pipelines import tracking
        if __name__ == "__main__":
            with tracking.job_run(json.loads(sys.argv[1]), "train", "tiny/empo", {{"lr": 1}}) as tracker:
                print(tracker.run_id, flush=True)
                time.sleep(600)
    """)
    )
    job = subprocess.Popen(
        [sys.executable, str(script), json.dumps(tracking_config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    orphan = job.stdout.readline().strip()
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    client = mlflow.MlflowClient(tracking.resolve_tracking_uri(tracking_config["tracking_uri"]))
    assert client.get_run(orphan).info.status == "RUNNING" and client.get_run(parent).info.status == "RUNNING"

    # The next workflow closes the dead one's parent and its running children ...
    assert _hook("start", tracking_config, tmp_path).returncode == 0
    assert client.get_run(parent).info.status == "KILLED"
    assert client.get_run(orphan).info.status == "KILLED"
    # ... and a job that resumes says which run it continues; a still-running orphan is closed.
    second = subprocess.Popen(
        [sys.executable, str(script), json.dumps(tracking_config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    second_id = second.stdout.readline().strip()
    os.killpg(second.pid, signal.SIGKILL)
    second.wait()
    with tracking.job_run(tracking_config, "train", "tiny/empo", {"lr": 1}) as tracker:
        pass
    resumed = client.get_run(tracker.run_id)
    assert resumed.data.tags["pipeline.continues"] == second_id
    assert client.get_run(second_id).info.status == "KILLED"
    assert client.get_run(second_id).data.tags["pipeline.continued_by"] == tracker.run_id
    with tracking.job_run(tracking_config, "train", "tiny/other", {"lr": 1}) as other:
        pass
    assert "pipeline.continues" not in client.get_run(other.run_id).data.tags  # other jobs untouched


# 6. Bad files get errors naming the file (and for config the key, line and column) ----------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (
            b'{"problem": "1+1", "answer": "2"}\n{"problem": "\xff", "answer": "3"}\n',
            "not UTF-8: byte 0xff at offset 47 (line 2)",
        ),
        (b'{"problem": 1\n', "cannot read dataset file"),
    ],
)
def test_bad_data_files_name_the_dataset_and_file(tmp_path, content, message):
    path = tmp_path / "bench.jsonl"
    path.write_bytes(content)
    spec = {
        "name": "bench",
        "role": "benchmark",
        "format": "columns",
        "source": {"kind": "file", "path": str(path)},
        "columns": {"question": "problem", "answer": "answer"},
    }
    with pytest.raises(DataError, match="dataset 'bench'") as error:
        prepare_dataset(spec, tmp_path / "out.parquet")
    assert str(path) in str(error.value) and message in str(error.value)
    assert not (tmp_path / "out.parquet").exists()


def test_config_errors_name_file_line_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    broken = tmp_path / "broken.yaml"
    broken.write_text("results_dir: results\nmodels:\n  a: [1, 2\n  b: 3\n")
    with pytest.raises(cfg.ConfigError, match=f"{broken}:4:4: not valid YAML"):
        cfg.load_config([broken])
    config = yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())
    config["evaluation"]["protocols"]["sample8"]["temprature"] = 1.0
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(config, sort_keys=False))
    line = next(i for i, text in enumerate(typo.read_text().splitlines(), 1) if "temprature" in text)
    with pytest.raises(cfg.ConfigError, match=rf"'evaluation.protocols.sample8.temprature'.*\[{typo}:{line}:"):
        cfg.load_config([typo])
    # an overlay: the location is in the file that sets the key
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("evaluation:\n  batch_size: zero\n")
    with pytest.raises(cfg.ConfigError, match=rf"'evaluation.batch_size'.*\[{overlay}:2:15\]"):
        cfg.load_config([REPO_ROOT / "config" / "demo.yaml", overlay])


def test_a_missing_dataset_file_fails_validation_before_any_job(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    config = yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())
    config["datasets"]["add_test"]["source"]["path"] = "config/demo_data/missing.jsonl"
    config["datasets"]["unused"] = {"role": "benchmark", "source": {"kind": "file", "path": "nowhere.jsonl"}}
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(cfg.ConfigError) as error:
        cfg.load_config([path])
    assert "'datasets.add_test.source.path': file not found: config/demo_data/missing.jsonl" in str(error.value)
    assert "nowhere.jsonl" not in str(error.value)  # a dataset no job reads is not required
