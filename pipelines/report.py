"""Results table: one block per grader and protocol; rows model x method, columns the benchmarks.

Writes `table.md` (for people), `table.csv` (for tools), `table.json` (every cell with the
metrics.json, protocol and MLflow run it came from), `table.png` (the blocks as bar charts with
their intervals), `agreement.md` (how often the graders disagree, per benchmark) and
`grader_flips.jsonl` (every sample the graders disagree on, with its answer and gold) and
`graded_samples.csv` (the first graded generations of every evaluation, for reading).

Numbers are percentages with one decimal, as in the EMPO README, each with the half-width of its
95% interval (bootstrap over questions, from metrics.json) and the number of questions. Published
numbers sit under the first protocol's blocks (the protocol they were produced with). A trained
row's difference from its model's base row is paired over the same questions, and says whether
its interval excludes 0. Each row names the protocol id(s) that produced it; the legend spells
them out, because numbers in this field move with the protocol and the grader.
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


Key = tuple[str, str, str, str, str]  # model, method, benchmark, protocol, grader


def load_metrics(paths: Sequence[str | Path]) -> dict[Key, dict[str, Any]]:
    """metrics.json files keyed by (model, method, benchmark, protocol, grader); each remembers its path."""
    found: dict[Key, dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            key = (data["model"], data["method"], data["benchmark"], data["protocol_name"], data["grader"]["name"])
            float(data["accuracy"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ReportError(f"{path} is not a metrics.json of the grade stage: {error}") from error
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
    judge = manifest.get("semantic_judge")
    judged = f", semantic judge {judge['model']} ({judge['engine']})" if judge else ""
    if backend == "trl":
        return f"trl, {manifest.get('rollout_steps', manifest.get('global_step'))} steps{judged}"
    return f"{backend}, step {manifest.get('global_step')}{judged}"


def _paired_vs_base(
    entry: Mapping[str, Any], base: Mapping[str, Any] | None, bootstrap: Mapping[str, int]
) -> dict[str, Any] | None:
    from pipelines.metrics import paired_difference

    if base is None:
        return None
    mine = dict(zip(entry["per_item"]["index"], entry["per_item"]["correct"]))
    theirs = dict(zip(base["per_item"]["index"], base["per_item"]["correct"]))
    paired = paired_difference(
        mine, theirs, entry["protocol"]["decoding"]["n"], base["protocol"]["decoding"]["n"], **bootstrap
    )
    return {**paired, "difference": 100 * paired["difference"], "ci95": [100 * v for v in paired["ci95"]]}


def _cell(
    entry: Mapping[str, Any] | None,
    published: float | None,
    base: Mapping[str, Any] | None,
    bootstrap: Mapping[str, int],
) -> dict[str, Any]:
    if entry is None:
        return {"value": None, "published": published, "diff": None}
    value = 100.0 * float(entry["accuracy"])
    low, high = (100.0 * v for v in entry["uncertainty"]["accuracy"]["ci95"])
    n = entry["protocol"]["decoding"]["n"]
    return {
        "value": value,
        "ci95": [low, high],
        "half_width": (high - low) / 2,
        "se": 100.0 * entry["uncertainty"]["accuracy"]["se"],
        "published": published,
        "diff": None if published is None else value - published,
        "metric": f"mean@{n}" if n > 1 else "pass@1",
        "majority": None if f"maj@{n}" not in entry["metrics"] else 100.0 * entry["metrics"][f"maj@{n}"],
        "items": entry["counts"]["items"],
        "vs_base": _paired_vs_base(entry, base, bootstrap),
        "protocol_id": entry["protocol_id"],
        "metrics_path": entry["_path"],
        "mlflow_run_id": entry.get("mlflow_run_id"),
        "finished_at": entry.get("finished_at"),
    }


def build_table(spec: Mapping[str, Any], metrics: Mapping[Key, Mapping[str, Any]]) -> dict[str, Any]:
    """The table as data: blocks (grader x protocol) of rows with per-benchmark cells."""
    protocols: dict[str, Any] = {}
    blocks = []
    headline = next(iter(spec["protocols"]))
    for grader in spec["graders"]:
        for protocol, benchmarks in spec["protocols"].items():
            rows = []
            for row in spec["rows"]:

                def entry_of(
                    method: str,
                    benchmark: str,
                    model: str = row["model"],
                    protocol: str = protocol,
                    grader: str = grader,
                ) -> Mapping[str, Any] | None:
                    return metrics.get((model, method, benchmark, protocol, grader))

                cells = {}
                for benchmark in benchmarks:
                    entry = entry_of(row["method"], benchmark)
                    published = row["published"].get(benchmark) if protocol == headline else None
                    base = entry_of(row["baseline_method"], benchmark) if row.get("baseline_method") else None
                    cells[benchmark] = _cell(entry, published, base, spec["bootstrap"])
                    if entry is not None:
                        protocols.setdefault(entry["protocol_id"], entry["protocol"])
                trainings = {
                    describe_training(entry.get("model_manifest"))
                    for benchmark in benchmarks
                    if (entry := entry_of(row["method"], benchmark)) is not None
                }
                average = _mean([cells[b]["value"] for b in benchmarks])
                published_average = _mean([cells[b]["published"] for b in benchmarks])
                rows.append(
                    {
                        "model": row["model"],
                        "method": row["method"],
                        "cells": cells,
                        "baseline_method": row.get("baseline_method"),
                        "label_model": row.get("label_model", row["model"]),
                        "label_method": row.get("label_method", row["method"]),
                        "divergences": list(row.get("divergences", [])),
                        "average": average,
                        "published_average": published_average,
                        "average_diff": None
                        if average is None or published_average is None
                        else average - published_average,
                        "protocol_ids": sorted({c["protocol_id"] for c in cells.values() if c.get("protocol_id")}),
                        # two values = cells evaluated on different checkpoints (e.g. convert_step changed midway)
                        "training": "; ".join(sorted(t for t in trainings if t)) or None,
                    }
                )
            blocks.append(
                {
                    "grader": grader,
                    "protocol": protocol,
                    "benchmarks": list(benchmarks),
                    "headline": protocol == headline,
                    "rows": rows,
                }
            )
    return {
        "benchmarks": list(spec["benchmarks"]),
        "graders": list(spec["graders"]),
        "blocks": blocks,
        "rows": spec["rows"],
        "protocols": protocols,
        "published_only": list(spec.get("published_only", [])),
        "reference": dict(spec.get("reference", {})),
    }


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def describe_protocol(protocol: Mapping[str, Any]) -> str:
    decoding, prompt, grader = protocol["decoding"], protocol["prompt"], protocol["grader"]
    top_k = f" top_k={decoding['top_k']}" if decoding.get("top_k") else ""
    sampling = (
        "greedy"
        if decoding["temperature"] == 0
        else f"sampling T={decoding['temperature']} top_p={decoding['top_p']}{top_k} n={decoding['n']} "
        f"seed={decoding['seed']}"
    )
    system = prompt.get("system_prompt")
    prompt_text = "model chat template" if prompt["format"] == "chat" else "plain text"
    if prompt["format"] == "chat":
        prompt_text += f', system prompt "{system}"' if system is not None else ", template's default system prompt"
    stops = f", stop {json.dumps(decoding['stop'])}" if decoding["stop"] else ""
    judge = f", judge {grader['judge']['model']} ({grader['judge']['engine']})" if grader.get("judge") else ""
    if grader["name"] == "choice-letter":
        judge += (
            "; the authors' MMLU-Pro/GPQA rule: the boxed answer math-verify extracts, normalised, "
            "must be the gold letter or '<letter>. <option text>'"
        )
    return (
        f"{protocol.get('name', '?')}: {protocol['engine']} engine ({protocol['dtype']}), {sampling}, "
        f"max {decoding['max_new_tokens']} new tokens{stops}; prompt: {prompt_text}; grader: {grader['name']} "
        f"(math-verify {grader.get('math_verify', grader.get('version', '?'))}, timeout "
        f"{grader['timeout_seconds']} s{judge})"
    )


def _divergence_text(item: Mapping[str, str]) -> str:
    if item["setting"] == "note":
        return item["theirs"]
    if "reason" in item:  # a key of their verl script our command differs on
        return f"{item['setting']}: theirs {item['theirs']}; ours differs: {item['reason']}"
    return f"{item['setting']}: ours {item['ours']}; theirs {item['theirs']}"


def render_divergences(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every known difference from the authors' settings, per row (shared ones listed once)."""
    keyed = [[_divergence_text(item) for item in row.get("divergences", [])] for row in rows]
    if not any(keyed):
        return []
    common = [text for text in keyed[0] if all(text in texts for texts in keyed)]
    lines = [
        "",
        "## Differences from the authors",
        "",
        "Generated from the config (`reference.authors`, `models.<name>.authors`).",
    ]
    if common:
        lines += ["", "Every row:"] + [f"- {text}" for text in common]
    for row, texts in zip(rows, keyed):
        own = [text for text in texts if text not in common]
        if own:
            lines += ["", f"{row.get('label_model', row['model'])} / {row.get('label_method', row['method'])}:"]
            lines += [f"- {text}" for text in own]
    return lines


def _with_interval(cell: Mapping[str, Any]) -> str:
    if cell["value"] is None:
        return "–"
    return f"{cell['value']:.1f} ± {cell['half_width']:.1f}"


def _vs_base(cell: Mapping[str, Any]) -> str:
    paired = cell.get("vs_base")
    if not paired:
        return "–"
    low, high = paired["ci95"]
    return f"{paired['difference']:+.1f} [{low:+.1f}, {high:+.1f}]" + ("*" if paired["excludes_zero"] else "")


def render_block(block: Mapping[str, Any]) -> list[str]:
    benchmarks = block["benchmarks"]
    items = {
        b: next((r["cells"][b]["items"] for r in block["rows"] if r["cells"][b].get("items")), None) for b in benchmarks
    }
    metric = sorted({r["cells"][b]["metric"] for r in block["rows"] for b in benchmarks if r["cells"][b].get("metric")})
    header = [
        "Model",
        "Method",
        "",
        *[f"{b} (N={items[b] if items[b] is not None else '?'})" for b in benchmarks],
        "Avg",
        "Protocol",
    ]
    lines = [
        f"## Grader {block['grader']} · protocol {block['protocol']} ({', '.join(metric) or '–'})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in block["rows"]:
        cells = row["cells"]
        lines.append(
            "| "
            + " | ".join(
                [
                    row["label_model"],
                    row["label_method"] + (f" ({row['training']})" if row["training"] else ""),
                    "measured",
                    *[_with_interval(cells[b]) for b in benchmarks],
                    _fmt(row["average"]),
                    ", ".join(row["protocol_ids"]) or "–",
                ]
            )
            + " |"
        )
        if any(cells[b].get("vs_base") for b in benchmarks):
            lines.append(
                "| " + " | ".join(["", "", "vs base", *[_vs_base(cells[b]) for b in benchmarks], "", ""]) + " |"
            )
        if any(cells[b]["published"] is not None for b in benchmarks):
            lines.append(
                "| "
                + " | ".join(
                    [
                        "",
                        "",
                        "published",
                        *[_fmt(cells[b]["published"]) for b in benchmarks],
                        _fmt(row["published_average"]),
                        "",
                    ]
                )
                + " |"
            )
            lines.append(
                "| "
                + " | ".join(
                    [
                        "",
                        "",
                        "Δ published",
                        *[_fmt(cells[b]["diff"], signed=True) for b in benchmarks],
                        _fmt(row["average_diff"], signed=True),
                        "",
                    ]
                )
                + " |"
            )
    majority = [(row, b) for row in block["rows"] for b in benchmarks if row["cells"][b].get("majority") is not None]
    if majority:
        lines += [
            "",
            "Majority vote (maj@n, same samples): "
            + "; ".join(
                f"{row['label_model']}/{row['label_method']} {b} {row['cells'][b]['majority']:.1f}"
                for row, b in majority
            ),
        ]
    return lines + [""]


def training_effects(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every trained row's paired difference from its base, under the first grader: the
    question the table exists to answer, one line per (row, benchmark, protocol)."""
    effects = []
    first_grader = table["graders"][0] if table["graders"] else None
    for block in table["blocks"]:
        if block["grader"] != first_grader:
            continue
        for row in block["rows"]:
            for benchmark in block["benchmarks"]:
                cell = row["cells"][benchmark]
                paired = cell.get("vs_base")
                if not paired:
                    continue
                base = next(
                    (
                        r
                        for r in block["rows"]
                        if r["model"] == row["model"] and r["method"] == row.get("baseline_method")
                    ),
                    None,
                )
                base_cell = base["cells"][benchmark] if base else {}
                effects.append(
                    {
                        "model": row["label_model"],
                        "method": row["label_method"],
                        "benchmark": benchmark,
                        "protocol": block["protocol"],
                        "metric": cell.get("metric"),
                        "grader": block["grader"],
                        "base": base_cell.get("value"),
                        "value": cell["value"],
                        "difference": paired["difference"],
                        "ci95": paired["ci95"],
                        "excludes_zero": paired["excludes_zero"],
                        "base_majority": base_cell.get("majority"),
                    }
                )
    return effects


def render_effects(effects: Sequence[Mapping[str, Any]]) -> list[str]:
    if not effects:
        return []
    lines = [
        f"## Effect of training (grader {effects[0]['grader']})",
        "",
        "Each trained model against its base on the same questions (paired). A gain or a loss is called "
        "only where the 95% interval of the difference excludes 0. `base maj@n`: the base model's "
        "majority-vote accuracy over the same samples, the ceiling that rewarding agreement pulls "
        "the sampled accuracy towards.",
        "",
        "| Model | Method | Benchmark | Protocol | base | trained | difference [95% interval] | verdict | base maj@n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for effect in effects:
        low, high = effect["ci95"]
        verdict = ("gain" if effect["difference"] > 0 else "loss") if effect["excludes_zero"] else "no clear difference"
        lines.append(
            "| "
            + " | ".join(
                [
                    effect["model"],
                    effect["method"],
                    effect["benchmark"],
                    f"{effect['protocol']} ({effect['metric']})",
                    _fmt(effect["base"]),
                    _fmt(effect["value"]),
                    f"{effect['difference']:+.1f} [{low:+.1f}, {high:+.1f}]",
                    verdict,
                    _fmt(effect["base_majority"]),
                ]
            )
            + " |"
        )
    return lines + [""]


def render_markdown(table: Mapping[str, Any]) -> str:
    lines = [
        "# Results",
        "",
        "Scores in percent (pass@1 for greedy decoding, mean@n when sampling n > 1), each ± the half-width "
        "of its 95% interval (bootstrap over the N questions; samples nested within questions). "
        "`vs base`: the difference from the same model's base row, paired over the same questions, "
        "[95% interval], * = the interval excludes 0. Published numbers sit under the first protocol "
        "(the one they were produced with), with the difference measured − published.",
        "",
    ]
    lines += render_effects(training_effects(table))
    for block in table["blocks"]:
        lines += render_block(block)
    lines += ["## Protocols", ""]
    for protocol_id, protocol in sorted(table["protocols"].items()):
        lines.append(f"- `{protocol_id}`: {describe_protocol(protocol)}")
    reference = table["reference"]
    if reference.get("source"):
        lines += ["", "## Published numbers", "", f"Source: {reference['source']}."]
        if reference.get("protocol"):
            lines.append(f"Their protocol: {reference['protocol']}.")
    if table.get("agreement"):
        lines += ["", render_agreement(table["agreement"], table["graders"], heading="##").rstrip("\n")]
    lines += render_divergences(table["rows"])
    if table["published_only"]:
        lines += [
            "",
            "Published rows this configuration does not run: "
            + "; ".join(f"{r['model']} / {r['method']}" for r in table["published_only"])
            + ".",
        ]
    lines += [
        "",
        "Every cell's metrics.json, protocol and MLflow run: `table.json`. "
        "Where the graders disagree: `agreement.md` and `grader_flips.jsonl`.",
        "",
    ]
    return "\n".join(lines)


def write_csv(table: Mapping[str, Any], path: Path) -> None:
    """One line per (grader, protocol, model, method); per benchmark value, interval, N, published."""
    benchmarks = table["benchmarks"]
    columns = ["grader", "protocol", "model", "method", "training", "protocol_ids"]
    for name in benchmarks:
        columns += [
            name,
            f"{name}_ci_low",
            f"{name}_ci_high",
            f"{name}_items",
            f"{name}_published",
            f"{name}_diff",
            f"{name}_vs_base",
            f"{name}_vs_base_low",
            f"{name}_vs_base_high",
        ]
    columns += ["avg", "avg_published", "avg_diff"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for block in table["blocks"]:
            for row in block["rows"]:
                values: list[Any] = [
                    block["grader"],
                    block["protocol"],
                    row["label_model"],
                    row["label_method"],
                    row["training"] or "",
                    " ".join(row["protocol_ids"]),
                ]
                for benchmark in benchmarks:
                    cell = row["cells"].get(benchmark, {"value": None, "published": None, "diff": None})
                    low, high = cell.get("ci95") or (None, None)
                    paired = cell.get("vs_base") or {}
                    paired_low, paired_high = paired.get("ci95") or (None, None)
                    values += [
                        _csv(cell["value"]),
                        _csv(low),
                        _csv(high),
                        cell.get("items") or "",
                        _csv(cell["published"]),
                        _csv(cell["diff"]),
                        _csv(paired.get("difference")),
                        _csv(paired_low),
                        _csv(paired_high),
                    ]
                values += [_csv(row["average"]), _csv(row["published_average"]), _csv(row["average_diff"])]
                writer.writerow(values)


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def plot_table(table: Mapping[str, Any], path: Path) -> None:
    """One panel per block: bars with 95% intervals, published numbers as black ticks where any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = table["blocks"]
    columns_max = max(len(b["benchmarks"]) for b in blocks) + 1
    rows_max = max(len(b["rows"]) for b in blocks)
    figure, axes_list = plt.subplots(
        len(blocks), 1, squeeze=False, figsize=(max(6.0, 1.6 * columns_max + 0.25 * rows_max), 3.6 * len(blocks))
    )
    for axes, block in zip(axes_list[:, 0], blocks):
        columns = [*block["benchmarks"], "Avg"]
        rows = block["rows"]
        width = 0.8 / max(1, len(rows))
        top = 0.0
        any_published = False
        for position, row in enumerate(rows):
            cells = [row["cells"][b] for b in block["benchmarks"]]
            measured = [c["value"] for c in cells] + [row["average"]]
            errors = [
                [0.0 if c["value"] is None else c["value"] - c["ci95"][0] for c in cells] + [0.0],
                [0.0 if c["value"] is None else c["ci95"][1] - c["value"] for c in cells] + [0.0],
            ]
            published = [c["published"] for c in cells] + [row["published_average"]]
            xs = [c + (position - (len(rows) - 1) / 2) * width for c in range(len(columns))]
            axes.bar(
                xs,
                [v if v is not None else 0.0 for v in measured],
                width,
                yerr=errors,
                capsize=2,
                label=f"{row['label_model']} / {row['label_method']}",
            )
            for x, value in zip(xs, published):
                if value is not None:
                    any_published = True
                    axes.plot([x - width / 2, x + width / 2], [value, value], color="black", linewidth=2)
                    top = max(top, value)
            for x, value, high in zip(xs, measured, errors[1]):
                label = "n/a" if value is None else f"{value:.1f}"
                axes.text(x, (value or 0.0) + high, label, ha="center", va="bottom", fontsize=7)
                top = max(top, (value or 0.0) + high)
        axes.set_xticks(range(len(columns)), columns)
        axes.set_ylabel("score (%)")
        axes.set_ylim(0, min(100.0, max(5.0, top * 1.2)))
        title = f"grader {block['grader']} · protocol {block['protocol']}: bars with 95% intervals"
        axes.set_title(title + (", published = black ticks" if any_published else ""), fontsize=9)
        axes.legend(fontsize=7, loc="upper right")
        axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def grader_agreement(
    metrics: Mapping[Key, Mapping[str, Any]], graders: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per (benchmark, protocol) and grader pair (the first grader against each other one):
    samples compared, both correct, only the first, only the other; plus every flipped sample."""
    if len(graders) < 2:
        return [], []
    first = graders[0]
    summary: dict[tuple[str, str, str], dict[str, Any]] = {}
    flips: list[dict[str, Any]] = []
    evaluations = sorted({key[:4] for key in metrics})
    generations_cache: dict[str, dict[tuple[int, int], Mapping[str, Any]]] = {}
    for model, method, benchmark, protocol in evaluations:
        reference = metrics.get((model, method, benchmark, protocol, first))
        if reference is None:
            continue
        mine = _read_grades(reference)
        for other in graders[1:]:
            entry = metrics.get((model, method, benchmark, protocol, other))
            if entry is None:
                continue
            theirs = _read_grades(entry)
            tally = summary.setdefault(
                (benchmark, protocol, other),
                {
                    "benchmark": benchmark,
                    "protocol": protocol,
                    "first": first,
                    "other": other,
                    "samples": 0,
                    "both_correct": 0,
                    "only_first": 0,
                    "only_other": 0,
                },
            )
            for key, verdict in mine.items():
                if key not in theirs:
                    continue
                tally["samples"] += 1
                a, b = bool(verdict["correct"]), bool(theirs[key]["correct"])
                tally["both_correct"] += a and b
                tally["only_first"] += a and not b
                tally["only_other"] += b and not a
                if a != b:
                    generations = generations_cache.setdefault(
                        reference["generation"]["path"], _read_generations(reference["generation"]["path"])
                    )
                    record = generations.get(key, {})
                    flips.append(
                        {
                            "model": model,
                            "method": method,
                            "benchmark": benchmark,
                            "protocol": protocol,
                            "index": key[0],
                            "sample": key[1],
                            "gold": record.get("gold"),
                            f"{first}_extracted": verdict["extracted"],
                            f"{first}_correct": a,
                            f"{other}_extracted": theirs[key]["extracted"],
                            f"{other}_correct": b,
                            f"{other}_decided_by": theirs[key].get("decided_by"),
                            "response_tail": (record.get("response") or "")[-300:],
                        }
                    )
    return list(summary.values()), flips


def _by_sample(path: Path | str) -> dict[tuple[int, int], dict[str, Any]]:
    """A JSONL file of per-sample records keyed by (index, sample)."""
    with open(path, encoding="utf-8") as handle:
        return {(int(r["index"]), int(r["sample"])): r for r in map(json.loads, handle)}


def _read_grades(entry: Mapping[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    path = Path(entry["_path"]).with_name("grades.jsonl")
    try:
        return _by_sample(path)
    except (OSError, ValueError, KeyError) as error:
        raise ReportError(f"{path}: the grades beside {entry['_path']} cannot be read ({error})") from error


def _read_generations(path: str) -> dict[tuple[int, int], Mapping[str, Any]]:
    try:
        return _by_sample(path)
    except (OSError, ValueError, KeyError):
        return {}  # examples lose their text, the counts stand


def render_agreement(summary: Sequence[Mapping[str, Any]], graders: Sequence[str], heading: str = "#") -> str:
    lines = [f"{heading} Grader agreement", ""]
    if len(graders) < 2:
        return "\n".join(lines + ["One grader configured (evaluation.graders): nothing to compare.", ""])
    lines += [
        f"Samples (every row of the table, every sample) graded by {graders[0]} and by each other grader. "
        "Every disagreeing sample, with its answer and gold: `grader_flips.jsonl`.",
        "",
        "| benchmark | protocol | graders | samples | both correct | only first | only other | agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tally in summary:
        agree = tally["samples"] - tally["only_first"] - tally["only_other"]
        share = f"{100 * agree / tally['samples']:.1f}%" if tally["samples"] else "–"
        lines.append(
            f"| {tally['benchmark']} | {tally['protocol']} | {tally['first']} vs {tally['other']} | "
            f"{tally['samples']} | {tally['both_correct']} | {tally['only_first']} | {tally['only_other']} | {share} |"
        )
    return "\n".join(lines + [""])


SAMPLES_PER_EVALUATION = 3
RESPONSE_TAIL_CHARS = 400

SAMPLE_COLUMNS = (
    "benchmark",
    "model",
    "method",
    "protocol",
    "grader",
    "correct",
    "extracted",
    "gold",
    "decided_by",
    "index",
    "sample",
    "response_tail",
)


def graded_samples(
    metrics: Mapping[Key, Mapping[str, Any]], grader: str, per_evaluation: int = SAMPLES_PER_EVALUATION
) -> list[dict[str, Any]]:
    """The first graded generations of every evaluation graded by `grader`, benchmark first:
    what a reader checks by eye (was it right, what did it answer, against what gold). Only
    the response's end is kept: that is where the answer is."""
    from pipelines.grade import graded_sample

    rows = []
    for (model, method, benchmark, protocol, name), entry in sorted(
        metrics.items(), key=lambda item: (item[0][2], item[0][0], item[0][1], item[0][3])
    ):
        if name != grader:
            continue
        grades = Path(entry["_path"]).with_name("grades.jsonl")
        generations = grades.parent.parent / "generations.jsonl"
        try:
            sample = graded_sample(generations, grades, rows=per_evaluation)
        except (OSError, ValueError, KeyError) as error:  # the table stands; only its examples go
            LOG.warning("%s: no graded samples for this evaluation (%s)", generations, error)
            continue
        for record in sample:
            response = record["response"] or ""
            tail = response if len(response) <= RESPONSE_TAIL_CHARS else "…" + response[-RESPONSE_TAIL_CHARS:]
            rows.append(
                {
                    "benchmark": benchmark,
                    "model": model,
                    "method": method,
                    "protocol": protocol,
                    "grader": grader,
                    **{key: record[key] for key in ("correct", "extracted", "gold", "decided_by", "index", "sample")},
                    "response_tail": tail,
                }
            )
    return rows


def write_report(spec: Mapping[str, Any], metrics_paths: Sequence[str | Path], out_dir: Path) -> dict[str, Any]:
    metrics = load_metrics(metrics_paths)
    table = build_table(spec, metrics)
    summary, flips = grader_agreement(metrics, spec["graders"])
    table["agreement"] = summary
    table["effects"] = training_effects(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(render_markdown(table), encoding="utf-8")
    write_csv(table, out_dir / "table.csv")
    (out_dir / "table.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    plot_table(table, out_dir / "table.png")
    (out_dir / "agreement.md").write_text(render_agreement(summary, spec["graders"]), encoding="utf-8")
    with open(out_dir / "grader_flips.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(flip, ensure_ascii=False) + "\n" for flip in flips)
    with open(out_dir / "graded_samples.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SAMPLE_COLUMNS)
        writer.writeheader()
        writer.writerows(graded_samples(metrics, spec["graders"][0]))
    return table


def cell_rows(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per number of the table, with the eval run and file it came from: the MLflow
    table view answers "where did this number come from" in one click."""
    rows = []
    for block in table["blocks"]:
        for row in block["rows"]:
            for benchmark, cell in row["cells"].items():
                if cell["value"] is None:
                    continue
                # the number and where it came from first: the UI's table view is narrow
                rows.append(
                    {
                        "model": row.get("label_model", row["model"]),
                        "method": row.get("label_method", row["method"]),
                        "benchmark": benchmark,
                        "value": round(cell["value"], 2),
                        "eval_run_id": cell.get("mlflow_run_id"),
                        "grader": block["grader"],
                        "protocol": block["protocol"],
                        "metric": cell.get("metric"),
                        "ci95_low": round(cell["ci95"][0], 2) if cell.get("ci95") else None,
                        "ci95_high": round(cell["ci95"][1], 2) if cell.get("ci95") else None,
                        "items": cell.get("items"),
                        "published": cell.get("published"),
                        "protocol_id": cell.get("protocol_id"),
                        "metrics_path": cell.get("metrics_path"),
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.report` — the table, its chart and the graders' agreement from metrics.json files."""
    from pipelines import tracking

    parser = stage_parser(main.__doc__)
    parser.add_argument("--metrics", nargs="+", required=True)
    parser.add_argument("--out-dir", required=True, type=Path)
    args, spec, tracking_config = parse_stage_args(parser, argv)
    with tracking.job_run(tracking_config, "table", "table", spec, log_file=args.log_file) as tracker:
        table = write_report(spec, args.metrics, args.out_dir)
        for block in table["blocks"]:
            for row in block["rows"]:
                prefix = f"{block['grader']}/{block['protocol']}/{row['model']}/{row['method']}"
                scores = {f"{prefix}/{b}": c["value"] for b, c in row["cells"].items() if c["value"] is not None}
                if row["average"] is not None:
                    scores[f"{prefix}/avg"] = row["average"]
                tracker.log_metrics(scores)
        for name in (
            "table.md",
            "table.csv",
            "table.json",
            "table.png",
            "agreement.md",
            "grader_flips.jsonl",
            "graded_samples.csv",
        ):
            tracker.log_artifact(args.out_dir / name, "table")
        tracker.log_table(cell_rows(table), "table/cells.json")
    print(render_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
