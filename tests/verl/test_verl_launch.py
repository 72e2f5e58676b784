"""The Ray-on-SLURM launcher end to end with real Ray: head, a second Ray node joining it, the
trainer command run against the two-node cluster, Ray stopped afterwards (also on failure).
This machine has no two-node SLURM, so `srun` is a stand-in that records its arguments and runs
the command here; both "nodes" are this host (Ray runs two raylets on it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pipelines.train import verl_launch

pytest.importorskip("ray", reason="Ray comes with the verl environment; run `make test-verl`")

SRUN = textwrap.dedent("""\
    #!/usr/bin/env bash
    # stand-in for srun: record the call, drop srun's own options, run the rest on this host
    echo "$*" >> "$SRUN_LOG"
    while [[ $# -gt 0 && "$1" == -* ]]; do
      case "$1" in -w) shift 2 ;; *) shift ;; esac
    done
    exec "$@"
""")

CHECK_CLUSTER = (
    "import ray, sys; ray.init(address='auto', logging_level='ERROR'); "
    "alive = sum(1 for n in ray.nodes() if n['Alive']); print('ALIVE', alive); "
    "sys.exit(0 if alive == 2 else 3)"
)


@pytest.fixture
def fake_srun(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(SRUN)
    (bin_dir / "srun").chmod(0o755)
    log = tmp_path / "srun.log"
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SRUN_LOG": str(log),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    return environment, log


def ray_processes_left() -> bool:
    return subprocess.run(["pgrep", "-f", "raylet"], capture_output=True).returncode == 0


@pytest.mark.parametrize("trainer_exit", [0, 3])
def test_two_node_ray_cluster_runs_the_trainer_and_is_stopped(fake_srun, monkeypatch, trainer_exit):
    environment, log = fake_srun
    monkeypatch.setenv("PATH", environment["PATH"])
    monkeypatch.setenv("SRUN_LOG", environment["SRUN_LOG"])
    command = [sys.executable, "-c", CHECK_CLUSTER if trainer_exit == 0 else "import sys; sys.exit(3)"]
    status = verl_launch.run_trainer(
        command, ["node-a", "node-b"], cpus=1, gpus=0, environment=environment, join_timeout=180
    )
    assert status == trainer_exit
    calls = log.read_text().splitlines()
    assert calls[0].endswith("-w node-a hostname -I")
    assert any("-w node-a" in c and "ray start --head" in c for c in calls)
    assert any("-w node-b" in c and "ray start --address=" in c for c in calls)
    assert any("-w node-a" in c and "-c" in c for c in calls)  # the trainer on the head
    assert [c.split(" -w ")[1].split()[0] for c in calls if "ray stop --force" in c] == ["node-a", "node-b"]
    assert not ray_processes_left()
