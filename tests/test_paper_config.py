"""The paper config is the authors' run: per-model settings, their per-sequence GSPO weighting,
a reviewable plan written offline (verl commands and plan.md), the released checkpoints as
evaluation-only rows, and every known difference from the authors listed under the table."""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import config as cfg
from pipelines import report
from pipelines.train import verl_launch
from tests.conftest import REPO_ROOT, copy_workflow

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def paper():
    return cfg.load_config([REPO_ROOT / "config" / "config.yaml"])


def test_each_model_trains_and_evaluates_with_its_scripts_settings(paper):
    expected = {  # run_empo_{qwen2.5_math_1.5b,octothinker_long_3b,qwen2.5_math_7b}.sh (+ our 7B choice)
        "qwen2.5-math-1.5b": (192, 96, 3072, ["amc23", "minerva_math", "math500"]),
        "octothinker-3b-long": (100, 96, 16384, ["amc23", "minerva_math", "math500", "aime24", "olympiadbench"]),
        "qwen2.5-math-7b": (300, 32, 3072, ["amc23"]),
    }
    for model, (steps, save, length, validation) in expected.items():
        for method in ("empo", "gspo"):
            spec = cfg.train_job_spec(paper, model, method)
            trainer = spec["trainer"]
            assert (trainer["max_steps"], trainer["save_steps"], trainer["max_completion_length"]) == (
                steps,
                save,
                length,
            )
            assert spec["verl"]["validation_benchmarks"] == validation
            assert spec["verl"]["loss_agg_mode"] == "seq-mean-token-mean" and spec["verl"]["data_seed"] == 1
            assert trainer["reward"] == ("empo" if method == "empo" else "supervised")
        for benchmark, protocol in cfg.protocol_targets(paper):
            spec = cfg.generate_job_spec(paper, model, "base", benchmark, protocol)
            assert spec["decoding"]["max_new_tokens"] == length
    released = cfg.generate_job_spec(paper, "empo-released-octothinker-3b-long", "base", "aime24", "avg16")
    assert released["decoding"] == {
        **released["decoding"],
        "max_new_tokens": 16384,
        "temperature": 0.6,
        "top_p": 0.95,
        "n": 16,
    }
    assert cfg.protocol_targets(paper) == [(b, "greedy") for b in paper["evaluation"]["benchmarks"][:3]] + [
        ("aime24", "greedy"),
        ("aime24", "avg16"),
        ("amc23", "greedy"),
        ("amc23", "avg16"),
    ]
    assert paper["evaluation"]["graders"] == ["math-verify", "empo-rules", "llm-judge"]


def test_a_model_cannot_change_a_methods_reward(paper, tmp_path):
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config["models"]["qwen2.5-math-7b"]["trainer"]["reward"] = "majority"
    config["models"]["qwen2.5-math-7b"]["verl"]["validation_benchmarks"] = ["numina_math_20k"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(cfg.ConfigError) as error:
        cfg.load_config([path])
    message = str(error.value)
    assert "'models.qwen2.5-math-7b.trainer.reward': set per method" in message
    assert "'models.qwen2.5-math-7b.verl.validation_benchmarks.0'" in message


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "1", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """`snakemake plan` on the paper config, offline: no dataset or model exists."""
    workdir = copy_workflow(tmp_path_factory.mktemp("paper"))
    _snakemake(workdir, "plan", "--configfile", "config/config.yaml")
    return workdir


def _overrides(workdir: Path, model: str, method: str = "empo") -> dict[str, str]:
    words = shlex.split((workdir / "results" / "paper" / "train" / model / method / "verl_command.txt").read_text())
    assert words[:3] == ["python", "-m", "verl.trainer.main_ppo"]
    return dict(word.split("=", 1) for word in words[3:])


def test_verl_commands_are_written_offline_with_each_models_settings(planned):
    assert (
        not (planned / "results" / "paper" / "data").exists()
        and not (planned / "results" / "paper" / "models").exists()
    )
    for model, steps, length, save, validation in [
        ("qwen2.5-math-1.5b", 192, 3072, 96, ["amc23", "minerva_math", "math500"]),
        ("octothinker-3b-long", 100, 16384, 96, ["amc23", "minerva_math", "math500", "aime24", "olympiadbench"]),
        ("qwen2.5-math-7b", 300, 3072, 32, ["amc23"]),
    ]:
        overrides = _overrides(planned, model)
        assert overrides["trainer.total_training_steps"] == str(steps)
        assert overrides["data.max_response_length"] == str(length)
        assert overrides["trainer.save_freq"] == str(save)
        assert overrides["actor_rollout_ref.actor.loss_agg_mode"] == "seq-mean-token-mean"
        assert overrides["actor_rollout_ref.actor.policy_loss.loss_mode"] == "gspo"
        assert overrides["data.seed"] == "1"
        # the authors' recipe and script settings (their ppo_trainer.yaml :152, :440; run_empo_*.sh)
        assert overrides["actor_rollout_ref.actor.strategy"] == "fsdp2"
        assert overrides["actor_rollout_ref.rollout.free_cache_engine"] == "false"
        assert overrides["actor_rollout_ref.rollout.max_num_seqs"] == "1024"
        assert overrides["+actor_rollout_ref.model.override_config.attention_dropout"] == "0.0"
        assert (
            overrides["data.val_files"]
            == "["
            + ",".join(str(planned / "results" / "paper" / "data" / f"{name}.parquet") for name in validation)
            + "]"
        )
        # the model is named where its model job will link it, before it is downloaded
        assert overrides["actor_rollout_ref.model.path"] == str(
            planned / "results" / "paper" / "models" / model / "base" / "hf"
        )
        assert "ray_kwargs.ray_init.num_cpus" not in overrides  # the allocation's, added when the job runs


def test_the_paper_methods_train_on_the_authors_reward(planned, paper):
    """EMPO and GSPO cluster and grade as the authors' empo_metrics does (equivalence empo-rules),
    in the verl command and in the settings that decide whether a run must retrain."""
    for method in ("empo", "gspo"):
        assert _overrides(planned, "qwen2.5-math-1.5b", method)["+trainer.v1.sampler.sampler_kwargs.equivalence"] == (
            "empo-rules"
        )
        assert cfg.train_job_spec(paper, "qwen2.5-math-1.5b", method)["trainer"]["equivalence"] == "empo-rules"
    strict = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    strict["training"]["methods"]["empo"]["equivalence"] = "math"
    spec = cfg.train_job_spec(cfg.validate_config(strict, "test"), "qwen2.5-math-1.5b", "empo")
    assert "equivalence" not in spec["trainer"]  # math, the default, is left out (older specs stay equal)
    # ... and the table names the change from the authors
    assert {"setting": "training.equivalence", "ours": "math", "theirs": "empo-rules"} in cfg.divergences(
        cfg.validate_config(strict, "test"), "qwen2.5-math-1.5b", "empo"
    )
    assert not [
        d for d in cfg.divergences(paper, "qwen2.5-math-1.5b", "empo") if d["setting"] == "training.equivalence"
    ]


def _hydra_value(value):
    """A Hydra override value as Python, so that 5e-7 and 5e-07, True and true compare equal."""
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("null", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        return text.replace("'", "").replace('"', "").replace(" ", "")


def script_differences(transcription: dict, script: str, module: str, overrides: dict[str, str]) -> list[str]:
    """The keys of one of the authors' scripts (and of their recipe config) on which our command differs."""
    entry = transcription["scripts"][script]
    settings = {**entry["overrides"], **transcription["recipe_config"]["settings"]}
    ours = {key.lstrip("+"): value for key, value in overrides.items()}
    differ = [] if entry["module"] == module else ["module"]
    for key, item in settings.items():
        name = key.lstrip("+")
        if name in ours:
            mine = _hydra_value(ours[name])
        elif transcription["same_as"].get(key) in ours:
            mine = _hydra_value(ours[transcription["same_as"][key]])
        elif key in transcription["verl_defaults"]:
            mine = _hydra_value(transcription["verl_defaults"][key])
        else:
            differ.append(key)
            continue
        if mine != _hydra_value(item["value"]):
            differ.append(key)
    return differ


def _module_and_overrides(workdir: Path, model: str, method: str) -> tuple[str, dict[str, str]]:
    words = shlex.split((workdir / "results" / "paper" / "train" / model / method / "verl_command.txt").read_text())
    return words[2], dict(word.split("=", 1) for word in words[3:])


def test_every_difference_from_the_authors_verl_scripts_has_a_reason_and_is_in_the_table(planned, paper):
    """Each generated verl_command.txt against the transcription of the authors' script for its
    model (config/authors/verl_scripts.yaml), key by key: the keys that differ are exactly those
    with a reason, and the table prints every reason with their value and file:line."""
    transcription = yaml.safe_load((REPO_ROOT / "config" / "authors" / "verl_scripts.yaml").read_text())
    assert transcription["commit"].startswith("c5eccd4")
    for model in ("qwen2.5-math-1.5b", "octothinker-3b-long", "qwen2.5-math-7b"):
        _, entry, reasons = cfg.authors_verl_script(paper, model)
        assert len(entry["overrides"]) > 80  # every key of their command, not a selection
        for method in ("empo", "gspo"):
            module, overrides = _module_and_overrides(planned, model, method)
            assert sorted(
                script_differences(transcription, paper["models"][model]["authors"]["verl_script"], module, overrides)
            ) == sorted(reasons), (model, method)
            table = {d["setting"]: d for d in cfg.divergences(paper, model, method)}
            for key, reason in reasons.items():
                shown = table[f"verl script, {key}"]
                assert shown["reason"] == reason
                if key != "module":
                    line = {**entry["overrides"], **transcription["recipe_config"]["settings"]}[key]["line"]
                    assert f":{line})" in shown["theirs"]
    # the check can fail: a script key changed without a reason, or a reason left for a key that agrees
    module, overrides = _module_and_overrides(planned, "qwen2.5-math-1.5b", "empo")
    changed = copy.deepcopy(transcription)
    changed["scripts"]["qwen2.5-math-1.5b"]["overrides"]["actor_rollout_ref.rollout.n"]["value"] = "8"
    assert "actor_rollout_ref.rollout.n" in script_differences(changed, "qwen2.5-math-1.5b", module, overrides)
    agreeing = dict(overrides, **{"actor_rollout_ref.actor.loss_agg_mode": "token-mean"})
    assert "actor_rollout_ref.actor.loss_agg_mode" not in script_differences(
        transcription, "qwen2.5-math-1.5b", module, agreeing
    )


def test_a_reason_for_a_key_their_script_does_not_set_is_refused(tmp_path):
    text = (REPO_ROOT / "config" / "config.yaml").read_text()
    raw = yaml.safe_load(text)
    raw["models"]["qwen2.5-math-1.5b"]["authors"]["verl_script_reasons"]["trainer.no_such_key"] = "why"
    with pytest.raises(cfg.ConfigError, match="does not set trainer.no_such_key"):
        cfg.validate_config(raw, "test")


def test_plan_lists_every_job_with_gpu_hour_estimates(planned):
    plan = (planned / "results" / "paper" / "plan.md").read_text()
    rows = [line for line in plan.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    train_rows = [r for r in rows if "| verl |" in r]
    assert len(train_rows) == 6 and len(rows) == 6 + 14 * 7  # 5 benchmarks greedy + 2 of them avg16
    three_b = next(r for r in train_rows if r.startswith("| octothinker-3b-long | empo |"))
    # 100 steps x 256 prompts x 16 x 16384 tokens / 2000 tokens/s / 3600 s
    assert f"| {100 * 256 * 16 * 16384 / 2000 / 3600:,.1f} |" in three_b
    assert "seq-mean-token-mean" in three_b and "| 100 |" in three_b
    assert "Training total" in plan and "verl_command.txt" in plan
    assert "math-verify (CPU), empo-rules (CPU), llm-judge (IAAR-Shanghai/xVerify-8B-I on vllm" in plan


def test_released_checkpoints_are_evaluation_only_rows(tmp_path):
    workdir = copy_workflow(tmp_path)
    out = _snakemake(workdir, "-n", "--configfile", "config/config.yaml").stdout
    jobs = re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+wildcards: (.*)$", out, flags=re.M)
    released = [(rule, wildcards) for rule, wildcards in jobs if "empo-released" in wildcards]
    assert released and {rule for rule, _ in released} == {"model", "generate", "grade"}
    assert sum(1 for rule, _ in released if rule == "generate") == 3  # one per model: 7 evaluations each
    assert sum(1 for rule, _ in released if rule == "grade") == 3 * 7 * 3


def test_the_table_lists_every_difference_from_the_authors(paper):
    table = report.build_table(cfg.report_spec(paper), {})
    markdown = report.render_markdown(table)
    section = markdown[markdown.index("## Differences from the authors") :]
    assert (
        "- llm-judge: ours IAAR-Shanghai/xVerify-8B-I, temperature 0.1 (seeded), up to 4096 tokens" in section
        and "xVerify-8B-SFT" in section
    )
    three_b = section[section.index("octothinker-3b-long / empo:") :]
    assert three_b.splitlines()[1] == (
        "- start model: ours OctoThinker/OctoThinker-3B-Long-Base; theirs OctoThinker/OctoThinker-3B-Long-Zero"
    )
    assert "octothinker-3b-long / base:" not in section  # the start model concerns trained rows only
    seven_b = section[section.index("qwen2.5-math-7b / empo:") :]
    assert (
        "- verl script, trainer.total_train_steps: theirs trainer.total_train_steps=300 "
        "(verl-empo/recipe/empo/scripts/run_empo_qwen2.5_math_7b.sh:180); ours differs: not a verl key"
    ) in seven_b
    labels = [(row["label_model"], row["label_method"]) for row in table["blocks"][0]["rows"]]
    assert ("qwen2.5-math-1.5b", "empo (released)") in labels
    assert "| qwen2.5-math-1.5b | empo (released) | measured |" in markdown


def test_a_changed_setting_shows_up_as_a_difference(paper):
    changed = cfg.validate_config(
        {
            **yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text()),
            "training": {
                **yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["training"],
                "verl": {**paper["training"]["verl"], "loss_agg_mode": "token-mean"},
            },
        },
        source="test",
    )
    found = cfg.divergences(changed, "qwen2.5-math-1.5b", "empo")
    assert {"setting": "training.verl.loss_agg_mode", "ours": "token-mean", "theirs": "seq-mean-token-mean"} in found
    assert not [d for d in cfg.divergences(paper, "qwen2.5-math-1.5b", "empo") if d["setting"].startswith("training")]


def test_the_train_job_runs_the_command_file_plus_its_allocation(tmp_path):
    model = tmp_path / "models" / "m" / "base" / "hf"
    command_file = tmp_path / "verl_command.txt"
    command_file.write_text(f"python -m verl.trainer.main_ppo actor_rollout_ref.model.path={model} trainer.nnodes=1\n")
    with pytest.raises(RuntimeError, match="does not exist: its model job makes that link"):
        verl_launch.command_from_file(command_file, cpus=16)
    model.mkdir(parents=True)
    command, overrides = verl_launch.command_from_file(command_file, cpus=16)
    assert command[:3] == [sys.executable, "-m", "verl.trainer.main_ppo"]
    assert overrides[-1] == "ray_kwargs.ray_init.num_cpus=16"
    assert verl_launch.command_from_file(command_file, cpus=None)[1][-1] == "trainer.nnodes=1"


def test_the_zoo_plans_one_training_job_per_method_and_every_evaluation(tmp_path):
    """config/zoo.yaml: every label-free method, the supervised reference and the baselines on
    one model, one backend and the paper's settings; `snakemake -n` plans it."""
    zoo = cfg.load_config([REPO_ROOT / "config" / "zoo.yaml"])
    from pipelines.rewards import REWARDS

    methods = zoo["training"]["methods"]
    assert {spec["reward"] for spec in methods.values()} == set(REWARDS)  # every reward kind, once
    assert {cfg.resolved_trainer(zoo, method)["backend"] for method in methods} == {"trl"}
    paper = cfg.load_config([REPO_ROOT / "config" / "config.yaml"])
    shared = (
        "learning_rate",
        "num_generations",
        "prompts_per_step",
        "mini_batch_prompts",
        "max_completion_length",
        "temperature",
        "epsilon",
        "epsilon_high",
        "beta",
        "loss",
    )
    for method in methods:
        zoo_trainer = cfg.resolved_trainer(zoo, method, "qwen2.5-math-1.5b")
        paper_trainer = cfg.resolved_trainer(paper, "empo", "qwen2.5-math-1.5b")
        assert {k: zoo_trainer[k] for k in shared} == {k: paper_trainer[k] for k in shared}, method
        assert zoo_trainer["max_steps"] == paper_trainer["max_steps"] == 192
    assert zoo["evaluation"] == paper["evaluation"]
    workdir = copy_workflow(tmp_path)
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--configfile", "config/zoo.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(
        line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    assert int(counts["train_trl"]) == len(methods) == 8 and int(counts["generate"]) == 9  # + base


def test_what_verl_cannot_score_is_refused_before_any_job(tmp_path):
    """Self-certainty needs per-token log-normalisers verl's actor does not return; a token
    reward on verl is scored after sampling, too late for the entropy filter. Token entropy and
    trajectory likelihood on verl are accepted."""
    zoo = yaml.safe_load((REPO_ROOT / "config" / "zoo.yaml").read_text())
    for method in ("self_certainty", "token_entropy", "trajectory_likelihood"):
        zoo["training"]["methods"][method]["backend"] = "verl"
    zoo["training"]["methods"]["trajectory_likelihood"]["entropy_filter"] = [0.3, 1.0]
    path = tmp_path / "zoo-verl.yaml"
    path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    with pytest.raises(cfg.ConfigError) as refused:
        cfg.load_config([path])
    message = str(refused.value)
    assert "'training.methods.self_certainty': reward 'self_certainty' needs each token's log-normaliser" in message
    assert "'training.methods.trajectory_likelihood': reward 'trajectory_likelihood' is scored on verl" in message
    assert "token_entropy" not in message
