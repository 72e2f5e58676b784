"""End to end: the real `snakemake` on the demo config, the MLflow store it fills, a forced
re-grade updating the table without regenerating, and bad configs refused before any job runs."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_workflow, mlflow_runs

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DEMO = "results/demo"  # the demo's results tree (config/demo.yaml results_dir)
EASY = "results/demo/eval/tiny-qwen2/base/add_test/greedy/math-verify/metrics.json"
SAMPLED = "results/demo/eval/tiny-qwen2/base/add_test/sample8"


def _snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("demo"))
    started = time.time()
    _snakemake(workdir, "--configfile", "config/demo.yaml")
    print(f"demo DAG took {time.time() - started:.1f} s")
    return workdir


def _cells(workdir: Path, block: int = 0, row: int = 0) -> dict:
    return json.loads((workdir / DEMO / "table.json").read_text())["blocks"][block]["rows"][row]["cells"]


def test_demo_produces_the_table_and_traceable_cells(demo_run):
    markdown = (demo_run / DEMO / "table.md").read_text()
    assert "| tiny-qwen2 | base | measured |" in markdown
    for method in ("empo", "grpo"):  # trained rows say how: backend and steps
        assert f"| tiny-qwen2 | {method} (trl, 40 steps) | measured |" in markdown
    for grader in ("math-verify", "empo-rules"):  # two graders x two protocols, intervals and counts
        assert f"## Grader {grader} · protocol greedy (pass@1)" in markdown
        assert f"## Grader {grader} · protocol sample8 (mean@8)" in markdown
    assert "add_test (N=80)" in markdown and " ± " in markdown and "|  |  | vs base |" in markdown
    assert "## Protocols" in markdown
    table = json.loads((demo_run / DEMO / "table.json").read_text())
    assert [(b["grader"], b["protocol"]) for b in table["blocks"]] == [
        ("math-verify", "greedy"),
        ("math-verify", "sample8"),
        ("empo-rules", "greedy"),
        ("empo-rules", "sample8"),
    ]
    for block in table["blocks"]:
        for benchmark, cell in block["rows"][0]["cells"].items():
            metrics = json.loads((demo_run / cell["metrics_path"]).read_text())
            assert (metrics["benchmark"], metrics["grader"]["name"]) == (benchmark, block["grader"])
            assert cell["value"] == pytest.approx(100 * metrics["accuracy"])
            assert cell["protocol_id"] == metrics["protocol_id"] and cell["items"] == metrics["counts"]["items"]
    sampled = json.loads((demo_run / SAMPLED / "math-verify" / "metrics.json").read_text())
    assert (
        {"mean@8", "maj@8", "pass@4", "pass@8"} <= set(sampled["metrics"]) <= set(sampled["uncertainty"]) | {"accuracy"}
    )
    generations = (demo_run / SAMPLED / "generations.jsonl").read_text().splitlines()
    assert len(generations) == 80 * 8
    assert "| add_test | greedy | math-verify vs empo-rules |" in (demo_run / DEMO / "agreement.md").read_text()
    summary = json.loads((demo_run / DEMO / "data/add_train.summary.json").read_text())
    assert summary["missing_answer"] == 1 and summary["rows_out"] == 80
    assert (demo_run / DEMO / "table.png").stat().st_size > 5000


def test_the_demo_shows_label_free_rl_improving_held_out_accuracy(demo_run):
    """The demo's point: the base model is competent but noisy (its majority vote well above its
    single samples), and EMPO, without labels, raises its sampled accuracy on the held-out test
    problems by more than the paired 95% interval; the supervised baseline too. The table says so."""
    table = json.loads((demo_run / DEMO / "table.json").read_text())
    effects = {(e["grader"], e["method"], e["protocol"]): e for e in table["effects"]}
    empo, grpo = effects[("math-verify", "empo", "sample8")], effects[("math-verify", "grpo", "sample8")]
    assert empo["ci95"][0] > 0 and empo["excludes_zero"], empo
    assert grpo["ci95"][0] > 0 and grpo["excludes_zero"], grpo
    assert 10 <= empo["base"] <= 50 and empo["base_majority"] >= empo["base"] + 10, empo
    markdown = (demo_run / DEMO / "table.md").read_text()
    assert "## Effect of training (grader math-verify)" in markdown
    assert "| tiny-qwen2 | empo | add_test | sample8 (mean@8) |" in markdown
    line = next(row for row in markdown.splitlines() if row.startswith("| tiny-qwen2 | empo | add_test | sample8"))
    assert "| gain |" in line


def test_empo_raises_held_out_accuracy_on_a_second_training_seed(demo_run, tmp_path, monkeypatch):
    """The effect is not one seed's luck: EMPO trained again with seed 1 from the demo's base
    model; its held-out (validation) sampled accuracy ends well above where it started (the base)."""
    from pipelines import config as cfg
    from pipelines.models import read_manifest
    from pipelines.train import trl_backend

    monkeypatch.chdir(demo_run)
    spec = cfg.train_job_spec(cfg.load_config([Path("config/demo.yaml")]), "tiny-qwen2", "empo")
    spec["trainer"]["seed"] = 1
    base = read_manifest(demo_run / DEMO / "models" / "tiny-qwen2" / "base" / "model.json")
    trl_backend.train(
        spec,
        base,
        demo_run / DEMO / "data" / "add_train.parquet",
        tmp_path / "checkpoints",
        tmp_path / "final",
        validation_path=demo_run / DEMO / "data" / "add_val.parquet",
    )
    history = json.loads((tmp_path / "checkpoints" / "log_history.json").read_text())
    points = [entry for entry in history if "validation/mean_accuracy" in entry]
    assert points[0]["step"] == 0 and points[-1]["step"] == 40
    start, end = points[0]["validation/mean_accuracy"], points[-1]["validation/mean_accuracy"]
    assert end >= start + 0.1, (start, end)


def test_demo_fills_mlflow_with_parent_and_child_runs(demo_run):
    runs = mlflow_runs(demo_run)
    parents = [r for r in runs if r["tags"].get("pipeline.kind") == "workflow"]
    assert len(parents) == 1 and parents[0]["status"] == "FINISHED"
    children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == parents[0]["id"]]
    stages = sorted(r["tags"]["pipeline.stage"] for r in children)
    assert stages == ["curves"] + ["data"] * 4 + ["generate"] * 6 + ["grade"] * 12 + [
        "model",
        "table",
        "train",
        "train",
    ]
    assert all(r["status"] == "FINISHED" for r in children)
    generations = [r for r in children if r["tags"]["pipeline.stage"] == "generate"]
    assert all({"items_done", "count.samples"} <= r["metrics"] for r in generations)
    grades = [r for r in children if r["tags"]["pipeline.stage"] == "grade"]
    assert all({"accuracy", "accuracy.se", "count.items"} <= r["metrics"] for r in grades)
    assert {r["tags"]["grader"] for r in grades} == {"math-verify", "empo-rules"}
    assert any({"mean_at_8", "maj_at_8", "pass_at_4"} <= r["metrics"] for r in grades)
    generation_ids = {r["id"] for r in generations}
    assert all(r["tags"]["generation_run_id"] in generation_ids for r in grades)  # a grade links its generation
    trains = [r for r in children if r["tags"]["pipeline.stage"] == "train"]
    assert all(
        {
            "reward",
            "group/reward_mean",
            "group/semantic_entropy",
            "group/majority_ratio",
            "trl/learning_rate",
            "tokens_per_second",
            "validation/mean_accuracy",
            "validation/majority_accuracy",
            "validation/greedy_accuracy",
        }
        <= r["metrics"]
        for r in trains
    )
    # MLflow's run page opens on the first metric prefix in alphabetical order: ours, not TRL's
    assert all(min(key.split("/")[0] for key in r["metrics"] if "/" in key) == "group" for r in trains)
    # a generation links the runs that made its inputs: its model's training run and its dataset's run
    data_runs = {r["tags"]["pipeline.job"]: r["id"] for r in children if r["tags"]["pipeline.stage"] == "data"}
    for run in generations:
        assert run["tags"]["dataset_run_id"] == data_runs[run["tags"]["benchmark"]]
        trained = run["tags"]["method"] != "base"
        assert (
            (run["tags"].get("training_run_id") in {t["id"] for t in trains})
            if trained
            else ("training_run_id" not in run["tags"])
        )
        # ... and says so as links the UI follows (the run's description)
        linked = {f"runs/{run['tags'][key]})" for key in ("dataset_run_id", "training_run_id") if key in run["tags"]}
        assert all(link in run["tags"]["mlflow.note.content"] for link in linked) and linked
    with sqlite3.connect(demo_run / "results" / "mlflow" / "mlflow.db") as db:
        steps = db.execute(
            "SELECT COUNT(DISTINCT step) FROM metrics WHERE run_uuid = ? AND key = 'reward'", (trains[0]["id"],)
        ).fetchone()[0]
        (description,) = db.execute("SELECT value FROM experiment_tags WHERE key = 'mlflow.note.content'").fetchone()
        (kind,) = db.execute("SELECT value FROM experiment_tags WHERE key = 'mlflow.experimentKind'").fetchone()
    assert kind == "custom_model_development"  # the UI opens on runs and charts, not on GenAI traces
    assert steps == 40  # one point per optimizer step: a curve, not a number
    assert description.startswith("The embedded CPU demo")  # the experiment says what it reproduces
    artifacts = demo_run / "results" / "mlflow" / "artifacts"
    for run in generations:
        assert (artifacts / run["id"] / "artifacts" / "generate" / "generations.jsonl").is_file()
        assert (artifacts / run["id"] / "artifacts" / "logs").is_dir()
    for run in grades:
        assert (artifacts / run["id"] / "artifacts" / "grade" / "grades.jsonl").is_file()
        sample = json.loads((artifacts / run["id"] / "artifacts" / "grade" / "graded_generations.json").read_text())
        assert sample["columns"][:3] == ["correct", "extracted", "gold"] and sample["data"]
    (table_run,) = [r for r in children if r["tags"]["pipeline.stage"] == "table"]
    cells = json.loads((artifacts / table_run["id"] / "artifacts" / "table" / "cells.json").read_text())
    eval_column = cells["columns"].index("eval_run_id")
    assert len(cells["data"]) == 12 and {row[eval_column] for row in cells["data"]} <= {r["id"] for r in grades}


CREDENTIAL = re.compile(
    r"(hub_token|access_token|auth_token|api_key|apikey|secret|password|passwd|credential)", re.IGNORECASE
)


def test_no_parameter_is_a_credential_and_training_logs_only_our_own(demo_run):
    with sqlite3.connect(demo_run / "results" / "mlflow" / "mlflow.db") as db:
        params = db.execute("SELECT run_uuid, key FROM params").fetchall()
        train_runs = [
            uuid for (uuid,) in db.execute("SELECT run_uuid FROM tags WHERE key = 'pipeline.stage' AND value = 'train'")
        ]
        train_metrics = {
            key
            for (key,) in db.execute(
                f"SELECT DISTINCT key FROM metrics WHERE run_uuid IN ({','.join('?' * len(train_runs))})", train_runs
            )
        }
    names = {key for _, key in params}
    # `..._env` names the environment variable that holds a key, never the key itself
    assert not [name for name in names if CREDENTIAL.search(name) and not name.endswith("_env")]
    assert any("max_new_tokens" in name for name in names)  # ordinary names are kept
    per_train_run = [sum(uuid == run for uuid, _ in params) for run in train_runs]
    assert len(train_runs) == 2 and max(per_train_run) < 120, per_train_run  # TRL's own callback logs ~235
    assert {"reward", "group/semantic_entropy", "group/majority_ratio", "tokens_per_second"} <= train_metrics


def test_forcing_the_grade_jobs_plans_no_generation(demo_run):
    planned = _planned(_snakemake(demo_run, "-n", "--configfile", "config/demo.yaml", "--forcerun", "grade"))
    assert planned.get("grade") == 12 and planned.get("table") == 1 and "generate" not in planned, planned


def test_a_new_grader_plans_only_its_grade_jobs(demo_run):
    config = yaml.safe_load((demo_run / "config" / "demo.yaml").read_text())
    config["evaluation"]["graders"].append("llm-judge")
    (demo_run / "config" / "judge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    planned = _planned(_snakemake(demo_run, "-n", "--configfile", "config/judge.yaml"))
    assert planned.get("grade") == 6 and planned.get("table") == 1 and "generate" not in planned, planned


def test_forced_regrade_of_one_evaluation_updates_the_table(demo_run):
    before, other_before = _cells(demo_run)["add_test"], _cells(demo_run, block=1)["add_test"]
    generation_mtime = (demo_run / EASY).parent.parent.joinpath("generations.jsonl").stat().st_mtime
    table_mtime = (demo_run / DEMO / "table.md").stat().st_mtime
    _snakemake(demo_run, "--configfile", "config/demo.yaml", "-f", EASY)
    _snakemake(demo_run, "--configfile", "config/demo.yaml")
    after, other_after = _cells(demo_run)["add_test"], _cells(demo_run, block=1)["add_test"]
    assert after["mlflow_run_id"] != before["mlflow_run_id"]
    superseded = {r["id"]: r["tags"].get("pipeline.superseded_by") for r in mlflow_runs(demo_run)}
    assert superseded[before["mlflow_run_id"]] == after["mlflow_run_id"]
    assert superseded[after["mlflow_run_id"]] is None and superseded[other_after["mlflow_run_id"]] is None
    assert other_after["mlflow_run_id"] == other_before["mlflow_run_id"]  # another evaluation: untouched
    assert after["value"] == before["value"]  # the same generations, regraded
    assert (demo_run / EASY).parent.parent.joinpath("generations.jsonl").stat().st_mtime == generation_mtime
    assert (demo_run / DEMO / "table.md").stat().st_mtime > table_mtime
    stages = [r["tags"].get("pipeline.stage") for r in mlflow_runs(demo_run)]
    assert stages.count("data") == 4 and stages.count("model") == 1  # nothing upstream redone
    assert stages.count("train") == 2 and stages.count("generate") == 6
    assert stages.count("grade") == 13 and stages.count("table") == 2


def _table_numbers(workdir: Path) -> list[tuple]:
    """Every number of the table with what it is (run ids and times aside: a rerun makes new ones)."""
    table = json.loads((workdir / DEMO / "table.json").read_text())
    return [
        (
            block["grader"],
            block["protocol"],
            row.get("model"),
            row.get("method"),
            benchmark,
            {key: value for key, value in cell.items() if "run" not in key and key != "finished_at"},
        )
        for block in table["blocks"]
        for row in block["rows"]
        for benchmark, cell in row["cells"].items()
    ]


def test_one_generate_job_per_evaluation_reproduces_the_table_of_one_per_model(demo_run):
    """`generate_per: benchmark` and `model` run the same command on the same spec: switching
    plans nothing, and regenerating every evaluation in its own job (its own engine) gives the
    very table the model jobs (one engine each) gave."""
    per_benchmark = ["--config", "evaluation={generate_per: benchmark}"]
    _snakemake(demo_run, "--configfile", "config/demo.yaml")  # up to date first
    before = _table_numbers(demo_run)
    assert _planned(_snakemake(demo_run, "-n", "--configfile", "config/demo.yaml", *per_benchmark)) == {}
    planned = _planned(
        _snakemake(demo_run, "-n", "--forcerun", "generate", "--configfile", "config/demo.yaml", *per_benchmark)
    )
    assert planned.get("generate") == 6 and planned.get("grade") == 12, planned  # one job per evaluation
    generations = demo_run / SAMPLED / "generations.jsonl"
    generated_before = generations.read_bytes()
    _snakemake(demo_run, "--forcerun", "generate", "--configfile", "config/demo.yaml", *per_benchmark)
    assert generations.read_bytes() == generated_before
    assert _table_numbers(demo_run) == before and len(before) == 12
    assert _planned(_snakemake(demo_run, "-n", "--configfile", "config/demo.yaml")) == {}  # and back


def test_changing_only_mlflow_settings_reruns_no_job(demo_run):
    """Jobs find the tracking config in EMPO_TRACKING_SPEC, not in a rule parameter: another
    MLflow experiment or store gives another tracking spec file, and no job is planned."""
    _snakemake(demo_run, "--configfile", "config/demo.yaml")  # up to date first
    other = ["--config", "mlflow={experiment: another-experiment}"]
    assert _planned(_snakemake(demo_run, "-n", "--configfile", "config/demo.yaml", *other)) == {}
    specs = sorted(path.name for path in (demo_run / DEMO / "specs").glob("tracking-*.json"))
    assert len(specs) == 2, specs  # the new spec was written, and still nothing reruns


def test_bad_config_fails_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    config["evaluation"]["decoding"]["temprature"] = 0.7
    (workdir / "config" / "bad.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(workdir, "--configfile", "config/bad.yaml", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config/bad.yaml" in output and "'evaluation.decoding.temprature'" in output
    assert "Using workflow specific profile profiles/default" in output  # rerun-incomplete etc. apply
    assert not (workdir / "results").exists()


def test_paper_config_dry_run_plans_every_eval_quickly(tmp_path):
    workdir = copy_workflow(tmp_path)
    result = _snakemake(workdir, "-n", "-p", "--configfile", "config/config.yaml")
    shell_commands = [line for line in result.stdout.splitlines() if "python -m pipelines." in line]
    assert shell_commands and not any("{" in line for line in shell_commands)  # specs are files, not JSON
    counts = dict(
        line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    assert int(counts["generate"]) == 14  # one per (model, method); its speed (< 5 s): benchmarks/dry_run.py
    assert int(counts["train_verl"]) == 6 and int(counts["convert"]) == 6  # the paper trains with verl


def test_every_stage_takes_its_threads_and_resources_from_the_config(tmp_path):
    """resources.<stage> keys take effect (data and model jobs hard-coded one thread before;
    convert borrowed generation's memory and a fixed runtime)."""
    workdir = copy_workflow(tmp_path)
    override = {
        "resources": {"data": {"cpus": 3}, "model": {"cpus": 5}, "convert": {"cpus": 6, "mem_mb": 12345, "runtime": 77}}
    }
    (workdir / "config" / "override.yaml").write_text(yaml.safe_dump(override))
    output = _snakemake(
        workdir, "-n", "--cores", "16", "--configfile", "config/config.yaml", "config/override.yaml"
    ).stdout  # more cores than threads: no capping
    jobs = output.split("\nrule ")[1:]

    def rule_jobs(name):
        return [job for job in jobs if job.startswith(f"{name}:")]

    assert rule_jobs("data") and all("threads: 3" in job for job in rule_jobs("data"))
    assert rule_jobs("model") and all("threads: 5" in job for job in rule_jobs("model"))
    assert rule_jobs("convert") and all(
        "threads: 6" in job and "mem_mb=12345" in job and "runtime=77" in job for job in rule_jobs("convert")
    )


def _planned(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts of a dry run's summary table."""
    return {
        line.split()[0]: int(line.split()[1])
        for line in result.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }


def test_a_missing_metrics_file_replans_its_grade_and_the_table(demo_run):
    """Snakemake alone would say "Nothing to be done" while table.md still showed the number."""
    shown = _cells(demo_run)["add_test"]["value"]
    (demo_run / EASY).unlink()
    planned = _planned(_snakemake(demo_run, "-n", "--configfile", "config/demo.yaml"))
    assert planned.get("grade") == 1 and planned.get("table") == 1 and "generate" not in planned, planned
    _snakemake(demo_run, "--configfile", "config/demo.yaml")
    assert (demo_run / EASY).is_file() and _cells(demo_run)["add_test"]["value"] == shown


def test_an_edited_benchmark_file_reruns_its_data_job_and_what_reads_it(demo_run):
    """A `kind: file` dataset's content is part of its data job's settings (its digest): after
    an edit `snakemake` replans the data job, every evaluation on it and the table, and no
    training; the file as it was plans nothing again."""
    source = demo_run / "config" / "demo_data" / "add_test.jsonl"
    original = source.read_bytes()
    assert _planned(_snakemake(demo_run, "-n", "--configfile", "config/demo.yaml")) == {}
    try:
        source.write_bytes(original + b'{"problem": "What is 100 + 1?", "answer": "101"}\n')
        planned = _planned(_snakemake(demo_run, "-n", "--configfile", "config/demo.yaml"))
        assert planned.get("data") == 1 and planned.get("table") == 1 and planned.get("grade", 0) >= 1, planned
        assert "train_trl" not in planned and "model" not in planned, planned
    finally:
        source.write_bytes(original)
    assert _planned(_snakemake(demo_run, "-n", "--configfile", "config/demo.yaml")) == {}


def test_a_finished_training_job_rerun_only_exports(demo_run):
    """As after `kill -9` of snakemake once training finished: the job reruns, trains no step."""
    manifest_path = demo_run / DEMO / "models" / "tiny-qwen2" / "empo" / "model.json"
    before = json.loads(manifest_path.read_text())
    manifest_path.unlink()
    _snakemake(demo_run, str(manifest_path.relative_to(demo_run)), "--configfile", "config/demo.yaml")
    after = json.loads(manifest_path.read_text())
    assert after["exported_only"] and after["global_step"] == before["global_step"] == 40
    assert after["sha256"] == before["sha256"], "rerunning a finished job must change no weights"
    checkpoints = demo_run / DEMO / "train" / "tiny-qwen2" / "empo"
    assert max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*")) == 40


def test_a_changed_learning_rate_retrains_from_the_base(demo_run):
    config = yaml.safe_load((demo_run / "config" / "demo.yaml").read_text())
    config["training"]["methods"]["grpo"]["learning_rate"] = 5.0e-5
    (demo_run / "config" / "lr.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _snakemake(demo_run, "--configfile", "config/demo.yaml")  # everything up to date first
    planned = _planned(_snakemake(demo_run, "-n", "--configfile", "config/lr.yaml"))
    # only grpo, its generate job (2 evaluations) and their 4 grades
    assert planned.get("train_trl") == 1 and planned.get("generate") == 1 and planned.get("grade") == 4, planned
    _snakemake(demo_run, "--configfile", "config/lr.yaml")
    manifest = json.loads((demo_run / DEMO / "models" / "tiny-qwen2" / "grpo" / "model.json").read_text())
    assert manifest["trainer"]["learning_rate"] == 5.0e-5
    assert manifest["resumed_from"] is None and not manifest["exported_only"]
    assert manifest["global_step"] == 40 and manifest["superseded_checkpoints"]
    assert (demo_run / manifest["superseded_checkpoints"] / "checkpoint-40").is_dir()  # moved, not lost


def test_a_failing_job_shows_its_error_in_the_terminal(tmp_path):
    """profiles/default (show-failed-logs) is loaded for local runs: the job's own error text
    reaches the terminal, not only "check log file(s)"."""
    workdir = copy_workflow(tmp_path)
    (workdir / "config" / "demo_data" / "add_test.jsonl").write_bytes(b'{"problem": "1+1", "answer": "\xff"}\n')
    result = _snakemake(workdir, "results/demo/data/add_test.parquet", "--configfile", "config/demo.yaml", check=False)
    assert result.returncode != 0
    assert "is not UTF-8: byte 0xff" in result.stdout + result.stderr


def test_a_broken_tracking_store_never_fails_the_workflow(tmp_path):
    workdir = copy_workflow(tmp_path)
    (workdir / "not-a-dir").write_text("")
    config = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    config["mlflow"]["tracking_uri"] = "sqlite:///not-a-dir/mlflow.db"
    (workdir / "config" / "broken.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = _snakemake(workdir, "results/demo/data/add_test.parquet", "--configfile", "config/broken.yaml")
    assert (workdir / DEMO / "data" / "add_test.parquet").is_file()
    assert "WARNING: MLflow tracking unavailable" in result.stderr


def test_make_report_builds_one_html_file_with_the_table_chart_curves_and_samples(demo_run):
    result = _snakemake(demo_run, "--configfile", "config/demo.yaml", "--report", "results/demo/report.html")
    html = (demo_run / DEMO / "report.html").read_text(errors="replace")
    for item in ("table.png", "table.csv", "graded_samples.csv", "tiny-qwen2.png"):
        assert f"Adding {item}" in result.stdout + result.stderr and item in html
    assert len(html) > 100_000


def test_the_curves_overlay_every_trained_method_of_the_model(demo_run):
    from pipelines import curves
    from pipelines.models import read_manifest

    figure = demo_run / DEMO / "curves" / "tiny-qwen2.png"
    assert figure.stat().st_size > 20_000
    for method in ("empo", "grpo"):
        manifest = read_manifest(demo_run / DEMO / "models" / "tiny-qwen2" / method / "model.json")
        history = curves.method_history(
            {"checkpoints": str(demo_run / DEMO / "train" / "tiny-qwen2" / method)}, manifest, None
        )
        steps = [step for step, _ in history["reward (mean over rollouts)"]]
        assert steps[-1] == manifest["rollout_steps"] and len(history) == len(curves.CURVES)
    runs = [run for run in mlflow_runs(demo_run) if run["name"] == "curves:tiny-qwen2"]
    assert runs and all(run["status"] == "FINISHED" for run in runs)  # one per (re)drawing


def test_a_moved_results_tree_reruns_an_evaluation_from_itself(demo_run, tmp_path_factory):
    """Last in this module: it moves the demo project away (results, MLflow store and all), then
    regenerates one evaluation there. Nothing may come from or go to the old place: it is gone,
    and must stay gone."""
    import shutil

    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.move(str(demo_run), moved)
    generations = "results/demo/eval/tiny-qwen2/empo/add_test/greedy/generations.jsonl"
    metrics = "results/demo/eval/tiny-qwen2/empo/add_test/greedy/math-verify/metrics.json"
    before = json.loads((moved / metrics).read_text())
    manifest = json.loads((moved / DEMO / "models/tiny-qwen2/empo/model.json").read_text())
    assert manifest["path"] == "hf" and manifest["base"]["path"] == "../base/hf"  # stored relative
    _snakemake(moved, "-f", generations, "--configfile", "config/lr.yaml")
    _snakemake(moved, "--configfile", "config/lr.yaml")
    after = json.loads((moved / metrics).read_text())
    assert after["metrics"] == before["metrics"] and after["generation"]["sha256"] == before["generation"]["sha256"]
    assert not demo_run.exists(), "a job read or wrote the old results tree"
    with sqlite3.connect(moved / "results" / "mlflow" / "mlflow.db") as db:
        (location,) = db.execute("SELECT artifact_location FROM experiments WHERE name = 'empo-demo'").fetchone()
        uris = [uri for (uri,) in db.execute("SELECT artifact_uri FROM runs")]
    root = (moved / "results" / "mlflow" / "artifacts").resolve().as_uri()
    assert location == root and all(uri.startswith(root) for uri in uris)
