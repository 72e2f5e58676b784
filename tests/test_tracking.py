"""MLflow: the store created once, a parent run per workflow, child runs per job."""

from __future__ import annotations

import json

import mlflow
import pytest

from pipelines import tracking


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


@pytest.mark.slow
def test_job_metrics_survive_a_short_tracking_server_outage(tmp_path, monkeypatch):
    """A real `mlflow server` on loopback is stopped while a job logs, and restarted ~6 s later:
    the job blocks in MLflow's retries instead of failing, and no metric is lost."""
    import socket
    import subprocess
    import sys
    import threading
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    command = [
        mlflow_bin,
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]

    def start_server() -> subprocess.Popen:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                return server
            except OSError:
                time.sleep(0.5)
        server.kill()
        raise AssertionError("mlflow server did not start")

    def stop_server(server: subprocess.Popen) -> None:
        import os
        import signal

        os.killpg(server.pid, signal.SIGKILL)
        server.wait()

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "8")
    config = {
        "tracking_uri": f"http://127.0.0.1:{port}",
        "artifact_root": "unused",
        "experiment": "outage",
        "enabled": True,
        "results_dir": str(tmp_path / "results"),
    }
    server = start_server()
    restarted: list[subprocess.Popen] = []
    try:
        with tracking.job_run(config, "eval", "m/base/b", {"a": 1}) as tracker:
            tracker.log_metrics({"running_accuracy": 0.1}, step=1)
            stop_server(server)
            threading.Timer(6, lambda: restarted.append(start_server())).start()
            tracker.log_metrics({"running_accuracy": 0.2}, step=2)  # blocks in retries, then lands
            tracker.log_metrics({"accuracy": 0.5})
        assert tracker.failures == 0
        client = mlflow.MlflowClient(config["tracking_uri"])
        history = client.get_metric_history(tracker.run_id, "running_accuracy")
        assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2)]
        assert client.get_run(tracker.run_id).data.metrics["accuracy"] == 0.5
    finally:
        for process in restarted:
            stop_server(process)
