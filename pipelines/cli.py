"""What every stage's command line shares: the job spec, the tracking config, the log file."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from pipelines.config import read_spec

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The environment variable naming the tracking config file for every job Snakemake starts
#: (set in workflow/rules/common.smk). Not a rule parameter: changing only MLflow settings must
#: rerun no job. `--tracking` overrides it; with neither, a job is untracked.
TRACKING_SPEC_ENV = "EMPO_TRACKING_SPEC"


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser with the options the Snakefile passes to every stage."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--spec", required=True, help="the job spec: a JSON file written by the workflow, or inline JSON"
    )
    parser.add_argument(
        "--tracking",
        default=os.environ.get(TRACKING_SPEC_ENV) or None,
        help=f"the config's mlflow section: a JSON file written by the workflow, or inline JSON "
        f"(default: ${TRACKING_SPEC_ENV})",
    )
    parser.add_argument("--log-file", default=None, help="the job log, attached to its MLflow run")
    return parser


def parse_stage_args(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, dict[str, Any], dict[str, Any] | None]:
    """Parsed arguments, the decoded spec and tracking config; logging set up for the job log."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return args, read_spec(args.spec), read_spec(args.tracking) if args.tracking else None


def results_root(tracking_config: dict[str, Any] | None) -> str | None:
    """The results tree this job writes into (paths inside it are stored relative), if known."""
    return (tracking_config or {}).get("results_dir")
