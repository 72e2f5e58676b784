"""`python -m pipelines.train.verl_launch`: run verl's trainer for one (model, method) job.

Single node: verl starts its own Ray inside the allocation (`ray_kwargs.ray_init.num_cpus` =
the job's CPUs). Several nodes (a SLURM allocation with `--nodes=N`): as verl's ray_on_slurm
example does, start a Ray head on the first node and one Ray worker per other node with srun,
wait until all nodes have joined, run the trainer on the head, and stop Ray afterwards, also
when training fails. All srun steps use `--overlap`: the Snakemake job itself is already a
job step of the allocation.

The job's MLflow child run is opened here (under the workflow's parent run) and handed to
verl through MLFLOW_RUN_ID, so verl's own metrics, ours from the replay buffer, and the
job's params land in one run. The Snakemake output is `training.json`: the checkpoints
saved, the overrides used, the run id; the conversion job reads it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, results_root, stage_parser
from pipelines.provenance import portable_paths, write_text_atomic
from pipelines.train import verl_backend
from pipelines.train.checkpoints import claim_checkpoint_dir, shaping_settings

LOG = logging.getLogger(__name__)

RAY_PORT = 6379
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RayClusterPlan:
    """The commands that bring up, use and tear down Ray across a SLURM allocation."""

    head_node: str
    head_address: str
    head: list[str]
    workers: list[list[str]]
    trainer_prefix: list[str]
    stop: list[list[str]]
    wait_for_nodes: int


def srun_on(node: str) -> list[str]:
    return ["srun", "--overlap", "--nodes=1", "--ntasks=1", "-w", node]


def ray_cluster_plan(
    nodes: Sequence[str], head_ip: str, cpus_per_node: int, gpus_per_node: int, ray: str = "ray", port: int = RAY_PORT
) -> RayClusterPlan:
    """Ray head on nodes[0], a worker on each other node, the trainer on the head (verl's recipe)."""
    if len(nodes) < 2:
        raise ValueError("a Ray cluster plan is for two or more nodes; one node runs the trainer directly")
    address = f"{head_ip}:{port}"
    resources = ["--num-cpus", str(cpus_per_node), "--num-gpus", str(gpus_per_node), "--block"]
    head = [
        *srun_on(nodes[0]),
        ray,
        "start",
        "--head",
        f"--node-ip-address={head_ip}",
        f"--port={port}",
        "--include-dashboard=false",
        *resources,
    ]
    workers = [[*srun_on(node), ray, "start", f"--address={address}", *resources] for node in nodes[1:]]
    stop = [[*srun_on(node), ray, "stop", "--force"] for node in nodes]
    return RayClusterPlan(
        head_node=nodes[0],
        head_address=address,
        head=head,
        workers=workers,
        trainer_prefix=srun_on(nodes[0]),
        stop=stop,
        wait_for_nodes=len(nodes),
    )


def slurm_nodes(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Host names of this SLURM allocation, in SLURM's order (one entry outside SLURM)."""
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist:
        return []
    output = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True, text=True
    ).stdout
    return [line.strip() for line in output.splitlines() if line.strip()]


def allocation_cpus(configured: int, environ: Mapping[str, str] = os.environ) -> int:
    """CPUs per node this job really has: SLURM's allocation if inside one, else the config's."""
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return int(configured)


def head_ip_address(node: str) -> str:
    """The head node's address as Ray should advertise it: its first non-loopback address.

    verl's example uses `hostname --ip-address`, which gives a loopback address wherever
    /etc/hosts maps the host name to 127.0.x.x (Debian's default); other nodes cannot reach that.
    """
    addresses = subprocess.run(
        [*srun_on(node), "hostname", "-I"], check=True, capture_output=True, text=True
    ).stdout.split()
    routable = [a for a in addresses if not a.startswith("127.") and ":" not in a]
    if not routable:
        raise RuntimeError(
            f"{node} reports no non-loopback IPv4 address ({addresses}); "
            f"Ray workers on other nodes could not reach a head there"
        )
    return routable[0]


def job_environment(
    run_id: str | None, tracking_uri: str | None, base: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """Environment of every process we start: our package importable by Ray workers, MLflow run."""
    environment = dict(base)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), base.get("PYTHONPATH", "")) if p)
    environment["PYTHONUNBUFFERED"] = "1"
    environment["HYDRA_FULL_ERROR"] = "1"
    environment.setdefault("TOKENIZERS_PARALLELISM", "false")
    if run_id and tracking_uri:
        environment["MLFLOW_TRACKING_URI"] = tracking_uri
        environment["MLFLOW_RUN_ID"] = run_id
    else:
        environment.pop("MLFLOW_RUN_ID", None)
    return environment


def ray_auth_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """One Ray token for every process of this job (head, workers, trainer, probes).

    Ray 2.60 turns token authentication on when a token file exists (~/.ray/auth_token): a
    process without the token cannot join or connect ("InvalidAuthToken"), and other nodes need
    not share that home directory. A per-job token in the environment, which srun exports to
    every step, works everywhere; a token the user set is kept.
    """
    import secrets

    if environment.get("RAY_AUTH_TOKEN") or str(environment.get("RAY_AUTH_MODE", "")).lower() == "disabled":
        return dict(environment)
    return {**environment, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _wait_for_ray(address: str, nodes: int, environment: Mapping[str, str], timeout: float = 300) -> None:
    """Poll the head until `nodes` Ray nodes are alive (a worker that cannot join fails the job)."""
    probe = (
        "import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        result = subprocess.run(
            [sys.executable, "-c", probe, address], capture_output=True, text=True, env=dict(environment)
        )
        if result.returncode == 0 and result.stdout.strip().isdigit():
            seen = int(result.stdout.strip())
            if seen >= nodes:
                return
        time.sleep(5)
    raise RuntimeError(f"only {seen} of {nodes} Ray nodes joined {address} within {timeout:.0f} s")


def run_trainer(
    command: Sequence[str],
    nodes: Sequence[str],
    cpus: int,
    gpus: int,
    environment: Mapping[str, str],
    join_timeout: float = 300,
) -> int:
    """Run the trainer `command` on this node, or on a Ray cluster spanning the allocation's nodes."""
    if len(nodes) < 2:
        LOG.info("verl command: %s", shlex.join(command))
        return subprocess.run(list(command), env=dict(environment)).returncode
    plan = ray_cluster_plan(
        nodes, head_ip_address(nodes[0]), cpus, gpus, ray=str(Path(sys.executable).with_name("ray"))
    )
    environment = ray_auth_environment(environment)
    started: list[subprocess.Popen] = []
    try:
        LOG.info("Ray head: %s", shlex.join(plan.head))
        started.append(subprocess.Popen(plan.head, env=dict(environment)))
        _wait_for_ray(plan.head_address, 1, environment, join_timeout)
        for worker in plan.workers:
            LOG.info("Ray worker: %s", shlex.join(worker))
            started.append(subprocess.Popen(worker, env=dict(environment)))
        _wait_for_ray(plan.head_address, plan.wait_for_nodes, environment, join_timeout)
        trainer = [*plan.trainer_prefix, *command]
        LOG.info("verl command: %s", shlex.join(trainer))
        return subprocess.run(trainer, env={**environment, "RAY_ADDRESS": plan.head_address}).returncode
    finally:
        for stop in plan.stop:
            subprocess.run(stop, env=dict(environment), check=False)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def command_paths(
    spec: Mapping[str, Any],
    tracking_config: Mapping[str, Any] | None,
    model_dir: Path,
    data: Path,
    val_data: Sequence[Path],
    checkpoints: Path,
) -> dict[str, Any]:
    """The paths and logging settings a job's verl command names (absolute, not resolved through
    links: the base model's folder is a link the model job makes, and need not exist yet)."""
    return dict(
        model_path=os.path.abspath(model_dir),
        train_file=os.path.abspath(data),
        val_files=[os.path.abspath(p) for p in val_data],
        checkpoint_dir=os.path.abspath(checkpoints),
        project=(tracking_config or {}).get("experiment", "empo"),
        log_to_mlflow=bool(tracking_config and tracking_config.get("enabled", True)),
        cpus=None,
    )


def write_command_file(spec: Mapping[str, Any], tracking_config: Mapping[str, Any] | None, args: Any) -> None:
    """The exact verl command of a job, from the config alone, for review before GPU-hours are
    spent; the train job runs what this file says (plus the CPUs of its allocation)."""
    overrides = verl_backend.build_overrides(
        spec, **command_paths(spec, tracking_config, args.model_dir, args.data, args.val_data, args.checkpoints)
    )
    module = spec["verl"].get("trainer_module", verl_backend.DEFAULT_TRAINER_MODULE)
    command = verl_backend.trainer_command(overrides, python="python", module=module)
    args.write_command.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(shlex.join(command) + "\n", args.write_command)
    LOG.info("verl command of %s/%s written to %s", spec["model"], spec["method"], args.write_command)


def check_command_paths(overrides: Sequence[str], command_file: Path, checkpoints: Path) -> None:
    """The command names absolute paths (Ray workers start elsewhere); after the results tree
    moved, they would train into the old tree. Refuse, naming the fix."""
    named = next((o.split("=", 1)[1].strip("'") for o in overrides if o.startswith("trainer.default_local_dir=")), None)
    if named is not None and os.path.normpath(named) != os.path.abspath(checkpoints):
        raise RuntimeError(
            f"{command_file} trains into {named}, not this job's {os.path.abspath(checkpoints)} "
            f"(the results tree moved?): rewrite the command with "
            f"`snakemake -R {command_file} --configfile <config>` and rerun"
        )


def command_from_file(path: Path, cpus: int | None) -> tuple[list[str], list[str]]:
    """The command of a verl_command.txt, run with this interpreter; on one node, verl's Ray gets
    the CPUs of this allocation (only known once the job runs)."""
    words = shlex.split(Path(path).read_text())
    if len(words) < 3 or words[1] != "-m":
        raise RuntimeError(f"{path} is not a verl command (python -m <module> <overrides>); rerun its verl_command job")
    overrides = words[3:] + ([f"ray_kwargs.ray_init.num_cpus={cpus}"] if cpus else [])
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith("actor_rollout_ref.model.path=")), None)
    if model is None or not Path(model).exists():
        raise RuntimeError(
            f"{path} trains the model at {model}, which does not exist: its model job makes that "
            f"link (results/models/<model>/base/hf); rerun it"
        )
    return [sys.executable, "-m", words[2], *overrides], overrides


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.train.verl_launch` — one (model, method) with verl; checkpoints kept."""
    from pipelines import tracking
    from pipelines.models import read_manifest

    parser = stage_parser(main.__doc__)
    parser.add_argument("--data", required=True, type=Path, help="training set (canonical parquet)")
    parser.add_argument("--val-data", nargs="*", default=[], type=Path, help="validation benchmarks")
    parser.add_argument("--checkpoints", required=True, type=Path)
    parser.add_argument(
        "--write-command",
        type=Path,
        default=None,
        help="write the verl command of this job to this file and exit (needs no download)",
    )
    parser.add_argument("--model-dir", type=Path, help="with --write-command: where the base model will be")
    parser.add_argument("--command-file", type=Path, help="train: the command --write-command wrote")
    parser.add_argument("--base-manifest", type=Path, help="train: the base model's manifest")
    parser.add_argument("--output", type=Path, help="train: training.json for the conversion job")
    args, spec, tracking_config = parse_stage_args(parser, argv)
    if args.write_command is not None:
        if args.model_dir is None:
            parser.error("--write-command needs --model-dir")
        write_command_file(spec, tracking_config, args)
        return 0
    missing = [
        flag
        for flag, value in (
            ("--command-file", args.command_file),
            ("--base-manifest", args.base_manifest),
            ("--output", args.output),
        )
        if value is None
    ]
    if missing:
        parser.error(f"training needs {', '.join(missing)}")
    base = read_manifest(args.base_manifest)
    nodes = slurm_nodes() or ["localhost"]
    if len(nodes) != spec["nodes"]:
        raise RuntimeError(
            f"the job asks for {spec['nodes']} node(s) but runs on {len(nodes)} ({nodes}); "
            f"multi-node training needs a SLURM allocation (snakemake --profile slurm)"
        )
    cpus = allocation_cpus(spec["cpus"])
    log_to_mlflow = bool(tracking_config and tracking_config.get("enabled", True))
    command, overrides = command_from_file(args.command_file, cpus=cpus if spec["nodes"] == 1 else None)
    check_command_paths(overrides, args.command_file, args.checkpoints)
    # verl's resume_mode=auto would resume whatever the folder holds: only our own settings' steps.
    claim = claim_checkpoint_dir(args.checkpoints, shaping_settings(spec, base, args.data))
    done = verl_backend.latest_step(args.checkpoints)
    name = f"{spec['model']}/{spec['method']}"
    with tracking.job_run(tracking_config, "train", name, spec, log_file=args.log_file) as tracker:
        tracker.set_tags(
            {
                "model": spec["model"],
                "method": spec["method"],
                "backend": "verl",
                "verl_version": verl_backend.VERL_VERSION,
            }
        )
        uri = tracking.resolve_tracking_uri(tracking_config["tracking_uri"]) if log_to_mlflow else None
        environment = job_environment(tracker.run_id if tracker.active else None, uri)
        tracker.log_artifact(args.command_file, "train")
        if done is not None and done >= spec["trainer"]["max_steps"]:
            LOG.info(
                "%s already holds step %d of %d: nothing to train", args.checkpoints, done, spec["trainer"]["max_steps"]
            )
        else:
            status = run_trainer(command, nodes, cpus, spec["gpus"], environment)
            if status != 0:
                raise RuntimeError(
                    f"verl exited with status {status}; checkpoints so far stay in "
                    f"{args.checkpoints} and a rerun resumes from the latest (trainer.resume_mode=auto)"
                )
        record = verl_backend.training_record(spec, args.checkpoints, overrides, tracker.run_id)
        record.update(
            base=base,
            settings_fingerprint=claim["fingerprint"],
            superseded_checkpoints=claim["superseded"],
            trained_before=done,
        )
        if not record["saved_steps"]:
            raise RuntimeError(f"verl finished without saving a checkpoint in {args.checkpoints}")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        record = portable_paths(record, args.output.parent, results_root(tracking_config))
        write_text_atomic(json.dumps(record, indent=1, sort_keys=True), args.output)
        tracker.log_artifact(args.output, "train")
    return 0


if __name__ == "__main__":
    sys.exit(main())
