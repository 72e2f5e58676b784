"""The model manifest (`model.json`: path, source, revision, digests) that evaluation reads;
paths inside the results tree stored relative, so the tree can move."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.models.sources import ModelSourceError
from pipelines.provenance import portable_paths, resolved_paths, write_json_atomic


def write_manifest(manifest: dict[str, Any], path: Path, results_root: str | Path | None = None) -> None:
    """Write a manifest; paths inside `results_root` are stored relative to the manifest's folder
    (provenance.portable_paths), so the results tree can move."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(portable_paths(manifest, path.parent, results_root), path)


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest with its paths absolute again (relative ones are read from its own folder)."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"cannot read model manifest {path}: {error}") from error
    if "path" not in manifest:
        raise ModelSourceError(f"model manifest {path} has no 'path'")
    return resolved_paths(manifest, Path(path).parent)
