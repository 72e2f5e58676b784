"""Pins that change numbers agree everywhere; the demo's shipped data is what the generator writes."""

from __future__ import annotations

import re
import tomllib

import yaml

from pipelines import synthetic
from tests.conftest import REPO_ROOT

NUMBER_CHANGING = (
    "math-verify",
    "transformers",
    "torch",
    "vllm",
    "tokenizers",
    "trl",
    "mlflow",
    "datasets",
    "huggingface-hub",
    "snakemake",
)


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^;\s]+)", requirement.strip())
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def test_environment_files_pin_the_same_versions_as_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared: dict[str, str] = _pins(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        for name, version in _pins(extra).items():
            assert declared.setdefault(name, version) == version, f"{name} pinned twice differently"
    for env_file in sorted((REPO_ROOT / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        for name, version in _pins(pip).items():
            assert name in declared, f"{env_file.name}: {name} is not declared in pyproject.toml"
            assert declared[name] == version, f"{env_file.name}: {name}=={version}, pyproject {declared[name]}"
    for name in ("math-verify", "transformers", "torch", "vllm"):
        assert name in declared, f"{name} must be pinned exactly"


def test_every_rule_names_a_conda_environment_that_exists_and_a_log():
    for rules in (REPO_ROOT / "workflow" / "rules").glob("*.smk"):
        text = rules.read_text()
        for name in re.findall(r'"\.\./\.\./(envs/[^"]+)"', text):
            assert (REPO_ROOT / name).is_file(), f"{rules.name} names missing {name}"
        for rule_body in re.split(r"\nrule ", text)[1:]:
            assert "\n    log:" in rule_body, f"{rules.name}: rule {rule_body.split(':')[0]} has no log"


def test_shipped_demo_data_equals_the_generator_output(tmp_path):
    synthetic.write_demo_files(tmp_path)
    for name in synthetic.demo_files():
        assert (tmp_path / name).read_text() == (REPO_ROOT / "config" / "demo_data" / name).read_text(), (
            f"config/demo_data/{name} differs from `python -m pipelines.synthetic config/demo_data`"
        )


def test_synthetic_answers_are_right():
    for row in synthetic.arithmetic_problems(200, seed=3, max_operand=30):
        question, answer = row["problem"], row["answer"]
        numbers = [int(n) for n in re.findall(r"\d+", question)]
        if "+" in question:
            assert int(answer) == numbers[0] + numbers[1]
        elif "times" in question:
            assert int(answer) == numbers[0] * numbers[1]
        elif "-" in question:
            assert int(answer) == numbers[0] - numbers[1]
        else:
            from fractions import Fraction

            value = Fraction(numbers[0], numbers[1])
            expected = (
                str(value.numerator)
                if value.denominator == 1
                else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
            )
            assert answer == expected


def test_verl_test_environment_matches_the_cluster_environment():
    """`make test-verl` tests the verl, TransferQueue, hydra and grader versions the cluster runs."""
    env = yaml.safe_load((REPO_ROOT / "envs" / "verl.yaml").read_text())
    cluster = _pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d))
    lines = (REPO_ROOT / "envs" / "verl-cpu-test.txt").read_text().splitlines()
    cpu = _pins([line for line in lines if line and not line.startswith("#")])
    for name in ("verl", "transferqueue", "hydra-core", "math-verify", "mlflow"):
        assert cpu[name] == cluster[name], f"{name}: test env {cpu[name]}, cluster env {cluster[name]}"
    # verl[vllm]==0.9.1 pins transformers==5.9.0 on the cluster; the CPU tests use the same
    assert cpu["transformers"] == "5.9.0"


def test_the_demo_slices_are_disjoint_and_cover_every_addition_problem():
    """Warm start, RL prompts, validation and test never share a question: a gain on the test
    slice is on problems neither the warm start nor RL saw."""
    files = synthetic.demo_files()
    slices = {
        name: {row["problem"] for row in files[name] if row["answer"]}
        for name in ("add_warmup.jsonl", "add_train.jsonl", "add_val.jsonl", "add_test.jsonl")
    }
    assert [len(rows) for rows in slices.values()] == [244, 80, 80, 80]
    names = list(slices)
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            assert not slices[first] & slices[second], (first, second)
    assert len(set().union(*slices.values())) == 22 * 22
    for row in (
        row
        for rows in files.values()
        for row in rows
        if row["problem"].startswith("What is ") and "+" in row["problem"]
    ):
        a, b = (int(x) for x in row["problem"][len("What is ") : -1].split(" + "))
        assert row["answer"] == str(a + b)
