"""Does the demo's effect hold beyond one seed? The demo's train + eval for N seeds, per method
the gain over base (mean and spread).

Each seed is the whole demo DAG, through the real Snakemake, in its own copy of the workflow
(its own results tree and MLflow store): the demo model built with that seed (its weights and
the order of its warm-start batches), RL trained with that seed (rollout sampling and prompt
order), evaluated with the demo's protocols (sampling seed 0, as the config says). Per seed it
prints, from the table's paired comparison (`table.json`, `effects`), each trained method's
difference from base with its 95% interval, and the base model's maj@n; then, per method and
protocol, the mean, standard deviation and range of the gain over the seeds.

    python benchmarks/demo_effect.py --seeds 0 1 2     # about 4 minutes per seed on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import copy_workflow  # noqa: E402

BIN = Path(sys.executable).parent
GRADER = "math-verify"


def seeded_config(workdir: Path, seed: int, model_settings: dict) -> Path:
    """The demo config with the model's and the trainer's seed set to `seed` (and the demo
    model's build settings overridden by `model_settings`)."""
    config = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    for model in config["models"].values():
        model["source"].update(seed=seed, **model_settings)
    config["training"]["defaults"]["seed"] = seed
    path = workdir / "config" / f"demo-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_seed(root: Path, seed: int, cores: int, model_settings: dict) -> tuple[list[dict], float]:
    workdir = root / f"seed{seed}"
    if workdir.exists():  # a fresh run, not whatever an earlier one left
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    copy_workflow(workdir)
    config = seeded_config(workdir, seed, model_settings)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "snakemake"), "--cores", str(cores), "--configfile", str(config.relative_to(workdir))],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"seed {seed}: snakemake failed\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    table = json.loads((workdir / "results" / "demo" / "table.json").read_text())
    return [effect for effect in table["effects"] if effect["grader"] == GRADER], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the runs in this folder (default: a temporary one)"
    )
    parser.add_argument(
        "--warm-start-steps",
        type=int,
        default=None,
        help="override the demo model's clean warm start (e.g. 600 with --noisy-steps 0: a half-trained model)",
    )
    parser.add_argument("--noisy-steps", type=int, default=None, help="override the demo model's noisy phase")
    args = parser.parse_args()
    model_settings = {
        key: value
        for key, value in (("warm_start_steps", args.warm_start_steps), ("noisy_steps", args.noisy_steps))
        if value is not None
    }
    gains: dict[tuple[str, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="demo-effect-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            effects, seconds = run_seed(root, seed, args.cores, model_settings)
            print(f"seed {seed} ({seconds:.0f} s):")
            for effect in effects:
                low, high = effect["ci95"]
                ceiling = "" if effect["base_majority"] is None else f"; base maj@n {effect['base_majority']:.1f}"
                print(
                    f"  {effect['method']:>6} {effect['protocol']} ({effect['metric']}): base {effect['base']:.1f} -> "
                    f"{effect['value']:.1f}, {effect['difference']:+.1f} [{low:+.1f}, {high:+.1f}]"
                    f"{' *' if effect['excludes_zero'] else ''}{ceiling}"
                )
                gains[(effect["method"], f"{effect['protocol']} ({effect['metric']})")].append(effect["difference"])
            sys.stdout.flush()
    print(
        f"\nGain over base in points ({GRADER}; * above = the paired 95% interval excludes 0), "
        f"over seeds {', '.join(map(str, args.seeds))}:"
    )
    print(f"  {'method':>6}  {'protocol':<20} {'mean':>6} {'sd':>5} {'min':>6} {'max':>6}")
    for (method, protocol), values in sorted(gains.items(), key=lambda item: (item[0][1], item[0][0])):
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(
            f"  {method:>6}  {protocol:<20} {statistics.mean(values):+6.1f} {spread:5.1f} "
            f"{min(values):+6.1f} {max(values):+6.1f}"
        )


if __name__ == "__main__":
    main()
