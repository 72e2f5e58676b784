"""Data stage: raw and verl-format inputs -> one canonical schema, with counted drops."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import data
from tests.conftest import BENCHMARK_FILES, REPO_ROOT


def _columns_spec(path, **extra):
    return {
        "name": "toy",
        "role": "benchmark",
        "source": {"kind": "file", "path": str(path)},
        "format": "columns",
        "columns": {"question": "q", "answer": "a"},
        "instruction": "Box it.",
        "limit": None,
        "max_invalid_fraction": 0.5,
        **extra,
    }


def test_column_mapping_and_counted_drops(tmp_path):
    raw = tmp_path / "raw.jsonl"
    rows = [{"q": "1+1?", "a": 2}, {"q": "", "a": "3"}, {"q": "2+2?", "a": None}, {"q": "3+3?", "a": "6"}]
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
    raw.write_text(
        "".join(json.dumps({"q": "x", "a": ""}) + "\n" for _ in range(3)) + json.dumps({"q": "y", "a": "1"}) + "\n"
    )
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
        {
            "data_source": "x",
            "prompt": [{"role": "user", "content": "Q1 \\boxed{}"}],
            "ability": "math",
            "reward_model": {"ground_truth": ["7"], "style": "rule"},
            "extra_info": {"index": 5, "split": "test"},
        },
        {
            "data_source": "x",
            "prompt": [{"role": "user", "content": "Q2"}],
            "ability": "math",
            "reward_model": {"ground_truth": [], "style": "rule"},
            "extra_info": {"index": 6, "split": "test"},
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows), source)
    spec = {
        "name": "v",
        "role": "benchmark",
        "source": {"kind": "file", "path": str(source)},
        "format": "verl",
        "limit": None,
        "max_invalid_fraction": 0.5,
    }
    report = data.prepare_dataset(spec, tmp_path / "v.parquet")
    assert report.missing_answer == 1
    [row] = data.read_canonical(tmp_path / "v.parquet")
    assert row["reward_model"]["ground_truth"] == "7"
    assert row["data_source"] == "v"


def test_limit_keeps_the_first_valid_rows(tmp_path):
    out = tmp_path / "easy.parquet"
    spec = _columns_spec(
        REPO_ROOT / "config" / "demo_data" / "arith_easy.jsonl",
        limit=5,
        columns={"question": "problem", "answer": "answer"},
    )
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
    spec = {
        "name": name,
        "role": "benchmark",
        "source": {"kind": "file", "path": str(shared_data / BENCHMARK_FILES[name])},
        "format": "verl",
        "limit": None,
        "max_invalid_fraction": 0.0,
    }
    report = data.prepare_dataset(spec, tmp_path / f"{name}.parquet")
    assert report.rows_out == expected[name] and report.invalid == 0
    rows = data.read_canonical(tmp_path / f"{name}.parquet")
    assert all("\\boxed{}" in r["prompt"][0]["content"] for r in rows)
    assert all(isinstance(r["reward_model"]["ground_truth"], str) for r in rows)


def test_real_training_set_converts(shared_data, tmp_path):
    spec = {
        "name": "numina",
        "role": "train",
        "source": {"kind": "file", "path": str(shared_data / "NM_20K_1010.parquet")},
        "format": "verl",
        "limit": None,
        "max_invalid_fraction": 0.0,
    }
    report = data.prepare_dataset(spec, tmp_path / "numina.parquet")
    assert report.rows_out == 20000


# ---------------------------------------------------------------- multiple choice and templates


def test_multiple_choice_rows_keep_options_and_a_letter_gold(tmp_path):
    raw = tmp_path / "mc.jsonl"
    rows = [
        {"q": "Capital of France?", "options": ["Lyon", "Paris", "Nice"], "a": "B"},
        {"q": "Bad gold?", "options": ["x", "y"], "a": "C"},  # no option C: counted, dropped
        {"q": "One option?", "options": ["x"], "a": "A"},
        {"q": "Gold as text?", "options": ["red", "blue"], "a": "blue"},
    ]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = _columns_spec(
        raw,
        columns={"question": "q", "answer": "a", "options": "options"},
        template="Question: {question}\n Put the letter in \\boxed{}.",
        system_prompt="Reason step by step.",
    )
    report = data.prepare_dataset(spec, tmp_path / "mc.parquet")
    assert (report.rows_out, report.bad_options) == (2, 2)
    first, second = data.read_canonical(tmp_path / "mc.parquet")
    assert first["prompt"] == [
        {"role": "system", "content": "Reason step by step."},
        {
            "role": "user",
            "content": "Question: Capital of France?\nA. Lyon\nB. Paris\nC. Nice\n Put the letter in \\boxed{}.",
        },
    ]
    assert first["reward_model"]["ground_truth"] == "B" and first["extra_info"]["options"] == ["Lyon", "Paris", "Nice"]
    assert first["ability"] == "multiple_choice"
    assert second["reward_model"]["ground_truth"] == "B"


def test_shuffled_options_are_reproducible_and_the_gold_follows(tmp_path):
    raw = tmp_path / "gpqa.jsonl"
    rows = [
        {"Question": f"Q{i}?", "Correct": f"right{i}", "W1": f"w{i}a", "W2": f"w{i}b", "W3": f"w{i}c"}
        for i in range(12)
    ]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = _columns_spec(
        raw,
        columns={"question": "Question", "answer": "Correct", "options": ["Correct", "W1", "W2", "W3"]},
        shuffle_options=0,
    )
    data.prepare_dataset(spec, tmp_path / "a.parquet")
    data.prepare_dataset(spec, tmp_path / "b.parquet")
    first, again = data.read_canonical(tmp_path / "a.parquet"), data.read_canonical(tmp_path / "b.parquet")
    assert first == again
    letters = [row["reward_model"]["ground_truth"] for row in first]
    assert len(set(letters)) > 1  # not always A, as in the file
    for i, row in enumerate(first):
        options = row["extra_info"]["options"]
        assert options["ABCD".index(letters[i])] == f"right{i}" and sorted(options) == sorted(
            [f"right{i}", f"w{i}a", f"w{i}b", f"w{i}c"]
        )


def test_headerless_csv_files_by_glob(tmp_path):
    folder = tmp_path / "gpqa"
    folder.mkdir()
    (folder / "biology_test.csv").write_text('"Which, with a comma?",a1,b1,c1,d1,C\n')
    (folder / "physics_test.csv").write_text("Second?,a2,b2,c2,d2,A\nThird?,a3,b3,c3,d3,D\n")
    spec = _columns_spec(
        folder / "*_test.csv", columns={"question": "question", "answer": "answer", "options": ["A", "B", "C", "D"]}
    )
    spec["source"]["column_names"] = ["question", "A", "B", "C", "D", "answer"]
    report = data.prepare_dataset(spec, tmp_path / "gpqa.parquet")
    rows = data.read_canonical(tmp_path / "gpqa.parquet")
    assert report.rows_in == 3 and [r["reward_model"]["ground_truth"] for r in rows] == ["C", "A", "D"]
    assert rows[0]["extra_info"]["question"] == "Which, with a comma?\nA. a1\nB. b1\nC. c1\nD. d1"
    with pytest.raises(data.DataError, match="dataset file not found"):
        data.prepare_dataset(_columns_spec(folder / "*_dev.csv"), tmp_path / "none.parquet")


def test_a_worked_solution_column_gives_the_gold_in_its_last_box(tmp_path):
    """answer_from_last_box (the hub AIME copy's `solution` column): the last complete box is the
    gold, a bare value is kept as written, a solution without a complete box is a row without answer."""
    raw = tmp_path / "aime.jsonl"
    rows = [
        {"problem": "P1?", "solution": "We find $x=3$, so the walk takes \\boxed{204} minutes."},
        {"problem": "P2?", "solution": "\\boxed{\\frac{1}{2}}"},
        {"problem": "P3?", "solution": "73"},
        {"problem": "P4?", "solution": "first \\boxed{9 then nothing closes"},
    ]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = _columns_spec(raw, columns={"question": "problem", "answer": "solution"}, max_invalid_fraction=0.5)
    spec["answer_from_last_box"] = True
    spec["instruction"] = "Let's think step by step, and put the final answer within \\boxed{}."
    report = data.prepare_dataset(spec, tmp_path / "aime.parquet")
    assert (report.rows_out, report.missing_answer) == (3, 1)
    golds = [r["reward_model"]["ground_truth"] for r in data.read_canonical(tmp_path / "aime.parquet")]
    assert golds == ["204", "\\frac{1}{2}", "73"]
    first = data.read_canonical(tmp_path / "aime.parquet")[0]
    assert first["prompt"][-1]["content"] == "P1? Let's think step by step, and put the final answer within \\boxed{}."
    spec["answer_from_last_box"] = False  # off (the default): the column as written
    data.prepare_dataset(spec, tmp_path / "as_written.parquet")
    assert data.read_canonical(tmp_path / "as_written.parquet")[0]["reward_model"]["ground_truth"].startswith("We find")
