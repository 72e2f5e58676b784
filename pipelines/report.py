"""Results table: rows model x method, columns the benchmarks + average, published numbers beside.

Writes `table.md` (for people), `table.csv` (for tools), `table.json` (every cell with the
metrics.json, protocol and MLflow run it came from) and `table.png` (measured vs published).
Numbers are percentages with one decimal, as in the EMPO README. Each row names the protocol
id(s) that produced it; the legend under the table spells the protocols out, because numbers
in this field move with the protocol.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, stage_parser

LOG = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """Inputs that cannot make a consistent table."""


def load_metrics(paths: Sequence[str | Path]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """metrics.json files keyed by (model, method, benchmark); each remembers its own path."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            key = (data["model"], data["method"], data["benchmark"])
            float(data["accuracy"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ReportError(f"{path} is not a metrics.json of the evaluation stage: {error}") from error
        if key in found:
            raise ReportError(f"two metrics files for {key}: {found[key]['_path']} and {path}")
        found[key] = {**data, "_path": str(path)}
    return found


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def describe_training(manifest: Mapping[str, Any] | None) -> str | None:
    """How a row's model was trained (backend and step), from the model manifest eval recorded."""
    if not manifest or manifest.get("kind") != "trained":
        return None
    backend = manifest.get("backend", "?")
    if backend == "trl":
        return f"trl, {manifest.get('rollout_steps', manifest.get('global_step'))} steps"
    return f"{backend}, step {manifest.get('global_step')}"


def build_table(spec: Mapping[str, Any], metrics: Mapping[tuple[str, str, str], Mapping[str, Any]]
                ) -> dict[str, Any]:
    """The table as data: rows with per-benchmark measured/published/diff and cell sources."""
    benchmarks = list(spec["benchmarks"])
    protocols: dict[str, Any] = {}
    rows = []
    for row in spec["rows"]:
        cells = {}
        for benchmark in benchmarks:
            entry = metrics.get((row["model"], row["method"], benchmark))
            published = row["published"].get(benchmark)
            if entry is None:
                cells[benchmark] = {"value": None, "published": published, "diff": None}
                continue
            value = 100.0 * float(entry["accuracy"])
            protocols.setdefault(entry["protocol_id"], entry["protocol"])
            decoding = entry["protocol"]["decoding"]
            cells[benchmark] = {
                "value": value,
                "published": published,
                "diff": None if published is None else value - published,
                "metric": f"mean@{decoding['n']}" if decoding["n"] > 1 else "pass@1",
                "items": entry["counts"]["items"],
                "protocol_id": entry["protocol_id"],
                "metrics_path": entry["_path"],
                "mlflow_run_id": entry.get("mlflow_run_id"),
                "finished_at": entry.get("finished_at"),
            }
        trainings = {describe_training(entry.get("model_manifest"))
                     for benchmark in benchmarks
                     if (entry := metrics.get((row["model"], row["method"], benchmark))) is not None}
        average = _mean([cells[b]["value"] for b in benchmarks])
        published_average = _mean([row["published"].get(b) for b in benchmarks])
        rows.append({
            "model": row["model"], "method": row["method"], "cells": cells,
            "label_model": row.get("label_model", row["model"]), "label_method": row.get("label_method", row["method"]),
            "divergences": list(row.get("divergences", [])),
            "average": average, "published_average": published_average,
            "average_diff": None if average is None or published_average is None
            else average - published_average,
            "protocol_ids": sorted({c["protocol_id"] for c in cells.values() if c.get("protocol_id")}),
            # two values = cells evaluated on different checkpoints (e.g. convert_step changed midway)
            "training": "; ".join(sorted(t for t in trainings if t)) or None,
        })
    return {"benchmarks": benchmarks, "rows": rows, "protocols": protocols,
            "published_only": list(spec.get("published_only", [])),
            "reference": dict(spec.get("reference", {}))}


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def describe_protocol(protocol: Mapping[str, Any]) -> str:
    decoding, prompt, grader = protocol["decoding"], protocol["prompt"], protocol["grader"]
    top_k = f" top_k={decoding['top_k']}" if decoding.get("top_k") else ""
    sampling = ("greedy" if decoding["temperature"] == 0 else
                f"sampling T={decoding['temperature']} top_p={decoding['top_p']}{top_k} n={decoding['n']} "
                f"seed={decoding['seed']}")
    system = prompt.get("system_prompt")
    prompt_text = "model chat template" if prompt["format"] == "chat" else "plain text"
    if prompt["format"] == "chat":
        prompt_text += f', system prompt "{system}"' if system is not None else ", template's default system prompt"
    stops = f", stop {json.dumps(decoding['stop'])}" if decoding["stop"] else ""
    return (f"{protocol['engine']} engine ({protocol['dtype']}), {sampling}, max {decoding['max_new_tokens']} "
            f"new tokens{stops}; prompt: {prompt_text}; grader: {grader['name']} {grader['version']} "
            f"(timeout {grader['timeout_seconds']} s)")


def _divergence_text(item: Mapping[str, str]) -> str:
    if item["setting"] == "note":
        return item["theirs"]
    return f"{item['setting']}: ours {item['ours']}; theirs {item['theirs']}"


def render_divergences(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every known difference from the authors' settings, per row (shared ones listed once)."""
    keyed = [[_divergence_text(item) for item in row.get("divergences", [])] for row in rows]
    if not any(keyed):
        return []
    common = [text for text in keyed[0] if all(text in texts for texts in keyed)]
    lines = ["", "## Differences from the authors", "",
             "Generated from the config (`reference.authors`, `models.<name>.authors`)."]
    if common:
        lines += ["", "Every row:"] + [f"- {text}" for text in common]
    for row, texts in zip(rows, keyed):
        own = [text for text in texts if text not in common]
        if own:
            lines += ["", f"{row.get('label_model', row['model'])} / {row.get('label_method', row['method'])}:"]
            lines += [f"- {text}" for text in own]
    return lines


def render_markdown(table: Mapping[str, Any]) -> str:
    benchmarks = table["benchmarks"]
    header = ["Model", "Method", "", *benchmarks, "Avg", "Protocol"]
    lines = ["# Results", "",
             "Scores in percent (pass@1 for greedy decoding, mean@n when sampling n > 1). "
             "Under each measured row: the published number and the difference (measured − published).",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["rows"]:
        cells = row["cells"]
        lines.append("| " + " | ".join([
            row["label_model"], row["label_method"] + (f" ({row['training']})" if row["training"] else ""), "measured",
            *[_fmt(cells[b]["value"]) for b in benchmarks], _fmt(row["average"]),
            ", ".join(row["protocol_ids"]) or "–"]) + " |")
        if any(cells[b]["published"] is not None for b in benchmarks):
            lines.append("| " + " | ".join(["", "", "published",
                         *[_fmt(cells[b]["published"]) for b in benchmarks],
                         _fmt(row["published_average"]), ""]) + " |")
            lines.append("| " + " | ".join(["", "", "Δ",
                         *[_fmt(cells[b]["diff"], signed=True) for b in benchmarks],
                         _fmt(row["average_diff"], signed=True), ""]) + " |")
    lines += ["", "## Protocols", ""]
    for protocol_id, protocol in sorted(table["protocols"].items()):
        lines.append(f"- `{protocol_id}`: {describe_protocol(protocol)}")
    reference = table["reference"]
    if reference.get("source"):
        lines += ["", "## Published numbers", "", f"Source: {reference['source']}."]
        if reference.get("protocol"):
            lines.append(f"Their protocol: {reference['protocol']}.")
    lines += render_divergences(table["rows"])
    if table["published_only"]:
        lines += ["", "Published rows this configuration does not run: " + "; ".join(
            f"{r['model']} / {r['method']}" for r in table["published_only"]) + "."]
    lines += ["", "Every cell's metrics.json, protocol and MLflow run: `table.json`.", ""]
    return "\n".join(lines)


def write_csv(table: Mapping[str, Any], path: Path) -> None:
    benchmarks = table["benchmarks"]
    columns = ["model", "method", "training", "protocol_ids"]
    for name in [*benchmarks, "avg"]:
        columns += [name, f"{name}_published", f"{name}_diff"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in table["rows"]:
            values: list[Any] = [row["label_model"], row["label_method"], row["training"] or "",
                                 " ".join(row["protocol_ids"])]
            for benchmark in benchmarks:
                cell = row["cells"][benchmark]
                values += [_csv(cell["value"]), _csv(cell["published"]), _csv(cell["diff"])]
            values += [_csv(row["average"]), _csv(row["published_average"]), _csv(row["average_diff"])]
            writer.writerow(values)


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def plot_table(table: Mapping[str, Any], path: Path) -> None:
    """Grouped bars (measured) with published numbers as black ticks, per benchmark + Avg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*table["benchmarks"], "Avg"]
    rows = table["rows"]
    width = 0.8 / max(1, len(rows))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(columns) + 0.25 * len(rows)), 4.5))
    for position, row in enumerate(rows):
        measured = [row["cells"][b]["value"] for b in table["benchmarks"]] + [row["average"]]
        published = [row["cells"][b]["published"] for b in table["benchmarks"]] + [row["published_average"]]
        xs = [c + (position - (len(rows) - 1) / 2) * width for c in range(len(columns))]
        bars = axes.bar(xs, [v if v is not None else 0.0 for v in measured], width,
                        label=f"{row['label_model']} / {row['label_method']}")
        for x, value, bar in zip(xs, published, bars):
            if value is not None:
                axes.plot([x - width / 2, x + width / 2], [value, value], color="black", linewidth=2)
        for x, value in zip(xs, measured):
            label = "n/a" if value is None else f"{value:.1f}"
            axes.text(x, (value or 0.0) + 0.5, label, ha="center", va="bottom", fontsize=7)
    axes.set_xticks(range(len(columns)), columns)
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Measured (bars) vs published (black ticks)")
    axes.legend(fontsize=7, loc="upper right")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(spec: Mapping[str, Any], metrics_paths: Sequence[str | Path], out_dir: Path) -> dict[str, Any]:
    table = build_table(spec, load_metrics(metrics_paths))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(render_markdown(table), encoding="utf-8")
    write_csv(table, out_dir / "table.csv")
    (out_dir / "table.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    plot_table(table, out_dir / "table.png")
    return table


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.report` — table.md/csv/json/png from metrics.json files."""
    from pipelines import tracking

    parser = stage_parser(main.__doc__)
    parser.add_argument("--metrics", nargs="+", required=True)
    parser.add_argument("--out-dir", required=True, type=Path)
    args, spec, tracking_config = parse_stage_args(parser, argv)
    with tracking.job_run(tracking_config, "table", "table", spec, log_file=args.log_file) as tracker:
        table = write_report(spec, args.metrics, args.out_dir)
        for row in table["rows"]:
            prefix = f"{row['model']}/{row['method']}"
            scores = {f"{prefix}/{b}": c["value"] for b, c in row["cells"].items() if c["value"] is not None}
            if row["average"] is not None:
                scores[f"{prefix}/avg"] = row["average"]
            tracker.log_metrics(scores)
        for name in ("table.md", "table.csv", "table.json", "table.png"):
            tracker.log_artifact(args.out_dir / name, "table")
    print(render_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
