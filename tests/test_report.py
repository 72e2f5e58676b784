"""The results table: blocks per grader and protocol, intervals and counts, paired differences
against the base row, measured vs published, the graders' agreement, traceability, chart."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipelines import report
from pipelines.metrics import summarize

DECODING = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "n": 1, "seed": 0, "max_new_tokens": 64, "stop": []}


def _protocol(name: str, grader: str, **decoding) -> dict:
    return {
        "name": name,
        "engine": "hf",
        "dtype": "float32",
        "prompt": {"format": "chat", "system_prompt": None},
        "decoding": {**DECODING, **decoding},
        "chunk_size": 8,
        "grader": {"name": grader, "math_verify": "0.9.0", "timeout_seconds": 5},
    }


def _metrics(
    root: Path,
    model: str,
    method: str,
    benchmark: str,
    correct: list[list[bool]],
    protocol: str = "greedy",
    grader: str = "math-verify",
    protocol_id: str = "p1",
    **decoding,
) -> Path:
    """A metrics.json (and its grades.jsonl) from per-question sample verdicts, summarised by
    the real metrics code."""
    n = len(correct[0])
    records = [
        {
            "index": i,
            "sample": s,
            "extracted": "1" if ok else "2",
            "correct": ok,
            "response_tokens": 3,
            "finish_reason": "stop",
        }
        for i, samples in enumerate(correct)
        for s, ok in enumerate(samples)
    ]
    summary = summarize(records, n=n, ks=[1], bootstrap={"samples": 400, "seed": 0})
    folder = root / "eval" / model / method / benchmark / protocol / grader
    folder.mkdir(parents=True)
    (folder / "grades.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder.parent / "generations.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "index": r["index"],
                    "sample": r["sample"],
                    "gold": "1",
                    "question": f"q{r['index']}",
                    "response": "x" * 500 + f" so the answer is {r['extracted']}",
                }
            )
            + "\n"
            for r in records
        )
    )
    (folder / "metrics.json").write_text(
        json.dumps(
            {
                "model": model,
                "method": method,
                "benchmark": benchmark,
                "protocol_name": protocol,
                "grader": {"name": grader},
                "accuracy": summary["metrics"]["accuracy"],
                "metrics": summary["metrics"],
                "uncertainty": summary["uncertainty"],
                "counts": summary["counts"],
                "per_item": summary["per_item"],
                "protocol": _protocol(protocol, grader, n=n, **decoding),
                "protocol_id": protocol_id,
                "generation": {"path": str(root / "none.jsonl")},
                "mlflow_run_id": f"run-{benchmark}",
                "finished_at": "2026-11-22T12:00:00",
            }
        )
    )
    return folder / "metrics.json"


def _spec(rows, graders=("math-verify",), protocols=None) -> dict:
    return {
        "benchmarks": ["b1", "b2"],
        "graders": list(graders),
        "protocols": protocols or {"greedy": ["b1", "b2"]},
        "bootstrap": {"samples": 400, "seed": 0},
        "rows": rows,
        "published_only": [{"model": "m", "method": "gspo", "published": {"b1": 70.0}}],
        "reference": {"source": "EMPO README", "protocol": "greedy"},
    }


ROW_BASE = {
    "model": "m",
    "method": "base",
    "label_model": "m",
    "label_method": "base",
    "published": {"b1": 50.0, "b2": 20.0},
    "baseline_method": None,
}
ROW_EMPO = {
    "model": "m",
    "method": "empo",
    "label_model": "m",
    "label_method": "empo",
    "published": {},
    "baseline_method": "base",
}


def _answers(right: int, total: int = 40) -> list[list[bool]]:
    return [[i < right] for i in range(total)]


def test_graded_samples_show_verdict_answer_gold_and_the_response_end(tmp_path):
    paths = [
        _metrics(tmp_path, "m", "base", "b1", _answers(1, total=5)),
        _metrics(tmp_path, "m", "empo", "b1", _answers(4, total=5)),
        _metrics(tmp_path, "m", "base", "b1", _answers(1, total=5), grader="empo-rules"),
    ]
    report.write_report(_spec([ROW_BASE, ROW_EMPO], graders=("math-verify", "empo-rules")), paths, tmp_path)
    with open(tmp_path / "graded_samples.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["index"], r["correct"]) for r in rows] == [
        ("base", "0", "True"),
        ("base", "1", "False"),
        ("base", "2", "False"),
        ("empo", "0", "True"),
        ("empo", "1", "True"),
        ("empo", "2", "True"),
    ]
    assert {r["grader"] for r in rows} == {"math-verify"}  # the first grader only
    assert rows[1]["extracted"] == "2" and rows[1]["gold"] == "1"
    assert rows[0]["response_tail"].startswith("…") and rows[0]["response_tail"].endswith("the answer is 1")
    assert len(rows[0]["response_tail"]) == report.RESPONSE_TAIL_CHARS + 1


def test_table_has_intervals_counts_published_and_difference(tmp_path):
    paths = [
        _metrics(tmp_path, "m", "base", "b1", _answers(22)),
        _metrics(tmp_path, "m", "base", "b2", _answers(4)),
        _metrics(tmp_path, "m", "empo", "b1", _answers(30)),
        _metrics(tmp_path, "m", "empo", "b2", _answers(4)),
    ]
    table = report.write_report(_spec([ROW_BASE, ROW_EMPO]), paths, tmp_path)
    block = table["blocks"][0]
    base, empo = block["rows"]
    assert base["cells"]["b1"]["value"] == pytest.approx(55.0) and base["cells"]["b1"]["items"] == 40
    low, high = base["cells"]["b1"]["ci95"]
    assert low < 55.0 < high and 10 < high - low < 40  # 40 questions: roughly ±15 points
    assert base["cells"]["b1"]["diff"] == pytest.approx(5.0) and base["average"] == pytest.approx(32.5)
    paired = empo["cells"]["b1"]["vs_base"]
    assert paired["difference"] == pytest.approx(20.0) and paired["excludes_zero"]  # 8 more right, none lost
    assert empo["cells"]["b2"]["vs_base"]["difference"] == 0.0 and not empo["cells"]["b2"]["vs_base"]["excludes_zero"]

    markdown = (tmp_path / "table.md").read_text()
    assert "## Grader math-verify · protocol greedy (pass@1)" in markdown
    assert "| Model | Method |  | b1 (N=40) | b2 (N=40) | Avg | Protocol |" in markdown
    assert f"| m | base | measured | 55.0 ± {base['cells']['b1']['half_width']:.1f} |" in markdown
    assert "|  |  | published | 50.0 | 20.0 | 35.0 |  |" in markdown
    assert "|  |  | Δ published | +5.0 | -10.0 | -2.5 |  |" in markdown
    assert "|  |  | vs base | +20.0 [" in markdown and "]* | +0.0 [+0.0, +0.0] |" in markdown
    assert "`p1`: greedy: hf engine (float32), greedy, max 64 new tokens" in markdown
    assert "m / gspo" in markdown  # published but not run

    with open(tmp_path / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["grader"] == "math-verify" and rows[0]["b2_diff"] == "-10.00" and rows[0]["b1_items"] == "40"
    assert float(rows[0]["b1_ci_low"]) < 55.0 < float(rows[0]["b1_ci_high"])
    assert rows[1]["b1_vs_base"] == "20.00"
    cell = json.loads((tmp_path / "table.json").read_text())["blocks"][0]["rows"][0]["cells"]["b2"]
    assert cell["metrics_path"] == str(paths[1]) and cell["mlflow_run_id"] == "run-b2"
    png = (tmp_path / "table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_graders_and_protocols_each_get_a_block_and_published_only_the_first_protocol(tmp_path):
    protocols = {"greedy": ["b1", "b2"], "avg4": ["b2"]}
    paths = []
    for grader in ("math-verify", "empo-rules"):
        paths += [
            _metrics(tmp_path, "m", "base", "b1", _answers(20), grader=grader),
            _metrics(tmp_path, "m", "base", "b2", _answers(20 if grader == "math-verify" else 25), grader=grader),
            _metrics(
                tmp_path,
                "m",
                "base",
                "b2",
                [[True, False, True, False]] * 40,
                protocol="avg4",
                grader=grader,
                protocol_id="p2",
                temperature=0.6,
            ),
        ]
    table = report.write_report(_spec([ROW_BASE], ("math-verify", "empo-rules"), protocols), paths, tmp_path)
    assert [(b["grader"], b["protocol"], b["benchmarks"]) for b in table["blocks"]] == [
        ("math-verify", "greedy", ["b1", "b2"]),
        ("math-verify", "avg4", ["b2"]),
        ("empo-rules", "greedy", ["b1", "b2"]),
        ("empo-rules", "avg4", ["b2"]),
    ]
    assert table["blocks"][0]["rows"][0]["cells"]["b1"]["published"] == 50.0
    assert table["blocks"][1]["rows"][0]["cells"]["b2"]["published"] is None  # another protocol
    assert table["blocks"][1]["rows"][0]["cells"]["b2"]["metric"] == "mean@4"
    markdown = (tmp_path / "table.md").read_text()
    assert "## Grader empo-rules · protocol avg4 (mean@4)" in markdown
    assert "## Grader agreement" in markdown and "| b2 | greedy | math-verify vs empo-rules | 40 |" in markdown

    agreement = (tmp_path / "agreement.md").read_text()
    assert "| b2 | greedy | math-verify vs empo-rules | 40 | 20 | 0 | 5 | 87.5% |" in agreement
    assert "| b1 | greedy | math-verify vs empo-rules | 40 | 20 | 0 | 0 | 100.0% |" in agreement
    flips = [json.loads(line) for line in (tmp_path / "grader_flips.jsonl").read_text().splitlines()]
    assert len(flips) == 5 and {f["index"] for f in flips} == {20, 21, 22, 23, 24}
    assert all(f["benchmark"] == "b2" and not f["math-verify_correct"] and f["empo-rules_correct"] for f in flips)


def test_missing_cells_show_a_dash_and_no_average(tmp_path):
    paths = [_metrics(tmp_path, "m", "base", "b1", _answers(20))]
    table = report.build_table(_spec([ROW_BASE]), report.load_metrics(paths))
    assert table["blocks"][0]["rows"][0]["average"] is None
    assert "| m | base | measured | 50.0 ± " in report.render_markdown(table)
    assert "| – | – | p1 |" in report.render_markdown(table)


def test_corrupt_or_duplicate_metrics_are_refused(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(report.ReportError, match="metrics.json"):
        report.load_metrics([bad])
    one = _metrics(tmp_path, "m", "base", "b1", _answers(20))
    copy = tmp_path / "copy.json"
    copy.write_text(one.read_text())
    with pytest.raises(report.ReportError, match="two metrics files"):
        report.load_metrics([one, copy])


def test_trained_rows_say_how_they_were_trained(tmp_path):
    rows = [ROW_BASE, ROW_EMPO, {**ROW_EMPO, "method": "gspo", "label_method": "gspo"}]
    paths = []
    for method, manifest in [
        ("base", {"kind": "hub", "path": "/hf"}),
        ("empo", {"kind": "trained", "backend": "verl", "global_step": 192}),
        ("gspo", {"kind": "trained", "backend": "trl", "global_step": 16, "rollout_steps": 2}),
    ]:
        path = _metrics(tmp_path, "m", method, "b1", _answers(20))
        path.write_text(json.dumps({**json.loads(path.read_text()), "model_manifest": manifest}))
        paths.append(path)
    spec = {**_spec(rows), "benchmarks": ["b1"], "protocols": {"greedy": ["b1"]}}
    table = report.write_report(spec, paths, tmp_path)
    assert [row["training"] for row in table["blocks"][0]["rows"]] == [None, "verl, step 192", "trl, 2 steps"]
    markdown = (tmp_path / "table.md").read_text()
    assert "| m | empo (verl, step 192) | measured |" in markdown
    with open(tmp_path / "table.csv") as handle:
        assert [row["training"] for row in csv.DictReader(handle)] == ["", "verl, step 192", "trl, 2 steps"]
