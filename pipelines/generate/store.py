"""The resume store: finished chunks appended to `generations.partial.jsonl`, kept across a
crash or a kill, turned into `generations.jsonl` when the evaluation is complete."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


class GenerationStore:
    """Append-only record of finished chunks, resumable after a crash or a kill."""

    def __init__(self, final_path: Path, run_fingerprint: str):
        self.final_path = final_path
        self.partial_path = final_path.with_name(final_path.stem + ".partial.jsonl")
        self.meta_path = final_path.with_name(final_path.stem + ".partial.meta.json")
        self.run_fingerprint = run_fingerprint

    def load(self, expected: Mapping[int, set[tuple[int, int]]]) -> dict[int, list[dict[str, Any]]]:
        """Complete chunks already on disk; anything torn or foreign is set aside, not lost."""
        if not self.partial_path.exists():
            return {}
        meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}
        if meta.get("fingerprint") != self.run_fingerprint:
            stale = self.partial_path.with_name(f"{self.partial_path.name}.stale-{int(time.time())}")
            LOG.warning(
                "%s was produced by another protocol/model/dataset; moved to %s and starting over",
                self.partial_path,
                stale.name,
            )
            self.partial_path.replace(stale)
            return {}
        chunks: dict[int, list[dict[str, Any]]] = {}
        torn_lines = 0
        with open(self.partial_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    torn_lines += 1
                    continue
                chunks.setdefault(int(record["chunk"]), []).append(record)
        complete = {
            chunk: records
            for chunk, records in chunks.items()
            if chunk in expected
            and {(r["index"], r["sample"]) for r in records} == expected[chunk]
            and len(records) == len(expected[chunk])
        }
        dropped = sum(len(r) for c, r in chunks.items() if c not in complete)
        if torn_lines or dropped:
            LOG.warning("resume: dropped %d torn line(s) and %d record(s) of incomplete chunks", torn_lines, dropped)
            self._rewrite([r for chunk in sorted(complete) for r in complete[chunk]])
        return complete

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        tmp = self.partial_path.with_name(self.partial_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.partial_path)

    def start(self) -> None:
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.meta_path.exists() or not self.partial_path.exists():
            self.meta_path.write_text(json.dumps({"fingerprint": self.run_fingerprint}))
            self.partial_path.touch()

    def append_chunk(self, records: Sequence[Mapping[str, Any]]) -> None:
        """One write + fsync per chunk, so a kill tears at most the chunk being written."""
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.partial_path, "a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    def finalize(self, keep_partial: bool = False) -> None:
        """The partial file becomes the final one; kept (copied) while other evaluations of the
        same job are still to come, so a kill loses none that finished."""
        if not keep_partial:
            self.partial_path.replace(self.final_path)
            self.meta_path.unlink(missing_ok=True)
            return
        tmp = self.final_path.with_name(self.final_path.name + ".tmp")
        shutil.copyfile(self.partial_path, tmp)
        tmp.replace(self.final_path)

    def discard_partial(self) -> None:
        self.partial_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
