"""Models that exist elsewhere: a hub snapshot (the real `huggingface_hub` client; it works
offline from a pre-filled cache) or a local directory (validated, not copied), and loading
either with transformers."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.provenance import file_sha256

LOG = logging.getLogger(__name__)


HUB_ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken")


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


class ModelSourceError(RuntimeError):
    """A model that cannot be obtained or is not a usable Hugging Face directory."""


def validate_model_dir(path: Path) -> None:
    """A directory evaluation can load: config, tokenizer and weights present and parseable."""
    path = Path(path)
    if not path.is_dir():
        raise ModelSourceError(f"model directory not found: {path}")
    missing = []
    config = path / "config.json"
    if not config.is_file():
        missing.append("config.json")
    else:
        try:
            json.loads(config.read_text())
        except ValueError as error:
            raise ModelSourceError(f"{config} is not valid JSON: {error}") from error
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        missing.append("a tokenizer (tokenizer.json or tokenizer_config.json)")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or *.bin)")
    missing.extend(_missing_shards(path))
    if missing:
        raise ModelSourceError(f"{path} is not a usable Hugging Face model directory: missing " + ", ".join(missing))


def _missing_shards(path: Path) -> list[str]:
    """Shards a sharded checkpoint's index lists but the folder lacks (an interrupted or partial
    download, e.g. an offline snapshot that holds only some files, still looks like a model)."""
    missing = []
    for index in sorted(path.glob("*.index.json")):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except ValueError as error:
            raise ModelSourceError(f"{index} is not valid JSON: {error}") from error
        missing += [f"shard {name} (listed in {index.name})" for name in sorted(shards) if not (path / name).is_file()]
    return missing


def make_group_readable(directory: Path) -> None:
    """transformers 5 writes model.safetensors owner-only (0600); models on a shared cluster
    folder must be readable by the group's other jobs and users."""
    for path in Path(directory).rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o044)


def resolve_local_model(path: Path) -> dict[str, Any]:
    validate_model_dir(Path(path))
    return {
        "kind": "local",
        "path": str(Path(path).resolve()),
        "sha256": {"config.json": file_sha256(Path(path) / "config.json")},
    }


def download_hub_model(
    hub_id: str, revision: str | None, allow_patterns: Sequence[str] | None = None
) -> dict[str, Any]:
    """Snapshot a hub model into the Hugging Face cache (HF_HOME; served from it when offline).

    The cache, not results/, holds the weights: a 7B model is not copied per project, and a
    cluster's shared HF_HOME is reused.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(
            repo_id=hub_id, revision=revision, allow_patterns=list(allow_patterns or HUB_ALLOW_PATTERNS)
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        raise ModelSourceError(
            f"could not download model '{hub_id}' (revision {revision or 'default'}): "
            f"{type(error).__name__}: {error}. Without network access, pre-download it into the "
            f"Hugging Face cache (HF_HOME) or use source: {{kind: local, path: ...}}"
        ) from error
    snapshot_path = Path(snapshot)
    validate_model_dir(snapshot_path)
    return {
        "kind": "hub",
        "hub_id": hub_id,
        "revision": revision,
        "resolved_revision": snapshot_path.name,
        "path": str(snapshot_path.resolve()),
        "sha256": {"config.json": file_sha256(snapshot_path / "config.json")},
    }


def load_model_and_tokenizer(
    path: str | Path, dtype: str = "float32", device: str = "cpu", revision: str | None = None
):
    """Model + tokenizer ready for batched generation (left padding); a local directory or a
    hub id (with its revision)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left", revision=revision)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, revision=revision).to(device)
    return model, tokenizer
