"""Conversion stage: a verl FSDP actor checkpoint -> a Hugging Face model directory + manifest.

verl saves sharded FSDP state (`global_step_N/actor/model_world_size_W_rank_R.pt` plus
`fsdp_config.json` and a `huggingface/` folder with config and tokenizer). Its own merger
(`python -m verl.model_merger merge --backend fsdp`) rebuilds the full state dict; we run it
into a temporary folder, check the result is a loadable model directory (and carries a
tokenizer; the base model's is copied in if the checkpoint lacks one), then move it into
place, so an interrupted conversion never leaves a half-written model that eval would use.
Which step is converted is config (`training.verl.convert_step`, default the last saved).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, results_root, stage_parser
from pipelines.provenance import file_sha256
from pipelines.train import verl_backend

LOG = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)


def merge_command(actor_dir: Path, target_dir: Path, python: str = sys.executable) -> list[str]:
    return [
        python,
        "-m",
        "verl.model_merger",
        "merge",
        "--backend",
        "fsdp",
        "--local_dir",
        str(actor_dir),
        "--target_dir",
        str(target_dir),
    ]


def complete_tokenizer(target: Path, sources: list[Path]) -> list[str]:
    """Copy tokenizer files the merged folder lacks from the first source that has them."""
    copied = []
    for name in TOKENIZER_FILES:
        if (target / name).exists():
            continue
        for source in sources:
            if (source / name).is_file():
                shutil.copy2(source / name, target / name)
                copied.append(name)
                break
    return copied


def convert_checkpoint(
    checkpoint_dir: Path, step: int | None, final_dir: Path, base_path: str, python: str = sys.executable
) -> dict[str, Any]:
    """Merge step `step` (None = last) into `final_dir`; return what the manifest records."""
    from pipelines.models import make_group_readable, validate_model_dir

    chosen = verl_backend.choose_step(checkpoint_dir, step)
    actor = Path(checkpoint_dir) / f"global_step_{chosen}" / "actor"
    staging = final_dir.with_name(final_dir.name + ".converting")
    shutil.rmtree(staging, ignore_errors=True)
    command = merge_command(actor, staging, python)
    LOG.info("converting step %d: %s", chosen, " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"verl.model_merger failed on {actor} (exit {result.returncode}):\n{result.stderr[-4000:]}")
    copied = complete_tokenizer(staging, [actor / "huggingface", Path(base_path)])
    validate_model_dir(staging)
    make_group_readable(staging)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    staging.replace(final_dir)
    weights = sorted(p.name for p in final_dir.glob("*.safetensors"))
    return {
        "step": chosen,
        "actor_checkpoint": str(actor.resolve()),
        "tokenizer_copied": copied,
        "sha256": {name: file_sha256(final_dir / name) for name in ["config.json", *weights[:1]]},
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.convert` — verl checkpoint of one (model, method) -> its HF model."""
    from pipelines import tracking
    from pipelines.models import write_manifest

    parser = stage_parser(main.__doc__)
    parser.add_argument("--training", required=True, type=Path, help="training.json of the train job")
    parser.add_argument("--output", required=True, type=Path, help="manifest of the converted model")
    args, spec, tracking_config = parse_stage_args(parser, argv)
    record = verl_backend.read_training_record(args.training)
    name = f"{spec['model']}/{spec['method']}"
    with tracking.job_run(tracking_config, "convert", name, spec, log_file=args.log_file) as tracker:
        tracker.set_tags({"model": spec["model"], "method": spec["method"], "backend": "verl"})
        final_dir = args.output.parent / "hf"
        converted = convert_checkpoint(Path(record["checkpoint_dir"]), spec["step"], final_dir, record["base"]["path"])
        tracker.log_metrics({"converted_step": converted["step"]})
        manifest = {
            "kind": "trained",
            "path": str(final_dir.resolve()),
            "method": spec["method"],
            "backend": "verl",
            "verl_version": record.get("verl_version"),
            "trainer": spec["train"]["trainer"],
            "semantic_judge": spec["train"].get("semantic_judge"),
            "global_step": converted["step"],
            "saved_steps": record.get("saved_steps"),
            "training_run_id": record.get("mlflow_run_id"),
            "base": record["base"],
            **converted,
        }
        write_manifest(manifest, args.output, results_root(tracking_config))
        tracker.log_artifact(args.output, "model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
