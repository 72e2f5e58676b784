"""The results table: measured vs published, averages, protocol legend, traceability, chart."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipelines import report

PROTOCOL = {"engine": "hf", "dtype": "float32", "prompt": {"format": "chat", "system_prompt": None},
            "decoding": {"temperature": 0.0, "top_p": 1.0, "n": 1, "seed": 0, "max_new_tokens": 64, "stop": []},
            "grader": {"name": "math-verify", "version": "0.9.0", "timeout_seconds": 5},
            "chunk_size": 8}


def _metrics(tmp_path: Path, model: str, method: str, benchmark: str, accuracy: float,
             protocol=PROTOCOL, protocol_id="p1") -> Path:
    path = tmp_path / "eval" / model / method / benchmark / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"model": model, "method": method, "benchmark": benchmark,
                                "accuracy": accuracy, "protocol": protocol, "protocol_id": protocol_id,
                                "counts": {"items": 10}, "mlflow_run_id": f"run-{benchmark}",
                                "finished_at": "2026-11-22T12:00:00"}))
    return path


SPEC = {"benchmarks": ["b1", "b2"],
        "rows": [{"model": "m", "method": "base", "published": {"b1": 50.0, "b2": 20.0}},
                 {"model": "m2", "method": "base", "published": {}}],
        "published_only": [{"model": "m", "method": "empo", "published": {"b1": 70.0}}],
        "reference": {"source": "EMPO README", "protocol": "greedy"}}


def test_table_has_measured_published_and_difference(tmp_path):
    paths = [_metrics(tmp_path, "m", "base", "b1", 0.55), _metrics(tmp_path, "m", "base", "b2", 0.10),
             _metrics(tmp_path, "m2", "base", "b1", 0.25), _metrics(tmp_path, "m2", "base", "b2", 0.35)]
    table = report.write_report(SPEC, paths, tmp_path)
    row = table["rows"][0]
    assert row["cells"]["b1"]["value"] == pytest.approx(55.0)
    assert row["cells"]["b1"]["diff"] == pytest.approx(5.0)
    assert row["average"] == pytest.approx(32.5)
    assert row["published_average"] == pytest.approx(35.0)
    assert row["average_diff"] == pytest.approx(-2.5)
    assert table["rows"][1]["cells"]["b1"]["published"] is None

    markdown = (tmp_path / "table.md").read_text()
    assert "| m | base | measured | 55.0 | 10.0 | 32.5 | p1 |" in markdown
    assert "|  |  | published | 50.0 | 20.0 | 35.0 |  |" in markdown
    assert "|  |  | Δ | +5.0 | -10.0 | -2.5 |  |" in markdown
    assert "`p1`: hf engine (float32), greedy, max 64 new tokens" in markdown
    assert "math-verify 0.9.0" in markdown
    assert "m / empo" in markdown  # published but not run

    with open(tmp_path / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["b2_diff"] == "-10.00" and rows[1]["avg"] == "30.00"

    cell = json.loads((tmp_path / "table.json").read_text())["rows"][0]["cells"]["b2"]
    assert cell["metrics_path"] == str(paths[1]) and cell["mlflow_run_id"] == "run-b2"
    png = (tmp_path / "table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_missing_cells_show_a_dash_and_no_average(tmp_path):
    paths = [_metrics(tmp_path, "m", "base", "b1", 0.5)]
    table = report.build_table(SPEC, report.load_metrics(paths))
    assert table["rows"][0]["average"] is None
    assert "| m | base | measured | 50.0 | – | – | p1 |" in report.render_markdown(table)


def test_rows_with_different_protocols_name_each(tmp_path):
    sampled = {**PROTOCOL, "decoding": {**PROTOCOL["decoding"], "temperature": 0.6, "n": 16}}
    paths = [_metrics(tmp_path, "m", "base", "b1", 0.5),
             _metrics(tmp_path, "m", "base", "b2", 0.5, protocol=sampled, protocol_id="p2")]
    table = report.build_table(SPEC, report.load_metrics(paths))
    assert table["rows"][0]["protocol_ids"] == ["p1", "p2"]
    assert table["rows"][0]["cells"]["b2"]["metric"] == "mean@16"
    assert "sampling T=0.6 top_p=1.0 n=16" in report.render_markdown(table)


def test_corrupt_or_duplicate_metrics_are_refused(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(report.ReportError, match="metrics.json"):
        report.load_metrics([bad])
    one = _metrics(tmp_path, "m", "base", "b1", 0.5)
    copy = tmp_path / "copy.json"
    copy.write_text(one.read_text())
    with pytest.raises(report.ReportError, match="two metrics files"):
        report.load_metrics([one, copy])


def test_trained_rows_say_how_they_were_trained(tmp_path):
    spec = {"benchmarks": ["b1"], "rows": [{"model": "m", "method": "base", "published": {}},
                                           {"model": "m", "method": "empo", "published": {}},
                                           {"model": "m", "method": "gspo", "published": {}}],
            "published_only": [], "reference": {}}
    paths = []
    for method, manifest in [("base", {"kind": "hub", "path": "/hf"}),
                             ("empo", {"kind": "trained", "backend": "verl", "global_step": 192}),
                             ("gspo", {"kind": "trained", "backend": "trl", "global_step": 16, "rollout_steps": 2})]:
        path = _metrics(tmp_path, "m", method, "b1", 0.5)
        path.write_text(json.dumps({**json.loads(path.read_text()), "model_manifest": manifest}))
        paths.append(path)
    table = report.write_report(spec, paths, tmp_path)
    assert [row["training"] for row in table["rows"]] == [None, "verl, step 192", "trl, 2 steps"]
    markdown = (tmp_path / "table.md").read_text()
    assert "| m | empo (verl, step 192) | measured |" in markdown
    with open(tmp_path / "table.csv") as handle:
        assert [row["training"] for row in csv.DictReader(handle)] == ["", "verl, step 192", "trl, 2 steps"]
