"""The tracking service: a job logged through it looks exactly as one that logs itself, and
never imports MLflow; a gone service means MLflow in the job's own process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import mlflow
import pandas as pd

from pipelines import tracking, tracking_service
from tests.conftest import REPO_ROOT

JOB = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    from pipelines import tracking
    with tracking.job_run(json.loads(sys.argv[1]), "grade", "m/base/b", {{"decoding": {{"n": 4}}, "x": "y"}},
                          log_file="job.log") as tracker:
        tracker.log_metrics({{"accuracy": 0.5, "pass@4": 0.75}})
        tracker.log_metrics({{"items_done": 3}}, step=3)
        tracker.log_metric_series("loss", [2.0, 1.5, 1.25])
        tracker.set_tags({{"model": "m"}})
        tracker.link_runs({{"generation_run_id": "0123"}})
        tracker.log_artifact("metrics.json", "grade")
        tracker.log_table([{{"correct": True, "gold": "2"}}, {{"correct": False, "gold": "3"}}], "grade/rows.json")
        tracker.log_dataset("data.parquet", name="bench", source="data.parquet", digest="abc", context="benchmark")
    print(json.dumps({{"run_id": tracker.run_id, "failures": tracker.failures,
                       "mlflow_imported": "mlflow" in sys.modules}}))
""")

VOLATILE_TAGS = {"mlflow.parentRunId", "mlflow.source.name", "mlflow.note.content"}


def _run_job(tmp_path, config) -> dict:
    script = tmp_path / "job.py"
    script.write_text(JOB.format(repo=str(REPO_ROOT)))
    result = subprocess.run(
        [sys.executable, str(script), json.dumps(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _logged(client, run_id) -> dict:
    run = client.get_run(run_id)
    return {
        "params": run.data.params,
        "metrics": {
            key: [(m.value, m.step) for m in client.get_metric_history(run_id, key)] for key in run.data.metrics
        },
        "tags": {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS},
        "status": run.info.status,
        "artifacts": sorted(a.path for folder in ("grade", "logs") for a in client.list_artifacts(run_id, folder))
        + [a.path for a in client.list_artifacts(run_id) if a.path.endswith(".json")],
        "datasets": [(d.dataset.name, d.dataset.digest, [t.value for t in d.tags]) for d in run.inputs.dataset_inputs],
    }


def _wait_until_gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child: reap it (a zombie answers kill 0)
                return True
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.2)
    return False


def test_a_job_through_the_service_logs_what_it_would_log_itself(tracking_config, tmp_path):
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.5}')
    (tmp_path / "job.log").write_text("log\n")
    pd.DataFrame({"question": ["1+1"], "answer": ["2"]}).to_parquet(tmp_path / "data.parquet")
    tracking.start_workflow_run(tracking_config, "results", [], "snakemake")
    resolved = tracking.resolve_tracking(tracking_config)
    service = tracking_service.start_service(resolved, idle=60)
    assert service is not None and service.alive()

    through_service = _run_job(tmp_path, tracking_config)
    assert through_service["failures"] == 0
    assert not through_service["mlflow_imported"], "a job served by the service must not import MLflow"

    tracking_service.main(["stop", "--results-dir", str(tmp_path / "results")])
    assert _wait_until_gone(service.pid), "the service exits once stopped and idle"
    itself = _run_job(tmp_path, tracking_config)
    assert itself["mlflow_imported"] and itself["failures"] == 0

    client = mlflow.MlflowClient(resolved["tracking_uri"])
    served, local = _logged(client, through_service["run_id"]), _logged(client, itself["run_id"])
    assert served["status"] == "FINISHED" and served["metrics"]["pass_at_4"] == [(0.75, 0)]
    assert served["metrics"]["loss"] == [(2.0, 0), (1.5, 1), (1.25, 2)]  # a series: one call, steps 0, 1, 2
    assert served["tags"].pop("pipeline.superseded_by") == itself["run_id"]  # the rerun replaced it
    assert served == local
    assert served["datasets"] == [("bench", "abc", ["benchmark"])]
    assert "grade/rows.json" in served["artifacts"] and "logs/job.log" in served["artifacts"]
    description = client.get_run(through_service["run_id"]).data.tags["mlflow.note.content"]
    assert description.startswith("Made from: [generation run](#/experiments/")


def test_a_refused_connection_falls_back_to_mlflow_in_the_process():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: connections are refused
    calls = []

    class Recorder:
        def call(self, operation, **arguments):
            calls.append((operation, arguments))
            return "done"

    backend = tracking_service.ServiceBackend(tracking_service.ServiceClient("127.0.0.1", port, "t", 1), Recorder())
    assert backend.call("set_tags", run_id="r", tags={"a": "b"}) == "done"
    assert backend.call("set_tags", run_id="r", tags={"c": "d"}) == "done"
    assert calls == [
        ("set_tags", {"run_id": "r", "tags": {"a": "b"}}),
        ("set_tags", {"run_id": "r", "tags": {"c": "d"}}),
    ]
    assert backend.service is None


def test_a_service_of_another_store_host_or_code_is_not_used(tracking_config, tmp_path):
    resolved = tracking.resolve_tracking(tracking_config)
    record = tracking_service.service_file(resolved["results_dir"])
    record.parent.mkdir(parents=True)
    info = {
        "host": socket.gethostname(),
        "port": 1,
        "pid": 1,
        "token": "t",
        "tracking_uri": resolved["tracking_uri"],
        "fingerprint": tracking_service.code_fingerprint(),
    }
    record.write_text(json.dumps(info))
    assert tracking_service.find_service(resolved) is not None
    for key, other in (("host", "elsewhere"), ("tracking_uri", "sqlite:////other.db"), ("fingerprint", "old")):
        record.write_text(json.dumps({**info, key: other}))
        assert tracking_service.find_service(resolved) is None, key


def test_a_bad_token_or_operation_is_refused(tracking_config):
    resolved = tracking.resolve_tracking(tracking_config)
    service = tracking_service.start_service(resolved, idle=5)
    assert service is not None
    try:
        forged = tracking_service.ServiceClient(service.host, service.port, "forged", service.pid)
        for client, operation in ((forged, "set_tags"), (service, "__init__"), (service, "client")):
            try:
                client.call(operation)
            except tracking_service.ServiceError as error:
                assert "bad token" in str(error) or "unknown operation" in str(error)
            else:
                raise AssertionError(f"{operation} was accepted")
    finally:
        tracking_service.main(["stop", "--results-dir", resolved["results_dir"]])
        assert _wait_until_gone(service.pid)
