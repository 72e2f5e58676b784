"""The workflow's tracking service: one process that holds MLflow, so that jobs do not import it.

Importing MLflow and its sqlite store costs about 5 s per process on a laptop (MLflow, pandas,
SQLAlchemy), more than most demo jobs' own work. The Snakefile's start hook starts this service
(or reuses a live one), on 127.0.0.1, for one store; jobs on the same host send their calls as
JSON lines and get the same `TrackingOperations` run that they would run themselves, so a run
looks the same either way. Where the service cannot be reached (a SLURM compute node, another
host, a service gone idle, another code version) a job uses MLflow in its own process.

The service records itself in `<results>/mlflow/tracking_service.json` (host, port, a token,
the store and a fingerprint of this code); it exits after `mlflow.service_idle_minutes` without
a call once no process that opened a run is alive, when a newer service replaces it, or when
its results tree is gone. One lock serialises the store's writes (sqlite).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import tracking

LOG = logging.getLogger(__name__)

SERVICE_FILE = "tracking_service.json"
#: Overrides `mlflow.service_idle_minutes` (seconds; 0 = no service), e.g. for test suites.
IDLE_ENV = "EMPO_TRACKING_SERVICE_IDLE_SECONDS"
STARTUP_TIMEOUT_SECONDS = 120.0
CONNECT_TIMEOUT_SECONDS = 5.0
REPLY_TIMEOUT_SECONDS = 3600.0  # a large artifact copy may hold the lock for a while
_CODE_FILES = (Path(tracking.__file__), Path(__file__))


def service_file(results_dir: str | Path) -> Path:
    return Path(results_dir) / "mlflow" / SERVICE_FILE


def code_fingerprint() -> str:
    """A service runs the tracking code it was started with: a job of another version must not use it."""
    digest = hashlib.sha256()
    for path in _CODE_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def idle_seconds(tracking_config: Mapping[str, Any]) -> float:
    """How long the service waits for a call before it exits; 0 = do not use a service."""
    if os.environ.get(IDLE_ENV):
        return float(os.environ[IDLE_ENV])
    return 60.0 * float(tracking_config.get("service_idle_minutes", 30))


class ServiceError(RuntimeError):
    """The service ran the call and MLflow raised (the message is MLflow's)."""


@dataclass(frozen=True)
class ServiceClient:
    host: str
    port: int
    token: str
    pid: int

    def call(self, operation: str, **arguments: Any) -> Any:
        """Send one call, wait for its reply. ConnectionRefusedError means nothing was sent."""
        request = (
            json.dumps(
                {"token": self.token, "operation": operation, "arguments": arguments, "pid": os.getpid()},
                default=_json_value,
            )
            + "\n"
        )
        with socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            connection.settimeout(REPLY_TIMEOUT_SECONDS)
            connection.sendall(request.encode("utf-8"))
            with connection.makefile("r", encoding="utf-8") as replies:
                line = replies.readline()
        if not line:
            raise ConnectionError(f"the tracking service on port {self.port} closed the connection")
        reply = json.loads(line)
        if not reply["ok"]:
            raise ServiceError(reply["error"])
        return reply["result"]

    def alive(self) -> bool:
        try:
            return self.call("ping") == "pong"
        except (OSError, ValueError, ServiceError):
            return False


def _json_value(value: Any) -> Any:
    """numpy scalars and paths in logged values become plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class ServiceBackend:
    """Calls go to the service; once it refuses a connection (gone), to MLflow in this process.
    A refused connection sent nothing, so the call is made once either way."""

    def __init__(self, service: ServiceClient, fallback: Any):
        self.service: ServiceClient | None = service
        self.fallback = fallback

    def call(self, operation: str, **arguments: Any) -> Any:
        if self.service is not None:
            try:
                return self.service.call(operation, **arguments)
            except ConnectionRefusedError:
                LOG.warning("The tracking service is gone; this job logs to MLflow itself from now on")
                self.service = None
        return self.fallback.call(operation, **arguments)


def find_service(tracking_config: Mapping[str, Any]) -> ServiceClient | None:
    """The service recorded for this results tree, if it serves this store from this host with
    this code (not checked for life: a refused call falls back)."""
    try:
        info = json.loads(service_file(tracking_config["results_dir"]).read_text())
    except (OSError, ValueError):
        return None
    if (
        info.get("host") != socket.gethostname()
        or info.get("tracking_uri") != tracking_config["tracking_uri"]
        or info.get("fingerprint") != code_fingerprint()
    ):
        return None
    return ServiceClient("127.0.0.1", int(info["port"]), info["token"], int(info["pid"]))


def start_service(tracking_config: Mapping[str, Any], idle: float) -> ServiceClient | None:
    """A live service for this store: the recorded one, or a new one (waits while it imports
    MLflow). None when it cannot start (its log: `<results>/mlflow/tracking_service.log`)."""
    service = find_service(tracking_config)
    if service is not None and service.alive():
        return service
    record = service_file(tracking_config["results_dir"])
    record.parent.mkdir(parents=True, exist_ok=True)
    repo_root = str(Path(__file__).resolve().parent.parent)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    with open(record.with_suffix(".log"), "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.tracking_service",
                "serve",
                "--tracking",
                json.dumps(dict(tracking_config)),
                "--idle-seconds",
                str(idle),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=environment,
            start_new_session=True,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        service = find_service(tracking_config)
        if service is not None and service.pid == process.pid and service.alive():
            return service
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    return None


def workflow_hook(
    action: str,
    tracking_spec: str,
    results_dir: str,
    config_files: list[str] = (),
    command: str = "",
    status: str = "FINISHED",
    log_file: str | None = None,
) -> bool:
    """The Snakefile's start/end hook through the service (started here for `start`), called in
    Snakemake's own process. False when no service can be used: the caller then runs
    `python -m pipelines.tracking` (MLflow in a child process). A failing MLflow call prints one
    warning and counts as handled, as in that command."""
    from pipelines.config import read_spec

    tracking_config = read_spec(tracking_spec)
    if not tracking_config.get("enabled", True):
        return True
    tracking_config = tracking.resolve_tracking({**tracking_config, "results_dir": results_dir})
    if action == "end" and not tracking.workflow_run_file(results_dir).is_file():
        return True
    idle = idle_seconds(tracking_config)
    if idle <= 0:
        return False
    service = start_service(tracking_config, idle) if action == "start" else find_service(tracking_config)
    if service is None:
        return False
    operation, arguments = tracking.workflow_hook_arguments(
        action, tracking_config, list(config_files), command, status, log_file, owner_pid=os.getpid()
    )
    try:
        service.call(operation, **arguments)
    except ConnectionRefusedError:
        return False
    except (OSError, ValueError, ServiceError) as error:
        tracking.report_hook_failure(action, results_dir, str(error))
    return True


class _Service:
    """State of a running service: its MLflow operations, the lock, who still has runs open."""

    def __init__(self, tracking_config: Mapping[str, Any], idle: float):
        self.tracking_config = tracking_config
        self.idle = idle
        self.operations = tracking.TrackingOperations(tracking_config["tracking_uri"])
        self.token = secrets.token_hex(16)
        self.lock = threading.Lock()
        self.last_call = time.monotonic()
        self.open_runs: dict[str, int] = {}  # run id -> pid of the process that opened it

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if request.get("token") != self.token:
            return {"ok": False, "error": "bad token"}
        operation = request.get("operation")
        if operation == "ping":
            return {"ok": True, "result": "pong"}
        if operation not in tracking.OPERATIONS:
            return {"ok": False, "error": f"unknown operation {operation!r}"}
        with self.lock:
            self.last_call = time.monotonic()
            try:
                result = getattr(self.operations, operation)(**request["arguments"])
            except Exception as error:  # noqa: BLE001 - the caller decides; the service goes on
                LOG.warning("%s failed: %s: %s", operation, type(error).__name__, error)
                return {"ok": False, "error": f"{type(error).__name__}: {error}"}
            self._note_run(operation, request, result)
            self.last_call = time.monotonic()
        return {"ok": True, "result": result}

    def _note_run(self, operation: str, request: Mapping[str, Any], result: Any) -> None:
        if operation == "start_job":
            self.open_runs[result["run_id"]] = int(request.get("pid", 0))
        elif operation == "start_workflow":
            self.open_runs[result] = int(request["arguments"]["context"].get("pipeline.pid", 0))
        elif operation == "end_job":
            self.open_runs.pop(request["arguments"]["run_id"], None)
        elif operation == "end_workflow" and result:
            self.open_runs.pop(result, None)

    def reason_to_stop(self, port: int) -> str | None:
        record = service_file(self.tracking_config["results_dir"])
        if not record.parent.is_dir():
            return "its results tree is gone"
        try:
            replaced = json.loads(record.read_text()).get("port") != port
        except (OSError, ValueError):
            replaced = True
        with self.lock:
            self.open_runs = {run: pid for run, pid in self.open_runs.items() if tracking.process_alive(pid)}
            busy = bool(self.open_runs)
            idle_for = time.monotonic() - self.last_call
        if busy:
            return None
        if replaced:
            return "another service serves this store"
        if idle_for > self.idle:
            return f"no call for {idle_for:.0f} s"
        return None


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        try:
            reply = self.server.service.handle(json.loads(line))
        except (ValueError, KeyError, TypeError) as error:
            reply = {"ok": False, "error": f"bad request: {error}"}
        self.wfile.write((json.dumps(reply, default=_json_value) + "\n").encode("utf-8"))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(tracking_config: Mapping[str, Any], idle: float) -> None:
    """Run until idle (see the module's docstring); record this service once it can answer."""
    service = _Service(tracking_config, idle)  # imports MLflow: the service is ready after this
    with _Server(("127.0.0.1", 0), _Handler) as server:
        server.service = service
        port = server.server_address[1]
        record = service_file(tracking_config["results_dir"])
        info = {
            "host": socket.gethostname(),
            "port": port,
            "pid": os.getpid(),
            "token": service.token,
            "tracking_uri": tracking_config["tracking_uri"],
            "fingerprint": code_fingerprint(),
            "started": time.time(),
        }
        temporary = record.with_name(f".{record.name}.{os.getpid()}")
        temporary.write_text(json.dumps(info, indent=2))
        os.chmod(temporary, 0o600)  # the token lets a process write to the store
        temporary.replace(record)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        LOG.info("tracking service for %s on 127.0.0.1:%d (pid %d)", tracking_config["tracking_uri"], port, os.getpid())
        while (reason := service.reason_to_stop(port)) is None:
            time.sleep(1.0)
        server.shutdown()
    try:
        if json.loads(record.read_text()).get("port") == port:
            record.unlink()
    except (OSError, ValueError):
        pass
    LOG.info("tracking service stopped: %s", reason)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.tracking_service serve|stop`: run the service (the start hook does
    this), or stop the one recorded for a results tree."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("action", choices=["serve", "stop"])
    parser.add_argument("--tracking", help="serve: the resolved tracking config (JSON)")
    parser.add_argument("--idle-seconds", type=float, default=1800.0)
    parser.add_argument("--results-dir", default="results", help="stop: the results tree")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.action == "serve":
        serve(json.loads(args.tracking), args.idle_seconds)
        return 0
    record = service_file(args.results_dir)
    try:
        pid = int(json.loads(record.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        print(f"no tracking service recorded in {record}")
        return 0
    record.unlink(missing_ok=True)  # the service sees it replaced and exits once its runs are closed
    print(f"tracking service {pid} will stop once no job of it is running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
