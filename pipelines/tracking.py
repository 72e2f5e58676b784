"""The only module that talks to MLflow.

Layout in MLflow: one experiment per config; one *parent* run per workflow invocation (opened
by the Snakefile's `onstart`, closed by `onsuccess`/`onerror`); one *child* run per job,
holding the job's resolved spec as params, package versions and git commit, its metrics and
its files as artifacts.

The sqlite store is created here, in a single process, before any job runs: several processes
creating a new sqlite store at once corrupt it (measured). Files under `results/` are the
source of truth: a tracking failure inside a job is logged and counted, never allowed to fail a
job whose outputs are already written.

Every write is a `TrackingOperations` method called by run id, either in the job's own process
or in the workflow's tracking service (`pipelines.tracking_service`), the same code both ways.
A job on the host where the service runs sends its calls there and never imports MLflow (about
5 s per process: MLflow, pandas, SQLAlchemy); elsewhere (a SLURM compute node) it imports it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.provenance import git_commit, package_versions

LOG = logging.getLogger(__name__)

WORKFLOW_RUN_FILE = "workflow_run.json"
DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as an experiment's description
# MLflow 3's UI opens an experiment without this tag on its GenAI (traces) pages; ours is model
# training, whose pages are the runs table and the metric charts.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(uri: str) -> str:
    """MLFLOW_TRACKING_URI wins over the config; relative sqlite paths become absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def workflow_run_file(results_dir: str | Path) -> Path:
    return Path(results_dir) / "mlflow" / WORKFLOW_RUN_FILE


def resolve_tracking(tracking: Mapping[str, Any]) -> dict[str, Any]:
    """The tracking config with every path absolute (store URI, artifact root, results tree):
    what the tracking service receives, so that it reads the config as the caller meant it."""
    return {
        **tracking,
        "tracking_uri": resolve_tracking_uri(tracking["tracking_uri"]),
        "artifact_root": str(Path(tracking.get("artifact_root", "results/mlflow/artifacts")).resolve()),
        "results_dir": str(Path(tracking.get("results_dir", "results")).resolve()),
    }


def run_context(owner_pid: int | None = None) -> dict[str, str]:
    """Tags naming who made a run: user, script and git commit of the CALLING process (what
    MLflow's fluent `start_run` adds), computed without importing MLflow, so that a run opened
    through the tracking service names the job, not the service."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    commit = git_commit()
    tags = {
        "mlflow.user": user,
        "mlflow.source.type": "LOCAL",
        "git_commit": commit,
        "mlflow.source.name": str(Path(sys.argv[0]).resolve()) if sys.argv and sys.argv[0] else "",
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    if owner_pid is not None:  # a workflow run: which Snakemake process owns it
        tags.update({"pipeline.host": socket.gethostname(), "pipeline.pid": str(owner_pid)})
    return tags


def ensure_experiment(client: Any, tracking: Mapping[str, Any]) -> str:
    """Create the store (sqlite: file and schema) and the experiment if missing; return its id.

    `tracking` is resolved (`resolve_tracking`). Call from one process only, before parallel
    jobs start (the workflow's start hook does).
    """
    sqlite_file = _sqlite_path(tracking["tracking_uri"])
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    experiment = client.get_experiment_by_name(tracking["experiment"])
    artifact_location = None
    if sqlite_file is not None:
        artifact_dir = Path(tracking["artifact_root"])
        artifact_dir.mkdir(parents=True, exist_ok=True)
        artifact_location = artifact_dir.as_uri()
    if experiment is not None:
        if artifact_location is not None and experiment.artifact_location != artifact_location:
            relocate_artifacts(sqlite_file, experiment.experiment_id, experiment.artifact_location, artifact_location)
        experiment_id = experiment.experiment_id
        described = experiment.tags.get(DESCRIPTION_TAG)
    else:
        experiment_id = client.create_experiment(tracking["experiment"], artifact_location=artifact_location)
        described = None
    if tracking.get("description") and described != tracking["description"]:
        client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, tracking["description"])  # the UI's description
    if experiment is None or experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment_id


def relocate_artifacts(sqlite_file: Path, experiment_id: str, old: str, new: str) -> None:
    """A sqlite store copied or moved with its results tree still names the old tree's artifact
    folder, so new runs would write there (outside this tree) and old ones would show files
    from there. Point the experiment at this tree's artifact folder (`mlflow.artifact_root`),
    and each run whose artifacts came along to its copy here."""
    import sqlite3

    LOG.warning(
        "MLflow experiment %s stored its artifacts in %s; this results tree keeps them in %s: updating the store",
        experiment_id,
        old,
        new,
    )
    with sqlite3.connect(sqlite_file) as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, experiment_id))
        runs = db.execute(
            "SELECT run_uuid, artifact_uri FROM runs WHERE experiment_id = ?", (experiment_id,)
        ).fetchall()
        for run_id, uri in runs:
            if uri and uri.startswith(old.rstrip("/") + "/"):
                moved = new.rstrip("/") + uri[len(old.rstrip("/")) :]
                if Path(moved.removeprefix("file://")).exists() or not Path(uri.removeprefix("file://")).exists():
                    db.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (moved, run_id))


def process_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (one we may not signal counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _process_gone(tags: Mapping[str, str]) -> bool:
    """True only when the run's Snakemake process is known to be gone: same host, no such pid.
    On another host (a compute node looking at the submit host's run) nothing can be known."""
    pid = tags.get("pipeline.pid", "")
    if tags.get("pipeline.host") != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
        return False
    return not process_alive(int(pid))


def close_dead_workflow_run(client: Any, results_dir: str | Path) -> str | None:
    """The previous parent run of this results tree, left RUNNING by a killed Snakemake, is
    closed as KILLED (with its RUNNING children); returns its id if it was closed."""
    record = workflow_run_file(results_dir)
    if not record.is_file():
        return None
    previous = client.get_run(json.loads(record.read_text())["run_id"])
    if previous.info.status != "RUNNING" or not _process_gone(previous.data.tags):
        return None
    children = client.search_runs(
        [previous.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{previous.info.run_id}' and attributes.status = 'RUNNING'",
    )
    for child in children:
        client.set_terminated(child.info.run_id, status="KILLED")
    client.set_terminated(previous.info.run_id, status="KILLED")
    LOG.warning(
        "MLflow: workflow run %s was left RUNNING by a killed Snakemake; marked KILLED (with %d running job run(s))",
        previous.info.run_id,
        len(children),
    )
    return previous.info.run_id


def flatten_params(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested spec -> `a.b.c` keys with string values (lists as JSON), within MLflow's limits."""
    flat: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


def metric_name(name: str) -> str:
    """MLflow-legal metric name: `pass@4` -> `pass_at_4` (MLflow rejects `@` and most symbols)."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name.replace("@", "_at_"))


def run_links_markdown(experiment_id: str | None, links: Mapping[str, str]) -> str:
    """`Made from: [training run](#/experiments/1/runs/<id>) · ...`: links the MLflow UI follows."""
    parts = [
        f"[{name.removesuffix('_run_id').replace('_', ' ')} run](#/experiments/{experiment_id}/runs/{run_id})"
        for name, run_id in links.items()
    ]
    return "Made from: " + " · ".join(parts)


class TrackingOperations:
    """Every MLflow write of this project, by run id (MlflowClient; no fluent "active run"), so
    that one code path serves a job's own process and the tracking service's threads alike.
    Arguments are JSON values and absolute paths: they may have crossed a socket."""

    def __init__(self, tracking_uri: str):
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)

    def start_workflow(
        self,
        tracking: Mapping[str, Any],
        config_files: list[str],
        command: str,
        context: Mapping[str, str],
        versions: Mapping[str, str],
    ) -> str:
        """Open the parent run of a workflow invocation and record it in results/mlflow/."""
        experiment_id = ensure_experiment(self.client, tracking)
        close_dead_workflow_run(self.client, tracking["results_dir"])
        run = self.client.create_run(
            experiment_id,
            run_name=f"workflow {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={
                **context,
                "pipeline.kind": "workflow",
                "snakemake.command": command,
                "config_files": ",".join(config_files),
            },
        )
        run_id = run.info.run_id
        self.log_params(run_id, {f"version.{name}": version for name, version in versions.items()})
        for config_file in config_files:
            if Path(config_file).is_file():
                self.client.log_artifact(run_id, config_file, artifact_path="config")
        record = workflow_run_file(tracking["results_dir"])
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(
            json.dumps(
                {
                    "run_id": run_id,
                    "experiment_id": experiment_id,
                    "tracking_uri": tracking["tracking_uri"],
                    "started": time.time(),
                },
                indent=2,
            )
        )
        LOG.info("MLflow parent run %s in experiment '%s'", run_id, tracking["experiment"])
        return run_id

    def end_workflow(self, tracking: Mapping[str, Any], status: str, log_file: str | None) -> str | None:
        """Close the parent run (FINISHED or FAILED), attaching Snakemake's log and the table."""
        record = workflow_run_file(tracking["results_dir"])
        if not record.is_file():
            return None
        run_id = json.loads(record.read_text())["run_id"]
        if log_file and Path(log_file).is_file():
            self.client.log_artifact(run_id, log_file, artifact_path="snakemake")
        for name in ("table.md", "table.csv", "table.png", "table.json"):
            path = Path(tracking["results_dir"]) / name
            if path.is_file():
                self.client.log_artifact(run_id, str(path), artifact_path="table")
        self.client.set_terminated(run_id, status=status)
        return run_id

    def start_job(
        self, tracking: Mapping[str, Any], stage: str, name: str, context: Mapping[str, str]
    ) -> dict[str, str]:
        """A job's child run under the workflow's parent run (if one is open); earlier runs of
        the same job left RUNNING by a kill are closed."""
        record = workflow_run_file(tracking["results_dir"])
        parent = json.loads(record.read_text()) if record.is_file() else {}
        if parent.get("tracking_uri") not in (None, tracking["tracking_uri"]):
            parent = {}  # a record of another store: do not nest under a foreign run id
        experiment_id = parent.get("experiment_id") or ensure_experiment(self.client, tracking)
        tags = {**context, "pipeline.stage": stage, "pipeline.job": name}
        if parent.get("run_id"):
            tags["mlflow.parentRunId"] = parent["run_id"]
        run = self.client.create_run(experiment_id, run_name=f"{stage}:{name}", tags=tags)
        try:
            close_orphaned_job_runs(self.client, run, stage, name)
        except Exception as error:  # noqa: BLE001 - bookkeeping of earlier runs never stops this one
            LOG.warning(
                "MLflow: closing orphaned runs of %s:%s failed (%s: %s)", stage, name, type(error).__name__, error
            )
        return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}

    def end_job(self, run_id: str, status: str, stage: str, name: str) -> None:
        self.client.set_terminated(run_id, status=status)
        if status == "FINISHED":
            mark_superseded_runs(self.client, run_id, stage, name)

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit for params
            self.client.log_batch(run_id, params=items[start : start + 100], synchronous=True)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None, timestamp_ms: int) -> None:
        from mlflow.entities import Metric

        items = [Metric(key, value, timestamp_ms, step or 0) for key, value in metrics.items()]
        for start in range(0, len(items), 1000):  # MLflow's batch limit for metrics
            self.client.log_batch(run_id, metrics=items[start : start + 1000], synchronous=True)

    def log_metric_series(self, run_id: str, key: str, values: Sequence[float], timestamp_ms: int) -> None:
        """One metric's values at steps 0, 1, ... in batches (a per-step call each would cost
        a round trip per value: 2,800 for the demo model's warm-start loss)."""
        from mlflow.entities import Metric

        items = [Metric(key, float(value), timestamp_ms, step) for step, value in enumerate(values)]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000], synchronous=True)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()], synchronous=True)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, path, artifact_path)
        elif Path(path).exists():
            self.client.log_artifact(run_id, path, artifact_path)

    def log_table(self, run_id: str, data: Mapping[str, list], artifact_file: str) -> None:
        self.client.log_table(run_id, data=dict(data), artifact_file=artifact_file)

    def log_dataset(self, run_id: str, path: str, name: str, source: str, digest: str, context: str) -> None:
        """A parquet file as an MLflow dataset input (rows, schema, digest, source)."""
        import mlflow
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = mlflow.data.from_pandas(pd.read_parquet(path), source=source, name=name, digest=digest)
        self.client.log_inputs(
            run_id,
            datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])],
        )


#: What the tracking service may be asked to run (every public method of TrackingOperations).
OPERATIONS = frozenset(name for name in vars(TrackingOperations) if not name.startswith("_"))


class LocalBackend:
    """MLflow in this process, imported on first use (about 5 s: MLflow, pandas, SQLAlchemy)."""

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self._operations: TrackingOperations | None = None

    def call(self, operation: str, **arguments: Any) -> Any:
        if self._operations is None:
            self._operations = TrackingOperations(self.tracking_uri)
        return getattr(self._operations, operation)(**arguments)


def tracking_backend(tracking: Mapping[str, Any]) -> Any:
    """The workflow's tracking service when one serves this store on this host (no MLflow
    import in this process), else MLflow in this process."""
    from pipelines import tracking_service

    local = LocalBackend(tracking["tracking_uri"])
    service = tracking_service.find_service(tracking)
    return tracking_service.ServiceBackend(service, fallback=local) if service else local


class JobTracker:
    """Logging handle of one job's child run. Every call is best-effort (files are the truth)."""

    def __init__(self, run_id: str | None, experiment_id: str | None = None, backend: Any = None):
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.backend = backend
        self.failures = 0

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def _call(self, operation: str, **arguments: Any) -> None:
        if not self.active:
            return
        try:
            self.backend.call(operation, run_id=self.run_id, **arguments)
        except Exception as error:  # noqa: BLE001 - MLflow raises many types; none may kill a job
            self.failures += 1
            LOG.warning(
                "MLflow %s failed (%s: %s); the result files are unaffected", operation, type(error).__name__, error
            )

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", params=flatten_params(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        numeric = {
            metric_name(k): float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._call("log_metrics", metrics=numeric, step=step, timestamp_ms=int(time.time() * 1000))

    def log_metric_series(self, key: str, values: Sequence[float]) -> None:
        """`values` as the history of metric `key`, at steps 0, 1, ... (one batched call)."""
        self._call(
            "log_metric_series",
            key=metric_name(key),
            values=[float(v) for v in values],
            timestamp_ms=int(time.time() * 1000),
        )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._call("log_artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("set_tags", tags={key: str(value) for key, value in tags.items()})

    def link_runs(self, links: Mapping[str, str]) -> None:
        """Tag the runs that made this job's inputs (`training_run_id`, ...) and write them as
        links in the run's description, one click away in the UI (a tag is only text)."""
        links = {name: str(run_id) for name, run_id in links.items() if run_id}
        if links:
            self.set_tags({**links, DESCRIPTION_TAG: run_links_markdown(self.experiment_id, links)})

    def log_table(self, rows: list[Mapping[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table (the UI's artifact view and `mlflow.load_table`)."""
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            data = {column: [row.get(column) for row in rows] for column in columns}
            self._call("log_table", data=data, artifact_file=artifact_file)

    def log_dataset(self, path: str | Path, name: str, source: str, digest: str, context: str) -> None:
        """Record a parquet file as an MLflow dataset input (rows, digest, source)."""
        self._call(
            "log_dataset", path=str(Path(path).resolve()), name=name, source=source, digest=digest, context=context
        )


def close_orphaned_job_runs(client: Any, run: Any, stage: str, name: str) -> list[str]:
    """Earlier runs of this same job still RUNNING were left by a killed job (Snakemake never
    runs one job twice at once): close them as KILLED and tag this run with the one it
    continues (`pipeline.continues`), so a resumed job's curve can be read across both."""
    orphans = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`pipeline.stage` = '{stage}' and tags.`pipeline.job` = '{name}' "
        "and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"],
    )
    orphans = [orphan for orphan in orphans if orphan.info.run_id != run.info.run_id]
    for orphan in orphans:
        client.set_terminated(orphan.info.run_id, status="KILLED")
        client.set_tag(orphan.info.run_id, "pipeline.continued_by", run.info.run_id)
        parent = orphan.data.tags.get("mlflow.parentRunId")
        if parent and parent != run.data.tags.get("mlflow.parentRunId"):
            parent_run = client.get_run(parent)
            if parent_run.info.status == "RUNNING" and _process_gone(parent_run.data.tags):
                client.set_terminated(parent, status="KILLED")
    if orphans:
        client.set_tag(run.info.run_id, "pipeline.continues", orphans[0].info.run_id)
        LOG.warning(
            "MLflow: %d earlier run(s) of %s:%s were left RUNNING by a killed job; marked "
            "KILLED (this run continues %s)",
            len(orphans),
            stage,
            name,
            orphans[0].info.run_id,
        )
    return [orphan.info.run_id for orphan in orphans]


SUPERSEDED_TAG = "pipeline.superseded_by"


def mark_superseded_runs(client: Any, run_id: str, stage: str, name: str) -> list[str]:
    """Once a rerun of a job finished, its earlier finished runs no longer hold the job's files:
    tag each with the run that replaced it (`pipeline.superseded_by`): in the UI's run list (add
    the tag as a column) the current run of every job is the one without it."""
    run = client.get_run(run_id)
    earlier = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`pipeline.stage` = '{stage}' and tags.`pipeline.job` = '{name}' "
        "and attributes.status = 'FINISHED'",
    )
    replaced = [
        r.info.run_id
        for r in earlier
        if r.info.run_id != run_id and SUPERSEDED_TAG not in r.data.tags and r.info.start_time <= run.info.start_time
    ]
    for old in replaced:
        client.set_tag(old, SUPERSEDED_TAG, run_id)
    return replaced


@contextmanager
def job_run(
    tracking: Mapping[str, Any] | None, stage: str, name: str, spec: Mapping[str, Any], log_file: str | None = None
) -> Iterator[JobTracker]:
    """Child run of one job under the workflow's parent run (if one is open).

    The job's params (its resolved spec), package versions and the git commit are logged on
    entry; the job log is attached on exit; the run ends FAILED if the job raised.
    """
    if not tracking or not tracking.get("enabled", True):
        yield JobTracker(None)
        return
    try:
        tracking = resolve_tracking(tracking)
        backend = tracking_backend(tracking)
        started = backend.call("start_job", tracking=tracking, stage=stage, name=name, context=run_context())
    except Exception as error:  # noqa: BLE001 - tracking must not stop the job itself
        LOG.warning(
            "MLflow run could not be started (%s: %s); continuing without tracking", type(error).__name__, error
        )
        yield JobTracker(None)
        return
    tracker = JobTracker(started["run_id"], started["experiment_id"], backend)
    tracker.log_params({**spec, "version": package_versions()})
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        if log_file:
            tracker.log_artifact(log_file, "logs")
        tracker._call("end_job", status=status, stage=stage, name=name)
        if tracker.failures:
            LOG.warning("%d MLflow call(s) failed in this job; see warnings above", tracker.failures)


def workflow_hook_arguments(
    action: str,
    tracking: Mapping[str, Any],
    config_files: list[str],
    command: str,
    status: str,
    log_file: str | None,
    owner_pid: int,
) -> tuple[str, dict[str, Any]]:
    """The operation and arguments of the workflow's start or end hook (in this process or the service)."""
    tracking = resolve_tracking(tracking)
    if action == "start":
        return "start_workflow", {
            "tracking": tracking,
            "command": command,
            "config_files": [str(Path(f).resolve()) for f in config_files],
            "context": run_context(owner_pid),
            "versions": package_versions(),
        }
    return "end_workflow", {
        "tracking": tracking,
        "status": status,
        "log_file": str(Path(log_file).resolve()) if log_file else None,
    }


def report_hook_failure(action: str, results_dir: str | Path, error: str) -> None:
    """One warning; after a failed start, jobs must not nest under an earlier invocation's run."""
    if action == "start":
        workflow_run_file(results_dir).unlink(missing_ok=True)
    first_line = (error.strip().splitlines() or [""])[0][:300]
    print(
        f"WARNING: MLflow tracking unavailable ({first_line}); the workflow continues and its "
        f"result files under {results_dir}/ are unaffected",
        file=sys.stderr,
    )


def start_workflow_run(
    tracking: Mapping[str, Any], results_dir: str | Path, config_files: list[str], command: str
) -> str | None:
    """Open the workflow's parent run with MLflow in this process (tests, the CLI hook)."""
    if not tracking.get("enabled", True):
        return None
    operation, arguments = workflow_hook_arguments(
        "start", {**tracking, "results_dir": str(results_dir)}, config_files, command, "", None, os.getppid()
    )
    return LocalBackend(arguments["tracking"]["tracking_uri"]).call(operation, **arguments)


def end_workflow_run(
    tracking: Mapping[str, Any], results_dir: str | Path, status: str, log_file: str | None = None
) -> None:
    """Close the workflow's parent run with MLflow in this process (tests, the CLI hook)."""
    if not tracking.get("enabled", True) or not workflow_run_file(results_dir).is_file():
        return
    operation, arguments = workflow_hook_arguments(
        "end", {**tracking, "results_dir": str(results_dir)}, [], "", status, log_file, os.getppid()
    )
    LocalBackend(arguments["tracking"]["tracking_uri"]).call(operation, **arguments)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.tracking start|end`: the workflow's hooks with MLflow in this
    process (the Snakefile's fallback when no tracking service can be used)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("action", choices=["start", "end"])
    parser.add_argument(
        "--tracking",
        required=True,
        help="the config's mlflow section: a JSON file written by the workflow, or inline JSON",
    )
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--config-files", nargs="*", default=[])
    parser.add_argument("--command", default=" ".join(sys.argv))
    parser.add_argument("--status", default="FINISHED", choices=["FINISHED", "FAILED", "KILLED"])
    parser.add_argument("--log-file", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pipelines.config import read_spec

    tracking = read_spec(args.tracking)
    try:
        if args.action == "start":
            start_workflow_run(tracking, args.results_dir, args.config_files, args.command)
        else:
            end_workflow_run(tracking, args.results_dir, args.status, args.log_file)
    except Exception as error:  # noqa: BLE001 - tracking never decides the workflow's outcome
        report_hook_failure(args.action, args.results_dir, f"{type(error).__name__}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
