"""The model stage's job: one configured model -> `<results>/models/<model>/base/model.json`;
`python -m pipelines.models`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, results_root, stage_parser
from pipelines.models.demo import DemoModelSpec, build_demo_model
from pipelines.models.manifest import write_manifest
from pipelines.models.sources import ModelSourceError, download_hub_model, resolve_local_model

LOG = logging.getLogger(__name__)


def prepare_model(spec: dict[str, Any], output: Path, corpus_files: Sequence[str]) -> dict[str, Any]:
    """The model of one config entry, as a manifest (see module docstring)."""
    source = spec["source"]
    if source["kind"] == "hub":
        return download_hub_model(source["hub_id"], source.get("revision"))
    if source["kind"] == "local":
        return resolve_local_model(Path(source["path"]))
    from pipelines.data import read_canonical

    rows = [row for file in corpus_files for row in read_canonical(file)]
    corpus = [row["prompt"][-1]["content"] for row in rows]
    examples = [(row["prompt"][-1]["content"], row["reward_model"]["ground_truth"]) for row in rows]
    demo = DemoModelSpec.from_source(source, system_prompt=spec.get("system_prompt"))
    return build_demo_model(output.parent / "hf", corpus, demo, warm_start_examples=examples)


def link_model_dir(model_dir: Path, link: Path) -> None:
    """results/models/<model>/base/hf reaches every base model (a link to the hub snapshot or
    the local folder; the demo model is built there), so a verl command can name it before the
    model is downloaded."""
    if link.exists() and not link.is_symlink() and link.resolve() == model_dir.resolve():
        return  # built in place (demo)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise ModelSourceError(f"{link} is a folder of another model; remove it")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(model_dir.resolve(), target_is_directory=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.models` — one model to results/models/<model>/base/model.json."""
    from pipelines import tracking

    parser = stage_parser(main.__doc__)
    parser.add_argument("--output", required=True, type=Path, help="manifest path")
    parser.add_argument("--corpus", nargs="*", default=[], help="canonical parquet(s) for the demo tokenizer")
    args, spec, tracking_config = parse_stage_args(parser, argv)
    corpus_files = [c for c in args.corpus if c]
    with tracking.job_run(tracking_config, "model", spec["name"], spec, log_file=args.log_file) as tracker:
        manifest = prepare_model(spec, args.output, corpus_files)
        link_model_dir(Path(manifest["path"]), args.output.parent / "hf")
        write_manifest(manifest, args.output, results_root(tracking_config))
        LOG.info("model %s ready at %s", spec["name"], manifest["path"])
        if "num_parameters" in manifest:
            tracker.log_metrics({"num_parameters": manifest["num_parameters"]})
        if manifest.get("warm_start_loss"):
            tracker.log_metric_series("warm_start_loss", manifest["warm_start_loss"])
        tracker.set_tags({"model.path": manifest["path"], "model.kind": manifest["kind"]})
        tracker.log_artifact(args.output, "model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
