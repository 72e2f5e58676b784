"""verl backend, the parts that need no verl: Hydra value formatting, the config checks that
would otherwise fail on the cluster, the Ray-on-SLURM launch commands for one and two nodes,
checkpoint discovery, and the paper DAG's train -> convert -> eval wiring (a real dry-run).
What needs verl itself (composition against verl's config, the reward extension on verl's data
path, a real checkpoint and its conversion) is in tests/verl/ (`make test-verl`)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys

import pytest

from pipelines import config as cfg
from pipelines.config import ConfigError
from pipelines.train import verl_backend, verl_launch
from tests.conftest import REPO_ROOT

PATHS = dict(
    model_path="/models/base",
    train_file="/data/train.parquet",
    val_files=[],
    checkpoint_dir="/ckpt",
    project="p",
    log_to_mlflow=False,
    cpus=None,
)


def paper():
    return cfg.load_config([REPO_ROOT / "config" / "config.yaml"])


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (3e-4, "0.0003"),
        (16, "16"),
        ("vllm", "vllm"),
        ("/a/b-c.parquet", "/a/b-c.parquet"),
        ("null", "'null'"),
        ("a path/with space", "'a path/with space'"),
        (["console", "mlflow"], "[console,mlflow]"),
        ([0.3, 1.0], "[0.3,1.0]"),
        ("pkg://pipelines.train.verl_extension", "pkg://pipelines.train.verl_extension"),
    ],
)
def test_hydra_values(value, expected):
    assert verl_backend.hydra_value(value) == expected


def test_hydra_refuses_values_it_cannot_quote():
    with pytest.raises(ValueError, match="Hydra"):
        verl_backend.hydra_value("it's")


def test_overrides_follow_the_paper_settings():
    spec = cfg.train_job_spec(paper(), "qwen2.5-math-1.5b", "empo")
    settings = verl_backend.override_settings(spec, **PATHS)
    assert settings["actor_rollout_ref.actor.policy_loss.loss_mode"] == "gspo"
    assert settings["data.train_batch_size"] == 256 and settings["actor_rollout_ref.rollout.n"] == 16
    assert settings["actor_rollout_ref.actor.ppo_mini_batch_size"] == 32
    assert settings["trainer.total_training_steps"] == 192 and settings["trainer.save_freq"] == 96
    assert settings["+trainer.v1.sampler.sampler_kwargs.reward"] == "empo"
    assert settings["trainer.test_freq"] == -1 and settings["trainer.val_before_train"] is False  # no val files
    assert "ray_kwargs.ray_init.num_cpus" not in settings
    with_val = verl_backend.override_settings(spec, **{**PATHS, "val_files": ["/v.parquet"], "cpus": 16})
    assert with_val["trainer.test_freq"] == 8 and with_val["ray_kwargs.ray_init.num_cpus"] == 16
    spec["verl"]["extra_overrides"] = ["trainer.max_actor_ckpt_to_keep=2"]
    assert verl_backend.build_overrides(spec, **PATHS)[-1] == "trainer.max_actor_ckpt_to_keep=2"


def test_changing_the_converted_step_does_not_retrain():
    config = paper()
    before = cfg.to_json(cfg.train_job_spec(config, "qwen2.5-math-1.5b", "empo"))
    config["training"]["verl"]["convert_step"] = 96
    assert cfg.to_json(cfg.train_job_spec(config, "qwen2.5-math-1.5b", "empo")) == before
    assert cfg.convert_job_spec(config, "qwen2.5-math-1.5b", "empo")["step"] == 96


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["resources"]["train"].update(gpus=0), "gpus must be >= 1"),
        (lambda c: c["training"]["verl"].update(rollout_tensor_parallel=3), "must divide resources.train.gpus"),
        (lambda c: c["training"]["verl"].update(validation_benchmarks=["numina_math_20k"]), "role 'benchmark'"),
        (
            lambda c: (c["training"]["defaults"].update(backend="trl"), c["resources"]["train"].update(nodes=2)),
            "trl backend runs on one node",
        ),
    ],
)
def test_verl_settings_the_cluster_would_reject_fail_at_startup(change, message):
    raw = cfg.load_config([REPO_ROOT / "config" / "config.yaml"])
    raw = copy.deepcopy(raw)
    change(raw)
    with pytest.raises(ConfigError, match=re.escape(message)):
        cfg.validate_config(raw, "config/config.yaml")


def test_ray_on_slurm_for_two_nodes():
    plan = verl_launch.ray_cluster_plan(["gpu-a", "gpu-b"], "10.0.0.5", cpus_per_node=64, gpus_per_node=8)
    overlap = ["srun", "--overlap", "--nodes=1", "--ntasks=1", "-w"]
    assert plan.head == [
        *overlap,
        "gpu-a",
        "ray",
        "start",
        "--head",
        "--node-ip-address=10.0.0.5",
        "--port=6379",
        "--include-dashboard=false",
        "--num-cpus",
        "64",
        "--num-gpus",
        "8",
        "--block",
    ]
    assert plan.workers == [
        [*overlap, "gpu-b", "ray", "start", "--address=10.0.0.5:6379", "--num-cpus", "64", "--num-gpus", "8", "--block"]
    ]
    assert plan.trainer_prefix == [*overlap, "gpu-a"]
    assert plan.stop == [[*overlap, "gpu-a", "ray", "stop", "--force"], [*overlap, "gpu-b", "ray", "stop", "--force"]]
    assert plan.wait_for_nodes == 2 and plan.head_address == "10.0.0.5:6379"


def test_one_node_runs_the_trainer_directly():
    with pytest.raises(ValueError, match="one node runs the trainer directly"):
        verl_launch.ray_cluster_plan(["gpu-a"], "10.0.0.5", 8, 1)
    overrides = verl_backend.build_overrides(cfg.train_job_spec(paper(), "qwen2.5-math-1.5b", "empo"), **PATHS)
    assert verl_backend.trainer_command(overrides, python="py")[:3] == ["py", "-m", "verl.trainer.main_ppo"]


def test_job_environment_hands_verl_our_run_and_package():
    env = verl_launch.job_environment("run123", "sqlite:////r/mlflow.db", base={"PYTHONPATH": "/x"})
    assert env["MLFLOW_RUN_ID"] == "run123" and env["MLFLOW_TRACKING_URI"] == "sqlite:////r/mlflow.db"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/x"]
    assert "MLFLOW_RUN_ID" not in verl_launch.job_environment(None, None, base={"MLFLOW_RUN_ID": "stale"})


def test_ray_gets_the_cpus_slurm_allocated():
    assert verl_launch.allocation_cpus(64, {"SLURM_CPUS_PER_TASK": "48"}) == 48
    assert verl_launch.allocation_cpus(64, {"SLURM_CPUS_ON_NODE": "32"}) == 32
    assert verl_launch.allocation_cpus(64, {}) == 64


def test_every_ray_process_of_a_multi_node_job_shares_one_token():
    env = verl_launch.ray_auth_environment({"PATH": "/bin"})
    assert env["RAY_AUTH_MODE"] == "token" and len(env["RAY_AUTH_TOKEN"]) == 64
    assert verl_launch.ray_auth_environment({})["RAY_AUTH_TOKEN"] != env["RAY_AUTH_TOKEN"]  # per job
    assert verl_launch.ray_auth_environment({"RAY_AUTH_TOKEN": "mine"})["RAY_AUTH_TOKEN"] == "mine"
    assert "RAY_AUTH_TOKEN" not in verl_launch.ray_auth_environment({"RAY_AUTH_MODE": "disabled"})


def test_checkpoint_discovery(tmp_path):
    assert verl_backend.saved_steps(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="no verl actor checkpoint"):
        verl_backend.choose_step(tmp_path, None)
    for step in (96, 192):
        actor = tmp_path / f"global_step_{step}" / "actor"
        actor.mkdir(parents=True)
        (actor / "model_world_size_8_rank_0.pt").write_bytes(b"x")
    (tmp_path / "global_step_200" / "actor").mkdir(parents=True)  # killed mid-save: no shards
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("192")
    assert verl_backend.saved_steps(tmp_path) == [96, 192]
    assert verl_backend.choose_step(tmp_path, None) == 192 and verl_backend.choose_step(tmp_path, 96) == 96
    assert verl_backend.latest_step(tmp_path) == 192


def dry_run(*args):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "config/config.yaml", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": os.environ["PATH"]},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_paper_dag_trains_with_verl_then_converts_then_evaluates():
    out = dry_run()
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts["train_verl"] == "6" and counts["convert"] == "6" and counts["verl_command"] == "6"
    rows = 11 + 3  # base and trained rows + 3 released checkpoints; 5 benchmarks greedy + 2 of them avg16
    assert counts["generate"] == str(rows) and counts["grade"] == str(rows * 7 * 3)  # one generate job per row
    assert "train" not in counts  # no TRL job in the paper config


def test_multi_node_jobs_ask_slurm_for_gpus_per_node(tmp_path):
    overlay = tmp_path / "two-nodes.yaml"
    overlay.write_text("resources:\n  train: {gpus: 8, nodes: 2, cpus: 64, mem_mb: 512000, runtime: 2880}\n")
    out = dry_run(
        "--configfile",
        "config/config.yaml",
        str(overlay),
        "--",
        "results/paper/train/qwen2.5-math-7b/empo/training.json",
    )
    block = out[out.index("rule train_verl:") :]
    resources = block[block.index("resources:") :].splitlines()[0]
    assert "nodes=2" in resources and "gres=gpu:8" in resources and "gpu=0" in resources
    one = dry_run("--", "results/paper/train/qwen2.5-math-7b/empo/training.json")
    block = one[one.index("rule train_verl:") :]
    resources = block[block.index("resources:") :].splitlines()[0]
    assert "nodes=1" in resources and "gpu=8" in resources


def test_a_command_written_for_another_results_tree_is_refused(tmp_path):
    from pipelines.train.verl_launch import check_command_paths

    here = tmp_path / "results" / "train" / "m" / "empo"
    check_command_paths([f"trainer.default_local_dir={here}"], tmp_path / "verl_command.txt", here)
    with pytest.raises(RuntimeError, match="results tree moved.*snakemake -R"):
        check_command_paths(
            ["trainer.default_local_dir=/old/tree/results/train/m/empo"], tmp_path / "verl_command.txt", here
        )
