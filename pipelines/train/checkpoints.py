"""Which training checkpoints a job may resume: only those its own settings produced.

A training job keeps its checkpoints under results/train/<model>/<method>/ (not Snakemake
outputs, so a killed job resumes). When the settings change, Snakemake reruns the job, and
resuming then would silently continue the *old* run: a manifest saying "lr 0.001" over weights
trained at another rate. So the folder carries `settings.json`, the fingerprint of everything
that shapes the weights (the trainer settings, the base model's identity, the training data's
digest, the grader's time bound), and:

- same fingerprint: resume from the newest complete checkpoint; if that already reached
  `max_steps`, only export it (a rerun of a finished job changes no weights);
- another fingerprint, or checkpoints without a fingerprint: move the folder's contents aside
  to `<method>.superseded-<fingerprint>-<time>` (logged, never deleted) and start fresh.

Resources (GPUs, nodes, CPUs, memory layout), checkpoint frequency and validation are left out:
they do not change what a step computes, and a job resubmitted with more time or another
node count must still resume.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.provenance import file_sha256, fingerprint, write_text_atomic

LOG = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
#: Files of the folder that are not training state: the verl command (the verl_command job's
#: output, which the train job reads) stays in place.
KEPT_FILES = frozenset({"verl_command.txt"})

#: Trainer settings that do not shape the weights (how often to save, vLLM's memory share, the
#: held-out scoring, which samples under its own random state: `pipelines.train.validation`).
NON_SHAPING_TRAINER_KEYS = frozenset({"save_steps", "vllm_gpu_memory_utilization", "validation"})
#: verl settings that are layout, memory or monitoring, not the update itself.
NON_SHAPING_VERL_KEYS = frozenset(
    {
        "strategy",
        "rollout_tensor_parallel",
        "rollout_gpu_memory_utilization",
        "offload",
        "ulysses_sequence_parallel",
        "use_dynamic_bsz",
        "gradient_checkpointing",
        "validation_benchmarks",
        "validation_every_steps",
        "convert_step",
    }
)
#: Spec keys that are resources of the job.
RESOURCE_KEYS = frozenset({"gpus", "nodes", "cpus"})


def shaping_settings(
    spec: Mapping[str, Any], base_manifest: Mapping[str, Any], data_path: str | Path
) -> dict[str, Any]:
    """Everything that decides the trained weights, as a JSON-able dict (see module docstring)."""
    settings: dict[str, Any] = {
        key: value for key, value in spec.items() if key not in RESOURCE_KEYS | {"trainer", "verl", "grading"}
    }
    settings["trainer"] = {k: v for k, v in spec["trainer"].items() if k not in NON_SHAPING_TRAINER_KEYS}
    if "verl" in spec:
        settings["verl"] = {k: v for k, v in spec["verl"].items() if k not in NON_SHAPING_VERL_KEYS}
    settings["grading_timeout_seconds"] = spec.get("grading", {}).get("timeout_seconds")
    # The base model by content, not by path: a moved results tree is the same model.
    settings["base_model"] = {k: v for k, v in base_manifest.items() if k not in ("path", "base")}
    settings["data_sha256"] = file_sha256(Path(data_path))
    return settings


def has_checkpoint_state(checkpoint_dir: Path) -> bool:
    """Anything a trainer would resume from (TRL `checkpoint-N`, verl `global_step_N`)."""
    if not checkpoint_dir.is_dir():
        return False
    return (
        any(
            path.is_dir() and (path.name.startswith("checkpoint-") or path.name.startswith("global_step_"))
            for path in checkpoint_dir.iterdir()
        )
        or (checkpoint_dir / "latest_checkpointed_iteration.txt").exists()
    )


def claim_checkpoint_dir(checkpoint_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Make `checkpoint_dir` hold only checkpoints of `settings`; return what was decided.

    Returns {"fingerprint", "resumable": bool, "superseded": path or None}. A folder of other
    settings is moved aside whole (logged); the caller then trains from the base model.
    """
    current = fingerprint(settings, length=16)
    record_path = checkpoint_dir / SETTINGS_FILE
    previous = None
    if record_path.is_file():
        try:
            previous = json.loads(record_path.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            previous = None  # unreadable: treat like foreign checkpoints
    superseded = None
    if previous == current:
        return {"fingerprint": current, "resumable": True, "superseded": None}
    if has_checkpoint_state(checkpoint_dir) or previous is not None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        superseded = checkpoint_dir.with_name(f"{checkpoint_dir.name}.superseded-{previous or 'unknown'}-{stamp}")
        superseded.mkdir()
        for entry in checkpoint_dir.iterdir():
            if entry.name not in KEPT_FILES:
                entry.replace(superseded / entry.name)
        LOG.warning(
            "the checkpoints in %s were trained with other settings (fingerprint %s, now %s): "
            "moved to %s; training starts from the base model",
            checkpoint_dir,
            previous or "none",
            current,
            superseded,
        )
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps({"fingerprint": current, "settings": settings}, indent=1, sort_keys=True), record_path)
    return {"fingerprint": current, "resumable": False, "superseded": str(superseded) if superseded else None}
