"""What one job costs beyond its own work, through Snakemake, with and without MLflow tracking.

A trivial job (the demo's `data` job for one small benchmark, forced to rerun) in a copy of the
workflow, in the same run:
  work alone:  the job's command run directly, untracked (interpreter, imports, the work);
  untracked:   `snakemake -f <its output>` with `mlflow.enabled: false`;
  tracked, service running:  the same with the demo's MLflow store, the workflow's tracking
               service already up (left by the previous invocation): hooks and the job send their
               calls to it and import no MLflow;
  tracked, starting the service:  the service stopped before each invocation (the first
               invocation of a session pays MLflow's import once, in the service);
  tracked, no service:  `EMPO_TRACKING_SERVICE_IDLE_SECONDS=0`: every process imports MLflow
               (start hook, job, end hook), as before the service.
Overhead = wall time - work alone. Also: `snakemake --version` (Snakemake's own start) and
`import mlflow` (what each tracked process pays first). Target: tracked overhead < 3 s.
    python benchmarks/job_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import copy_workflow  # noqa: E402

BIN = Path(sys.executable).parent
TARGET = "results/demo/data/add_test.parquet"
UNTRACKED = ["--configfile", "config/demo.yaml", "untracked.yaml"]  # later files override


def run(args: list[str], cwd: Path, **env: str) -> str:
    """Run with this interpreter's environment first on PATH (the rules call `python`)."""
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg", **env}
    environment.pop("MLFLOW_TRACKING_URI", None)
    environment.pop("EMPO_TRACKING_SPEC", None)
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def timed(args: list[str], cwd: Path, **env: str) -> float:
    started = time.perf_counter()
    run(args, cwd, **env)
    return time.perf_counter() - started


def stop_service(workdir: Path) -> None:
    """Stop the tracking service of the demo's results tree and wait until it has exited."""
    record = workdir / "results" / "demo" / "mlflow" / "tracking_service.json"
    if not record.is_file():
        return
    pid = json.loads(record.read_text())["pid"]
    run([sys.executable, "-m", "pipelines.tracking_service", "stop", "--results-dir", "results/demo"], workdir)
    while Path(f"/proc/{pid}").exists():
        time.sleep(0.1)


def cold(args: list[str], workdir: Path) -> float:
    stop_service(workdir)
    return timed(args, workdir)


def snakemake(*args: str) -> list[str]:
    configs = [] if "--configfile" in args else ["--configfile", "config/demo.yaml"]
    return [str(BIN / "snakemake"), "--cores", "2", *args, *configs]


def job_command(workdir: Path) -> list[str]:
    """The data job's own command, as the last run printed it, untracked."""
    log = run(snakemake("-n", "-p", "-f", TARGET, *UNTRACKED), workdir)
    line = next(line for line in log.splitlines() if "python -m pipelines.data" in line)
    words = line.split("python -m pipelines.data", 1)[1].split(">")[0].split()
    words = [word.strip("'") for word in words]
    return [sys.executable, "-m", "pipelines.data", *words]  # no EMPO_TRACKING_SPEC here: untracked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = copy_workflow(Path(tmp))
        (workdir / "untracked.yaml").write_text("mlflow:\n  enabled: false\n")
        run(snakemake(TARGET), workdir)  # the store, the spec files, a first output
        command = job_command(workdir)
        figures = {
            "snakemake --version": [timed([str(BIN / "snakemake"), "--version"], workdir) for _ in range(args.repeats)],
            "import mlflow": [timed([sys.executable, "-c", "import mlflow"], workdir) for _ in range(args.repeats)],
            "work alone": [timed(command, workdir) for _ in range(args.repeats)],
            "untracked job": [timed(snakemake("-f", TARGET, *UNTRACKED), workdir) for _ in range(args.repeats)],
            "tracked, no service": [
                timed(snakemake("-f", TARGET), workdir, EMPO_TRACKING_SERVICE_IDLE_SECONDS="0")
                for _ in range(args.repeats)
            ],
            "tracked, starting it": [cold(snakemake("-f", TARGET), workdir) for _ in range(args.repeats)],
            "tracked, service up": [timed(snakemake("-f", TARGET), workdir) for _ in range(args.repeats)],
        }
        stop_service(workdir)
    median = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in median.items():
        print(f"{name:22s} {value:6.2f} s (median of {args.repeats})")
    overhead = {
        name: median[name] - median["work alone"]
        for name in ("untracked job", "tracked, no service", "tracked, starting it", "tracked, service up")
    }
    for name, value in overhead.items():
        print(f"overhead {name:22s} {value:6.2f} s ({value / overhead['untracked job']:.1f}x untracked)")
    print(
        f"tracked overhead with the service up: {overhead['tracked, service up']:.2f} s (target < 3 s); "
        f"{overhead['tracked, no service'] / overhead['tracked, service up']:.1f}x less than without the service"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
