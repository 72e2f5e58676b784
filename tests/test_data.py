"""Data stage: raw and verl-format inputs -> one canonical schema, with counted drops."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import data
from tests.conftest import BENCHMARK_FILES, REPO_ROOT


def _columns_spec(path, **extra):
    return {"name": "toy", "role": "benchmark", "source": {"kind": "file", "path": str(path)},
            "format": "columns", "columns": {"question": "q", "answer": "a"},
            "instruction": "Box it.", "limit": None, "max_invalid_fraction": 0.5, **extra}


def test_column_mapping_and_counted_drops(tmp_path):
    raw = tmp_path / "raw.jsonl"
    rows = [{"q": "1+1?", "a": 2}, {"q": "", "a": "3"}, {"q": "2+2?", "a": None},
            {"q": "3+3?", "a": "6"}]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "toy.parquet"
    report = data.prepare_dataset(_columns_spec(raw), out)
    assert (report.rows_in, report.rows_out) == (4, 2)
    assert (report.missing_question, report.missing_answer) == (1, 1)
    written = data.read_canonical(out)
    assert written[0]["prompt"] == [{"role": "user", "content": "1+1? Box it."}]
    assert written[0]["reward_model"] == {"ground_truth": "2", "style": "rule"}
    assert [r["extra_info"]["index"] for r in written] == [0, 1]
    assert written[1]["extra_info"]["question"] == "3+3?"
    assert pq.read_schema(out).equals(data.CANONICAL_SCHEMA)


def test_too_many_invalid_rows_fail_with_a_clear_message_and_no_output(tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"q": "x", "a": ""}) + "\n" for _ in range(3))
                   + json.dumps({"q": "y", "a": "1"}) + "\n")
    out = tmp_path / "toy.parquet"
    with pytest.raises(data.DataError, match=r"dataset 'toy'.*3 of 4 rows.*max_invalid_fraction"):
        data.prepare_dataset(_columns_spec(raw, max_invalid_fraction=0.1), out)
    assert not out.exists()


def test_wrong_column_mapping_is_reported(tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(data.DataError, match=r"columns"):
        data.prepare_dataset(_columns_spec(raw), tmp_path / "toy.parquet")


def test_verl_format_unwraps_one_element_ground_truth_lists(tmp_path):
    source = tmp_path / "verl.parquet"
    rows = [
        {"data_source": "x", "prompt": [{"role": "user", "content": "Q1 \\boxed{}"}], "ability": "math",
         "reward_model": {"ground_truth": ["7"], "style": "rule"}, "extra_info": {"index": 5, "split": "test"}},
        {"data_source": "x", "prompt": [{"role": "user", "content": "Q2"}], "ability": "math",
         "reward_model": {"ground_truth": [], "style": "rule"}, "extra_info": {"index": 6, "split": "test"}},
    ]
    pq.write_table(pa.Table.from_pylist(rows), source)
    spec = {"name": "v", "role": "benchmark", "source": {"kind": "file", "path": str(source)},
            "format": "verl", "limit": None, "max_invalid_fraction": 0.5}
    report = data.prepare_dataset(spec, tmp_path / "v.parquet")
    assert report.missing_answer == 1
    [row] = data.read_canonical(tmp_path / "v.parquet")
    assert row["reward_model"]["ground_truth"] == "7"
    assert row["data_source"] == "v"


def test_limit_keeps_the_first_valid_rows(tmp_path):
    out = tmp_path / "easy.parquet"
    spec = _columns_spec(REPO_ROOT / "config" / "demo_data" / "arith_easy.jsonl", limit=5,
                         columns={"question": "problem", "answer": "answer"})
    report = data.prepare_dataset(spec, out)
    assert report.rows_out == 5 and report.dropped_by_limit == 19


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.load_records({"kind": "file", "path": str(tmp_path / "nope.parquet")})
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(data.DataError, match="unsupported dataset file type"):
        data.load_records({"kind": "file", "path": str(odd)})


def test_hub_failure_names_the_dataset_and_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(data.DataError, match=r"'nobody/no-such-dataset'.*kind: file"):
        data.load_records({"kind": "hub", "hub_id": "nobody/no-such-dataset", "split": "test"})


@pytest.mark.parametrize("name", sorted(BENCHMARK_FILES))
def test_real_benchmarks_convert_without_loss(shared_data, tmp_path, name):
    expected = {"math500": 500, "minerva_math": 272, "olympiadbench": 675, "aime24": 30, "amc23": 40}
    spec = {"name": name, "role": "benchmark",
            "source": {"kind": "file", "path": str(shared_data / BENCHMARK_FILES[name])},
            "format": "verl", "limit": None, "max_invalid_fraction": 0.0}
    report = data.prepare_dataset(spec, tmp_path / f"{name}.parquet")
    assert report.rows_out == expected[name] and report.invalid == 0
    rows = data.read_canonical(tmp_path / f"{name}.parquet")
    assert all("\\boxed{}" in r["prompt"][0]["content"] for r in rows)
    assert all(isinstance(r["reward_model"]["ground_truth"], str) for r in rows)


def test_real_training_set_converts(shared_data, tmp_path):
    spec = {"name": "numina", "role": "train",
            "source": {"kind": "file", "path": str(shared_data / "NM_20K_1010.parquet")},
            "format": "verl", "limit": None, "max_invalid_fraction": 0.0}
    report = data.prepare_dataset(spec, tmp_path / "numina.parquet")
    assert report.rows_out == 20000
