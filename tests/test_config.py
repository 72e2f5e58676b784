"""Config validation: defaults filled from the schema, errors naming the key and the file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from pipelines import config as cfg
from tests.conftest import REPO_ROOT


def _demo() -> dict:
    return yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())


def _scoped_demo() -> dict:
    """The demo with a second benchmark that only the greedy protocol covers."""
    config = cfg.read_config_file(REPO_ROOT / "config" / "demo.yaml")
    config["datasets"]["add_more"] = {**config["datasets"]["add_val"], "role": "benchmark"}
    config["evaluation"]["benchmarks"] = ["add_test", "add_more"]
    config["evaluation"]["protocols"]["sample8"]["benchmarks"] = ["add_test"]
    return config


def _write(tmp_path: Path, data: dict, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_and_paper_configs_validate():
    demo = cfg.load_config([REPO_ROOT / "config" / "demo.yaml"])
    paper = cfg.load_config([REPO_ROOT / "config" / "config.yaml"])
    assert demo["evaluation"]["engine"] == "hf"
    assert paper["evaluation"]["engine"] == "vllm"
    assert len(cfg.generate_targets(paper)) >= 15


def test_defaults_come_from_the_schema_and_partial_objects_keep_their_keys():
    resolved = cfg.load_config([REPO_ROOT / "config" / "demo.yaml"])
    decoding = resolved["evaluation"]["decoding"]
    assert decoding["max_new_tokens"] == 20  # given
    assert decoding["n"] == 1 and decoding["stop"] == []  # filled from the schema default
    assert resolved["grading"]["timeout_seconds"] == 5
    paper = cfg.load_config([REPO_ROOT / "config" / "config.yaml"])
    assert paper["models"]["qwen2.5-math-1.5b-instruct"]["methods"] == ["base"]  # schema default
    assert cfg.resolved_trainer(resolved, "empo")["reward"] == "empo"
    assert cfg.resolved_trainer(resolved, "grpo")["max_steps"] == 40  # from training.defaults
    assert cfg.resolved_trainer(resolved, "grpo")["epsilon"] == 3e-4  # from the schema default


def test_protocols_name_their_decoding_and_their_benchmarks():
    resolved = cfg.validate_config(_scoped_demo(), source="demo with a scoped protocol")
    assert cfg.resolved_decoding(resolved, "add_test", protocol="sample8")["n"] == 8
    assert cfg.resolved_decoding(resolved, "add_test", protocol="sample8")["max_new_tokens"] == 20  # shared
    assert cfg.resolved_decoding(resolved, "add_test", protocol="greedy")["n"] == 1
    assert cfg.protocols_of(resolved, "add_more") == ["greedy"]
    assert cfg.protocols_of(resolved, "add_test") == ["greedy", "sample8"]
    assert len(cfg.generate_targets(resolved)) == 3 * 3 and len(cfg.grade_targets(resolved)) == 3 * 3 * 2


def test_a_config_without_protocols_has_one_that_is_its_decoding():
    base = cfg.read_config_file(REPO_ROOT / "config" / "demo.yaml")
    del base["evaluation"]["protocols"]
    resolved = cfg.validate_config(base, source="demo without protocols")
    assert list(resolved["evaluation"]["protocols"]) == [cfg.DEFAULT_PROTOCOL]
    assert cfg.resolved_decoding(resolved, "add_test", protocol="main") == resolved["evaluation"]["decoding"]


def test_per_benchmark_decoding_overrides_only_its_benchmark():
    base = _scoped_demo()
    base["evaluation"]["per_benchmark"] = {"add_test": {"max_new_tokens": 99}}
    resolved = cfg.validate_config(base, source="demo + per_benchmark")
    assert cfg.resolved_decoding(resolved, "add_test", protocol="sample8")["max_new_tokens"] == 99
    assert cfg.resolved_decoding(resolved, "add_more", protocol="greedy")["max_new_tokens"] == 20


def test_a_grader_change_changes_only_the_grade_spec():
    resolved = cfg.load_config([REPO_ROOT / "config" / "demo.yaml"])
    before = (
        cfg.generate_job_spec(resolved, "tiny-qwen2", "base", "add_test", "sample8"),
        cfg.grade_job_spec(resolved, "tiny-qwen2", "base", "add_test", "sample8", "empo-rules"),
    )
    resolved["grading"]["timeout_seconds"] = 9
    after = (
        cfg.generate_job_spec(resolved, "tiny-qwen2", "base", "add_test", "sample8"),
        cfg.grade_job_spec(resolved, "tiny-qwen2", "base", "add_test", "sample8", "empo-rules"),
    )
    assert before[0] == after[0] and before[1] != after[1]
    assert before[1]["grader"]["math_verify"] == "0.9.0" and "sympy" in before[1]["grader"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["models"]["tiny-qwen2"].update(dtyp="float32"), "'models.tiny-qwen2.dtyp'"),
        (lambda c: c["models"]["tiny-qwen2"].update(dtype="float8"), "'models.tiny-qwen2.dtype'"),
        (lambda c: c["evaluation"]["decoding"].update(max_new_tokens="many"), "'evaluation.decoding.max_new_tokens'"),
        (lambda c: c["evaluation"]["benchmarks"].append("gsm8k"), "unknown benchmark 'gsm8k'"),
        (
            lambda c: c["evaluation"]["protocols"]["sample8"].update(benchmarks=["gsm8k"]),
            "'evaluation.protocols.sample8.benchmarks': 'gsm8k' is not in 'evaluation.benchmarks'",
        ),
        (lambda c: c["evaluation"]["protocols"]["greedy"].update(n=4), "'evaluation.protocols.greedy' for model"),
        (
            lambda c: c["evaluation"]["protocols"]["greedy"].update(temprature=0.5),
            "'evaluation.protocols.greedy.temprature'",
        ),
        (lambda c: c["evaluation"].update(graders=["math_verify"]), "'evaluation.graders.0'"),
        (
            lambda c: c["evaluation"].update(graders=["llm-judge"], llm_judge={"engine": "openai"}),
            "'evaluation.llm_judge.endpoint': required",
        ),
        (lambda c: c["evaluation"]["benchmarks"].append("add_train"), "has role 'train'"),
        (lambda c: c["models"]["tiny-qwen2"].update(methods=["empo_typo"]), "unknown method 'empo_typo'"),
        (lambda c: c["models"]["tiny-qwen2"]["source"].update(corpus="nowhere"), "'models.tiny-qwen2.source.corpus'"),
        (lambda c: c["datasets"]["add_test"]["source"].pop("path"), "'datasets.add_test.source'"),
        (lambda c: c.update(mlfow={}), "unknown key 'mlfow'"),
        (lambda c: c["models"]["tiny-qwen2"].update(published={"base": {"nope": 1.0}}), "unknown benchmark 'nope'"),
        (lambda c: c["training"].update(dataset="add_test"), "has role 'benchmark', not 'train'"),
        (
            lambda c: c["training"]["defaults"]["validation"].update(dataset="add_train"),
            "validation.dataset 'add_train' is not a dataset with role 'validation' or 'benchmark'",
        ),
        (lambda c: c["training"]["defaults"]["validation"].pop("samples"), "'training.defaults.validation'"),
        (lambda c: c["training"]["methods"]["empo"].update(backend="verl"), "validation is scored by the TRL backend"),
        (lambda c: c["training"]["methods"]["empo"].update(entropy_filter=[0.9, 0.3]), "low 0.9 > high 0.3"),
        (lambda c: c["training"]["methods"]["empo"].update(reward="entropy"), "'training.methods.empo.reward'"),
        (lambda c: c["training"]["methods"].update(base={"reward": "empo"}), "'training.methods'"),
        (lambda c: c["training"]["defaults"].update(mini_batch_prompts=3), "multiple of mini_batch_prompts"),
        (
            # before any job: a failing model job would have had its outputs deleted first
            lambda c: c["models"]["tiny-qwen2"].update(source={"kind": "local", "path": "no/such/model"}),
            "'models.tiny-qwen2.source.path': model directory not found: no/such/model",
        ),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, mutate, expected):
    data = copy.deepcopy(_demo())
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(cfg.ConfigError) as error:
        cfg.load_config([path])
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(cfg.ConfigError, match="not found: .*absent.yaml"):
        cfg.load_config([tmp_path / "absent.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed\n")
    with pytest.raises(cfg.ConfigError, match=r"broken.yaml:2:1: not valid YAML"):  # file:line:column
        cfg.load_config([broken])


def test_later_files_override_earlier_ones(tmp_path):
    override = _write(tmp_path, {"evaluation": {"decoding": {"max_new_tokens": 7}}}, "override.yaml")
    merged = cfg.load_config([REPO_ROOT / "config" / "demo.yaml", override])
    assert merged["evaluation"]["decoding"]["max_new_tokens"] == 7
    assert merged["evaluation"]["decoding"]["temperature"] == 0.0


def test_job_specs_are_canonical_json():
    resolved = cfg.load_config([REPO_ROOT / "config" / "demo.yaml"])
    spec = cfg.generate_job_spec(resolved, "tiny-qwen2", "base", "add_test", "sample8")
    text = cfg.to_json(spec)
    assert json.loads(text) == spec
    assert text == cfg.to_json(json.loads(text))  # stable: an unchanged spec never triggers a rerun
    assert spec["decoding"]["n"] == 8 and spec["gpus"] == 0
    train = cfg.train_job_spec(resolved, "tiny-qwen2", "empo")
    assert train["dataset"] == "add_train" and train["trainer"]["num_generations"] == 8
    assert train["trainer"]["validation"] == {"dataset": "add_val", "every_steps": 5, "samples": 4}
    paper = cfg.load_config([REPO_ROOT / "config" / "config.yaml"])
    assert "validation" not in cfg.train_job_spec(paper, *cfg.train_targets(paper)[0])["trainer"]  # off: absent


def test_spec_files_are_named_by_their_content(tmp_path):
    """Same spec, same path (no rerun); changed spec, new path (Snakemake reruns the job); an
    edited file is refused rather than run with settings its name does not show."""
    spec = {"model": "m", "decoding": {"n": 4, "temperature": 0.6}}
    path = cfg.write_spec_file(spec, tmp_path / "specs", "generate")
    assert Path(path).name.startswith("generate-") and cfg.read_spec(path) == spec
    assert cfg.write_spec_file(json.loads(json.dumps(spec)), tmp_path / "specs", "generate") == path
    changed = cfg.write_spec_file({**spec, "decoding": {"n": 8, "temperature": 0.6}}, tmp_path / "specs", "generate")
    assert changed != path and cfg.read_spec(path) == spec  # the old file is untouched
    assert cfg.read_spec(cfg.to_json(spec)) == spec  # inline JSON, for commands typed by hand
    Path(path).write_text(cfg.to_json({**spec, "model": "other"}))
    with pytest.raises(SystemExit, match="changed after the workflow wrote it"):
        cfg.read_spec(path)
    assert cfg.write_spec_file(spec, tmp_path / "specs", "generate") == path  # rewritten on replanning
    assert cfg.read_spec(path) == spec
    with pytest.raises(SystemExit, match="does not exist"):
        cfg.read_spec(str(tmp_path / "specs" / "missing.json"))


def test_report_spec_lists_published_rows_that_are_not_run():
    paper = cfg.load_config([REPO_ROOT / "config" / "config.yaml"])
    spec = cfg.report_spec(paper)
    measured = {(r["model"], r["method"]) for r in spec["rows"]}
    assert ("qwen2.5-math-1.5b", "base") in measured
    assert spec["rows"][0]["published"]["math500"] == 66.4
    assert all((r["model"], r["method"]) not in measured for r in spec["published_only"])


def test_local_data_overlay_switches_every_paper_dataset_to_files(shared_data, tmp_path):
    merged = cfg.load_config([REPO_ROOT / "config" / "config.yaml", REPO_ROOT / "config" / "local-data.yaml"])
    for name, dataset in merged["datasets"].items():
        assert dataset["source"]["kind"] == "file" and dataset["format"] == "verl", name
        assert (REPO_ROOT / dataset["source"]["path"]).is_file(), name


def test_grader_names_agree_across_schema_config_and_grading():
    from pipelines import grading

    assert cfg.grader_names() == ["math-verify", "empo-rules", "llm-judge", "choice-letter"]
    assert tuple(grading.RULES) == cfg.RULE_GRADERS == tuple(grading.ANSWER_EXTRACTORS)
    assert set(cfg.grader_names()) - set(cfg.RULE_GRADERS) == {"llm-judge"}
