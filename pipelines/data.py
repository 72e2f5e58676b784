"""Data stage: load a dataset (hub id or local file) and write it in the canonical schema.

The canonical schema is verl's, so the same parquet feeds the TRL trainer, the verl trainer
and the evaluator:

    data_source  str                        the dataset's name in our config
    prompt       list[{role, content}]      one user message; instruction suffix included
    ability      str                        "math"
    reward_model {ground_truth: str, style: "rule"}
    extra_info   {index: int, split: str, question: str, options: list[str] | None}

Multiple-choice datasets (`columns.options`) write their options under the question, one
"\nA. <option>" line each (the authors' MMLU-Pro/GPQA `format_example`), keep them in
`extra_info.options`, and hold the correct option's letter as the ground truth. A dataset's
`template` and `system_prompt` shape the prompt as the authors' scripts do for that dataset.

`ground_truth` is a plain string (the authors' files hold a one-element list; we unwrap it).
Rows missing a question or an answer are dropped and counted; above a configured fraction
the job fails rather than silently evaluating on a different set.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.cli import parse_stage_args, stage_parser
from pipelines.provenance import file_sha256

LOG = logging.getLogger(__name__)

CANONICAL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("index", pa.int64()),
                    ("split", pa.string()),
                    ("question", pa.string()),
                    ("options", pa.list_(pa.string())),
                ]
            ),
        ),
    ]
)

FILE_LOADERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


class DataError(RuntimeError):
    """A dataset that cannot be used as configured; the message names the dataset."""


@dataclass
class ConversionReport:
    """What happened to the rows of one dataset."""

    name: str
    source: str
    rows_in: int = 0
    rows_out: int = 0
    missing_question: int = 0
    missing_answer: int = 0
    bad_options: int = 0  # multiple choice: fewer than two options, or a gold that is not an option's letter
    dropped_by_limit: int = 0
    examples_dropped: list[str] = field(default_factory=list)

    @property
    def invalid(self) -> int:
        return self.missing_question + self.missing_answer + self.bad_options


def describe_source(source: Mapping[str, Any]) -> str:
    if source["kind"] == "hub":
        parts = [source["hub_id"], source.get("subset") or "", source.get("split", "train")]
        revision = source.get("revision")
        return "hub:" + "/".join(p for p in parts if p) + (f"@{revision}" if revision else "")
    return f"file:{source['path']}"


def load_records(source: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of a dataset as plain dicts, through the `datasets` library (hub or local file)."""
    import datasets

    if source["kind"] == "hub":
        try:
            dataset = datasets.load_dataset(
                source["hub_id"],
                source.get("subset"),
                split=source.get("split", "train"),
                revision=source.get("revision"),
            )
        except Exception as error:  # noqa: BLE001 - datasets raises many types for "unreachable"
            raise DataError(
                f"could not load hub dataset '{source['hub_id']}' (split "
                f"'{source.get('split', 'train')}'): {type(error).__name__}: {error}. Without "
                f"network access, download it beforehand (HF_HOME) or point the dataset at a "
                f"local file with source: {{kind: file, path: ...}}"
            ) from error
    elif source["kind"] == "file":
        from pipelines.config import dataset_files

        paths = dataset_files(source["path"])
        if not paths:
            raise DataError(f"dataset file not found: {source['path']}")
        loaders = {check_data_file(path) for path in paths}
        if len(loaders) != 1:
            raise DataError(f"{source['path']} matches files of different types: {', '.join(map(str, paths))}")
        loader = loaders.pop()
        options: dict[str, Any] = {}
        if source.get("column_names"):
            if loader != "csv":
                raise DataError(f"source.column_names is for CSV files without a header, not {source['path']}")
            options = {"column_names": list(source["column_names"]), "header": None}
        try:
            dataset = datasets.load_dataset(loader, data_files=[str(p) for p in paths], split="train", **options)
        except Exception as error:  # noqa: BLE001 - datasets wraps parser errors in its own types
            cause = error.__cause__ or error.__context__ or error
            raise DataError(
                f"cannot read dataset file {source['path']} as {loader}: {type(cause).__name__}: {str(cause)[:300]}"
            ) from error
    else:
        raise DataError(f"unsupported dataset source kind '{source['kind']}'")
    return [dict(row) for row in dataset]


def check_data_file(path: Path) -> str:
    """The `datasets` loader for a local file, after checks that name the file: it exists, is
    not empty, and (text formats) is UTF-8, with the line of the first bad byte."""
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    loader = FILE_LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DataError(
            f"unsupported dataset file type '{path.suffix}' for {path} (use one of {', '.join(FILE_LOADERS)})"
        )
    if loader == "parquet":
        if path.stat().st_size == 0:
            raise DataError(f"dataset file {path} is empty (0 bytes)")
        return loader
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"dataset file {path} is not UTF-8: byte 0x{raw[error.start]:02x} at offset "
            f"{error.start} (line {line}); re-encode it as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"dataset file {path} is empty (no rows)")
    return loader


def _text(value: Any) -> str | None:
    """A non-empty string, or None for missing/blank values (numbers become strings)."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas-made files
        return None
    text = str(value).strip()
    return text or None


def _ground_truth(value: Any) -> str | None:
    """Unwrap the authors' one-element lists; reject empty lists."""
    if isinstance(value, (list, tuple)):
        texts = [_text(item) for item in value]
        texts = [t for t in texts if t is not None]
        return texts[0] if texts else None
    return _text(value)


def _user_message(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return _text(prompt)
    if isinstance(prompt, (list, tuple)):
        for message in prompt:
            if isinstance(message, Mapping) and message.get("role") == "user":
                return _text(message.get("content"))
    return None


def _options(record: Mapping[str, Any], column: str | Sequence[str] | None) -> list[str] | None:
    """A row's options (a list column, or one column per option); blank trailing options dropped."""
    if column is None:
        return None
    values = record.get(column) if isinstance(column, str) else [record.get(c) for c in column]
    if not isinstance(values, (list, tuple)):
        return None
    texts = [_text(value) for value in values]
    while texts and texts[-1] is None:
        texts.pop()
    return None if len(texts) < 2 or None in texts else [str(t) for t in texts]


def _choice_gold(
    options: list[str] | None, answer: str | None, shuffle_seed: int | None, position: int
) -> tuple[list[str] | None, str | None]:
    """Options (permuted per row when `shuffle_options` is set: a file that lists the correct
    answer first, as GPQA's does) and the gold letter. The answer column may hold the letter or
    the correct option's text."""
    if options is None or answer is None:
        return options, answer
    from pipelines.free_form import CHOICE_LETTERS

    correct = (
        CHOICE_LETTERS.index(answer)
        if len(answer) == 1 and answer in CHOICE_LETTERS[: len(options)]
        else options.index(answer)
        if answer in options
        else None
    )
    if correct is None:
        return options, None
    if shuffle_seed is not None:
        import random

        order = list(range(len(options)))
        random.Random(f"{shuffle_seed}:{position}").shuffle(order)
        options, correct = [options[i] for i in order], order.index(correct)
    return options, CHOICE_LETTERS[correct]


def user_content(question: str, spec: Mapping[str, Any]) -> str:
    """The user message of a columns-format row: the dataset's template, else question + instruction."""
    template = spec.get("template")
    if template is not None:
        return template.replace("{question}", question)
    return f"{question} {spec.get('instruction', '')}".strip()


def to_canonical(
    records: Iterable[Mapping[str, Any]], name: str, spec: Mapping[str, Any], report: ConversionReport
) -> list[dict[str, Any]]:
    """Map raw rows to canonical rows, dropping (and counting) rows without question or answer."""
    from pipelines.free_form import format_options

    rows: list[dict[str, Any]] = []
    fmt = spec.get("format", "verl")
    columns = spec.get("columns", {})
    limit = spec.get("limit")
    system = [{"role": "system", "content": spec["system_prompt"]}] if spec.get("system_prompt") else []
    for position, record in enumerate(records):
        report.rows_in += 1
        extra = record.get("extra_info") if isinstance(record.get("extra_info"), Mapping) else {}
        options = None
        if fmt == "verl":
            content = _user_message(record.get("prompt"))
            reward = record.get("reward_model")
            answer = _ground_truth(reward.get("ground_truth")) if isinstance(reward, Mapping) else None
            question = _text(extra.get("question")) or content
            options = extra.get("options") or None
            messages = [{"role": "user", "content": content}] if content else None
        else:
            question = _text(record.get(columns.get("question", "problem")))
            answer = _ground_truth(record.get(columns.get("answer", "answer")))
            if spec.get("answer_from_last_box") and answer is not None and "\\boxed" in answer:
                from pipelines.grading import extract_answer

                answer = extract_answer(answer)  # None (no complete box): counted as a row without answer
            if "options" in columns and question is not None:
                options = _options(record, columns["options"])
                options, answer = _choice_gold(options, answer, spec.get("shuffle_options"), position)
                if options is None or answer is None:  # _choice_gold returns a valid letter or None
                    report.bad_options += 1
                    if len(report.examples_dropped) < 5:
                        report.examples_dropped.append(f"row {position}: options {options!r}, answer {answer!r}")
                    continue
                question = format_options(question, options)
            content = user_content(question, spec) if question else None
            messages = [{"role": "user", "content": content}] if content else None
        if messages is None:
            report.missing_question += 1
            if len(report.examples_dropped) < 5:
                report.examples_dropped.append(f"row {position}: no question")
            continue
        if answer is None:
            report.missing_answer += 1
            if len(report.examples_dropped) < 5:
                report.examples_dropped.append(f"row {position}: no answer")
            continue
        if limit is not None and len(rows) >= limit:
            report.dropped_by_limit += 1
            continue
        rows.append(
            {
                "data_source": name,
                "prompt": system + messages,
                "ability": _text(record.get("ability")) or ("multiple_choice" if options else "math"),
                "reward_model": {"ground_truth": answer, "style": "rule"},
                "extra_info": {
                    "index": len(rows),
                    "split": _text(extra.get("split")) or "test",
                    "question": question,
                    "options": options,
                },
            }
        )
    report.rows_out = len(rows)
    return rows


def check_invalid_fraction(report: ConversionReport, max_invalid_fraction: float) -> None:
    if report.rows_in == 0:
        raise DataError(f"dataset '{report.name}' ({report.source}) has no rows")
    fraction = report.invalid / report.rows_in
    if fraction > max_invalid_fraction:
        raise DataError(
            f"dataset '{report.name}' ({report.source}): {report.invalid} of {report.rows_in} rows "
            f"({fraction:.1%}) lack a question ({report.missing_question}) or an answer "
            f"({report.missing_answer}) or have unusable options ({report.bad_options}), above "
            f"max_invalid_fraction={max_invalid_fraction:.1%}. "
            f"Check the column mapping (datasets.{report.name}.columns) or raise the limit. "
            f"First problems: {'; '.join(report.examples_dropped)}"
        )
    if report.rows_out == 0:
        raise DataError(f"dataset '{report.name}' ({report.source}) has no usable rows")


def write_canonical(rows: list[dict[str, Any]], path: Path) -> None:
    """Atomic parquet write: a crash never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA)
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial)
    partial.replace(path)


def read_canonical(path: str | Path) -> list[dict[str, Any]]:
    """Canonical rows as plain Python (lists, dicts), whatever tool wrote the parquet."""
    table = pq.read_table(path)
    missing = [name for name in CANONICAL_SCHEMA.names if name not in table.column_names]
    if missing:
        raise DataError(f"{path} is not in the canonical schema: missing columns {missing}")
    return table.to_pylist()


def prepare_dataset(spec: Mapping[str, Any], output: Path) -> ConversionReport:
    """Load, convert, check and write one dataset; return what happened to its rows."""
    name = spec["name"]
    report = ConversionReport(name=name, source=describe_source(spec["source"]))
    try:
        records = load_records(spec["source"])
    except DataError as error:
        raise DataError(f"dataset '{name}': {error}") from error.__cause__
    rows = to_canonical(records, name, spec, report)
    check_invalid_fraction(report, spec.get("max_invalid_fraction", 0.01))
    if report.invalid:
        LOG.warning(
            "dataset %s: dropped %d rows without question, %d without answer, %d with unusable options (%s)",
            name,
            report.missing_question,
            report.missing_answer,
            report.bad_options,
            "; ".join(report.examples_dropped),
        )
    write_canonical(rows, output)
    LOG.info("dataset %s: %d rows in, %d rows written to %s", name, report.rows_in, report.rows_out, output)
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.data` — one dataset to results/data/<name>.parquet."""
    from pipelines import tracking

    parser = stage_parser(main.__doc__)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--summary", required=True, type=Path)
    args, spec, tracking_config = parse_stage_args(parser, argv)
    with tracking.job_run(tracking_config, "data", spec["name"], spec, log_file=args.log_file) as tracker:
        report = prepare_dataset(spec, args.output)
        digest = file_sha256(args.output)
        summary = {**asdict(report), "digest": digest, "path": str(args.output), "mlflow_run_id": tracker.run_id}
        args.summary.write_text(json.dumps(summary, indent=2))
        tracker.log_metrics(
            {
                "rows_in": report.rows_in,
                "rows": report.rows_out,
                "missing_question": report.missing_question,
                "missing_answer": report.missing_answer,
                "bad_options": report.bad_options,
            }
        )
        tracker.log_dataset(
            args.output, name=spec["name"], source=report.source, digest=digest[:16], context=spec["role"]
        )
        tracker.log_artifact(args.output, "data")
        tracker.log_artifact(args.summary, "data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
