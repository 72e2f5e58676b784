"""What produced a number: package versions, git commit, fingerprints of specs and files.

Recorded in every metrics.json and every MLflow run, because published numbers in this field
move with the grader version and the evaluation protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

#: Packages whose versions change numbers (or the way they are produced).
TRACKED_PACKAGES = (
    "math-verify",
    "latex2sympy2_extended",
    "sympy",
    "transformers",
    "tokenizers",
    "torch",
    "vllm",
    "verl",
    "trl",
    "datasets",
    "mlflow",
    "snakemake",
)


def package_versions(packages: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed version per package; packages that are not installed are left out."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(repo: Path | None = None) -> str:
    """HEAD commit of the project (with `-dirty` when the work tree has changes), or `unknown`."""
    cwd = repo or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def fingerprint(obj: Any, length: int = 10) -> str:
    """Short stable hash of a JSON-able object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(text: str, path: Path) -> None:
    """Write a whole file or nothing: a reader (or a killed job) never sees half of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json_atomic(payload: Any, path: Path) -> None:
    write_text_atomic(json.dumps(payload, indent=2, ensure_ascii=False), path)


#: Keys of our JSON records (model manifests, training records) whose values are file-system paths.
PATH_KEYS = frozenset({"path", "checkpoint_dir", "actor_checkpoint"})


def _inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def portable_paths(record: Any, anchor: str | Path, root: str | Path | None) -> Any:
    """A copy of a record whose absolute paths inside the results `root` are relative to
    `anchor` (the folder of the file the record is written to), so a moved or copied results
    tree reads its own files; paths outside it (a hub cache, a user's model folder) stay as they
    are. Nested records (a base manifest inside a training record) get the same treatment."""
    if isinstance(record, dict):
        return {
            key: (
                os.path.relpath(os.path.realpath(value), os.path.realpath(anchor))
                if key in PATH_KEYS
                and isinstance(value, str)
                and root is not None
                and os.path.isabs(value)
                and _inside(value, root)
                else portable_paths(value, anchor, root)
            )
            for key, value in record.items()
        }
    return record


def resolved_paths(record: Any, anchor: str | Path) -> Any:
    """The record with relative paths (as `portable_paths` writes them) joined to `anchor`."""
    if isinstance(record, dict):
        return {
            key: (
                os.path.normpath(os.path.join(os.path.abspath(anchor), value))
                if key in PATH_KEYS and isinstance(value, str) and value and not os.path.isabs(value)
                else resolved_paths(value, anchor)
            )
            for key, value in record.items()
        }
    return record
