"""MLflow: the store created once, a parent run per workflow, child runs per job."""

from __future__ import annotations

import json

import mlflow
import pytest

from pipelines import tracking


@pytest.fixture
def tracking_config(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return {"tracking_uri": "sqlite:///results/mlflow/mlflow.db", "artifact_root": "results/mlflow/artifacts",
            "experiment": "unit", "enabled": True, "results_dir": "results"}


def test_relative_sqlite_uri_becomes_absolute_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri("sqlite:///a/b.db") == f"sqlite:///{tmp_path}/a/b.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri("sqlite:///a/b.db") == "http://127.0.0.1:5999"


def test_parent_and_child_runs_with_params_metrics_artifacts(tracking_config, tmp_path):
    config_file = tmp_path / "demo.yaml"
    config_file.write_text("x: 1\n")
    parent_id = tracking.start_workflow_run(tracking_config, "results", [str(config_file)], "snakemake")
    record = json.loads((tmp_path / "results" / "mlflow" / "workflow_run.json").read_text())
    assert record["run_id"] == parent_id

    artifact = tmp_path / "metrics.json"
    artifact.write_text("{}")
    spec = {"model": "m", "decoding": {"n": 4, "stop": ["</s>"]}}
    with tracking.job_run(tracking_config, "eval", "m/base/b", spec) as tracker:
        tracker.log_metrics({"accuracy": 0.5, "ignored": "text", "pass@4": 0.75, "maj@16": 0.5})
        tracker.log_metrics({"running_accuracy": 0.25}, step=3)
        tracker.log_artifact(artifact, "eval")
    tracking.end_workflow_run(tracking_config, "results", "FINISHED")

    client = mlflow.MlflowClient(tracking.resolve_tracking_uri(tracking_config["tracking_uri"]))
    child = client.get_run(tracker.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.data.params["decoding.n"] == "4"
    assert child.data.params["decoding.stop"] == '["</s>"]'
    assert "version.math-verify" in child.data.params
    assert child.data.metrics["accuracy"] == 0.5
    assert child.data.metrics["pass_at_4"] == 0.75 and child.data.metrics["maj_at_16"] == 0.5
    assert "ignored" not in child.data.metrics
    assert [m.step for m in client.get_metric_history(tracker.run_id, "running_accuracy")] == [3]
    assert [a.path for a in client.list_artifacts(tracker.run_id, "eval")] == ["eval/metrics.json"]
    assert child.info.status == "FINISHED"
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(parent_id, "config")] == ["config/demo.yaml"]


def test_failing_job_marks_its_run_failed(tracking_config):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.job_run(tracking_config, "eval", "x", {}) as tracker:
            raise RuntimeError("boom")
    client = mlflow.MlflowClient(tracking.resolve_tracking_uri(tracking_config["tracking_uri"]))
    assert client.get_run(tracker.run_id).info.status == "FAILED"


def test_unreachable_server_does_not_fail_the_job(tracking_config, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    unreachable = {**tracking_config, "tracking_uri": "http://127.0.0.1:9"}
    with tracking.job_run(unreachable, "eval", "x", {"a": 1}) as tracker:
        tracker.log_metrics({"accuracy": 1.0})
    assert not tracker.active


def test_disabled_tracking_touches_nothing(tracking_config, tmp_path):
    with tracking.job_run({**tracking_config, "enabled": False}, "eval", "x", {}) as tracker:
        tracker.log_metrics({"accuracy": 1.0})
    assert not tracker.active
    assert not (tmp_path / "results").exists()
