"""Validated configuration and the per-job specs derived from it.

The JSON schema in `workflow/schemas/config.schema.yaml` is the single source of keys, types,
defaults and their documentation. This module validates a config against it (errors name the
key and the file), fills the defaults, checks cross-references (a benchmark that is not a
dataset, ...), and resolves what one job needs into a plain JSON-able "spec" dict. The
Snakefile writes that spec to a file named by its content (`write_spec_file`) and passes the
path to `python -m pipelines.<stage>`, so a stage never re-reads the config, the printed
commands stay short, and Snakemake reruns a job whose spec changed (params are a rerun
trigger, and a changed spec is a new file name).

Import cost matters: the Snakefile imports this on every parse (dry-runs must stay fast),
so only yaml and jsonschema are imported here.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

#: Methods that need no training stage. Trained methods come with a training backend.
UNTRAINED_METHOD = "base"
#: The one protocol of a config that names none: evaluation.decoding as it stands.
DEFAULT_PROTOCOL = "main"
#: Graders that need no model (CPU jobs; pipelines.grading.RULES); the others run as judge jobs.
#: Every grader name is in the schema's `evaluation.graders` enum (tests keep the three in step).
RULE_GRADERS = ("math-verify", "empo-rules", "choice-letter")
#: Graders that are the authors' own chain for a track: llm-judge (maths: rules, then xVerify),
#: choice-letter (MMLU-Pro, GPQA). With one of them in the table, no grader difference is listed.
AUTHORS_GRADERS = {"llm-judge", "choice-letter"}
#: Bootstrap of every interval (grade jobs and the table's paired differences): resamples, seed.
BOOTSTRAP = {"samples": 2000, "seed": 0}


class ConfigError(ValueError):
    """A configuration problem, with the file and the dotted key in the message."""


@functools.cache
def grader_names() -> list[str]:
    """Every grader the schema accepts (`evaluation.graders`), e.g. for wildcard constraints."""
    return list(load_schema()["properties"]["evaluation"]["properties"]["graders"]["items"]["enum"])


def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _defaults_filling_validator() -> type:
    """A Draft 2020-12 validator that fills `default`s while it validates.

    A dict default is a per-key default: a partial user object (say `decoding: {n: 4}`)
    keeps its keys and gets the missing ones from the default.
    """
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def fill_then_validate(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" not in subschema:
                    continue
                default = subschema["default"]
                if name not in instance:
                    instance[name] = copy.deepcopy(default)
                elif isinstance(default, dict) and isinstance(instance[name], dict):
                    for key, value in default.items():
                        instance[name].setdefault(key, copy.deepcopy(value))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": fill_then_validate})


def _dotted(path: Sequence[Any]) -> str:
    return ".".join(str(part) for part in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line per schema error, naming the offending key rather than its parent."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed)
        if unknown and error.schema.get("additionalProperties") is False:
            keys = ", ".join(f"'{_dotted([*error.absolute_path, key])}'" for key in unknown)
            known = ", ".join(sorted(allowed))
            return f"unknown key {keys} (allowed here: {known})"
    if error.validator == "required":
        return f"'{_dotted(error.absolute_path)}': {error.message}"
    return f"'{_dotted(error.absolute_path)}': {error.message}"


def merge_configs(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `update` into a copy of `base` (what Snakemake does with several config files)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _key_node(node: Any, dotted: str) -> Any:
    """The YAML node of a dotted key (names may hold dots: the longest matching key wins)."""
    while dotted:
        if isinstance(node, yaml.MappingNode):
            keys = [(k.value, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
        elif isinstance(node, yaml.SequenceNode):
            keys = [(str(i), v) for i, v in enumerate(node.value)]
        else:
            return None
        matches = [(key, value) for key, value in keys if dotted == key or dotted.startswith(key + ".")]
        if not matches:
            return None
        key, node = max(matches, key=lambda match: len(match[0]))
        dotted = dotted[len(key) + 1 :]
    return node


def key_location(files: Sequence[str | Path], dotted: str) -> str | None:
    """`file:line:column` where a dotted key (or its nearest parent) is set: the last file
    that sets it, since later config files override earlier ones."""
    best = None
    for file in files:
        try:
            root = yaml.compose(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        parts = dotted.split(".")
        for length in range(len(parts), 0, -1):  # the key itself, else its nearest parent
            node = _key_node(root, ".".join(parts[:length]))
            if node is not None:
                if best is None or length >= best[0]:
                    best = (length, f"{file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}")
                break
    return best[1] if best else None


_QUOTED_KEY = re.compile(r"'([^' ]+)'")


def _with_location(line: str, files: Sequence[str | Path]) -> str:
    match = _QUOTED_KEY.search(line)
    location = key_location(files, match.group(1)) if match and files else None
    return f"{line} [{location}]" if location else line


def validate_config(config: dict[str, Any], source: str, files: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Return a validated copy of `config` with defaults filled; raise ConfigError otherwise.

    `source` names where the config came from (file names) for the error message; with the
    config `files`, each error also says where its key is set (`file:line:column`).
    """
    if not isinstance(config, dict) or not config:
        raise ConfigError(f"{source}: the configuration is empty or not a mapping")
    resolved = copy.deepcopy(config)
    validator = _defaults_filling_validator()(load_schema())
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {_with_location(_describe(error), files)}" for error in errors[:20])
        raise ConfigError(f"invalid configuration in {source}:\n{lines}")
    resolved["evaluation"].setdefault("protocols", {DEFAULT_PROTOCOL: {}})
    problems = list(_cross_reference_problems(resolved))
    if problems:
        lines = "\n".join(f"  - {_with_location(problem, files)}" for problem in problems)
        raise ConfigError(f"invalid configuration in {source}:\n{lines}")
    return resolved


def dataset_files(path: str) -> list[Path]:
    """The files of a dataset's `source.path`: the file, or every match of a glob, sorted."""
    import glob

    if glob.has_magic(path):
        return [Path(p) for p in sorted(glob.glob(path)) if Path(p).is_file()]
    return [Path(path)] if Path(path).is_file() else []


def used_datasets(config: dict[str, Any]) -> list[str]:
    """Datasets some job reads: benchmarks, the training set, demo corpora, validation sets."""
    names = list(config["evaluation"]["benchmarks"])
    if config["training"]["methods"] and config["training"].get("dataset"):
        names.append(config["training"]["dataset"])
    names += [m["source"]["corpus"] for m in config["models"].values() if m["source"]["kind"] == "demo"]
    names += [name for model in config["models"] for name in resolved_verl(config, model)["validation_benchmarks"]]
    names += [
        name
        for model, method in train_targets(config)
        if (name := trl_validation_dataset(config, model, method)) is not None
    ]
    return list(dict.fromkeys(name for name in names if name in config["datasets"]))


def _cross_reference_problems(config: dict[str, Any]) -> Iterator[str]:
    """Checks the schema cannot express: names that must refer to other entries."""
    datasets = config["datasets"]
    benchmarks = config["evaluation"]["benchmarks"]
    for position, benchmark in enumerate(benchmarks):
        if benchmark not in datasets:
            yield (
                f"'evaluation.benchmarks.{position}': unknown benchmark '{benchmark}' "
                f"(not a key of 'datasets': {', '.join(sorted(datasets))})"
            )
        elif datasets[benchmark]["role"] != "benchmark":
            role = datasets[benchmark]["role"]
            yield f"'evaluation.benchmarks.{position}': dataset '{benchmark}' has role '{role}', not 'benchmark'"
    for benchmark in config["evaluation"]["per_benchmark"]:
        if benchmark not in benchmarks:
            yield f"'evaluation.per_benchmark.{benchmark}': '{benchmark}' is not in 'evaluation.benchmarks'"
    for name, protocol in config["evaluation"]["protocols"].items():
        for benchmark in protocol.get("benchmarks", []):
            if benchmark not in benchmarks:
                yield f"'evaluation.protocols.{name}.benchmarks': '{benchmark}' is not in 'evaluation.benchmarks'"
    for model in config["models"]:
        for benchmark, protocol in protocol_targets(config):
            decoding = resolved_decoding(config, benchmark, model, protocol)
            if decoding["temperature"] == 0 and decoding["n"] != 1:
                yield (
                    f"'evaluation.protocols.{protocol}' for model '{model}', benchmark '{benchmark}': greedy "
                    f"decoding (temperature 0) gives identical samples; set n: 1 or a temperature > 0"
                )
    judge = config["evaluation"]["llm_judge"]
    if "llm-judge" in config["evaluation"]["graders"] and judge["engine"] == "openai" and not judge["endpoint"]:
        yield "'evaluation.llm_judge.endpoint': required when the llm-judge engine is 'openai'"
    if "choice-letter" in config["evaluation"]["graders"]:
        for benchmark in benchmarks:
            spec = datasets.get(benchmark)
            if spec is not None and spec["format"] == "columns" and "options" not in spec["columns"]:
                yield (
                    f"'datasets.{benchmark}.columns.options': the choice-letter grader grades multiple-choice "
                    f"benchmarks; '{benchmark}' has no options column"
                )
    for name, spec in datasets.items():
        if spec.get("template") is not None and "{question}" not in spec["template"]:
            yield f"'datasets.{name}.template': has no {{question}} placeholder"
    training = config["training"]
    if training["methods"]:
        train_set = training.get("dataset")
        if train_set is None:
            yield "'training.dataset': required when 'training.methods' is set"
        elif train_set not in datasets:
            yield f"'training.dataset': unknown dataset '{train_set}'"
        elif datasets[train_set]["role"] != "train":
            yield f"'training.dataset': dataset '{train_set}' has role '{datasets[train_set]['role']}', not 'train'"
    for name, model in config["models"].items():
        for key in ("backend", "reward"):
            if key in model["trainer"]:
                yield f"'models.{name}.trainer.{key}': set per method (training.methods), not per model"
    # each method as configured, and again for every model whose own trainer keys change it
    for method, model in [(m, None) for m in training["methods"]] + [
        (m, name)
        for name, spec in config["models"].items()
        if spec["trainer"]
        for m in spec["methods"]
        if m in training["methods"]
    ]:
        settings = resolved_trainer(config, method, model)
        where = f"'training.methods.{method}'" + (f" for model '{model}'" if model else "")
        low_high = settings.get("entropy_filter")
        if low_high is not None and low_high[0] > low_high[1]:
            yield f"{where}: entropy_filter low {low_high[0]} > high {low_high[1]}"
        if settings["prompts_per_step"] % settings["mini_batch_prompts"]:
            yield (
                f"{where}: prompts_per_step ({settings['prompts_per_step']}) must be a "
                f"multiple of mini_batch_prompts ({settings['mini_batch_prompts']})"
            )
        from pipelines.rewards.core import TOKEN_REWARDS  # 0.1 s; only here

        if settings["reward"] in TOKEN_REWARDS and settings["backend"] == "verl":
            if settings["reward"] == "self_certainty":
                yield (
                    f"{where}: reward 'self_certainty' needs each token's log-normaliser, which verl's actor "
                    f"does not return; use backend trl"
                )
            if low_high is not None:
                yield (
                    f"{where}: reward '{settings['reward']}' is scored on verl from its old-policy pass, after "
                    f"sampling, when groups can no longer be evicted: set entropy_filter to null"
                )
        validation = settings.get("validation")
        if validation is not None:
            role = datasets.get(validation["dataset"], {}).get("role")
            if role not in ("validation", "benchmark"):
                yield (
                    f"{where}: validation.dataset '{validation['dataset']}' is not a dataset with role "
                    f"'validation' or 'benchmark'"
                )
            if settings["backend"] != "trl":
                yield (
                    f"{where}: validation is scored by the TRL backend only: set it to null for verl "
                    f"methods (verl validates with 'training.verl.validation_benchmarks')"
                )
        semantic_judge = training["semantic_judge"]
        if (
            settings["equivalence"] == "judge"
            and semantic_judge["engine"] == "openai"
            and not semantic_judge["endpoint"]
        ):
            yield f"'training.semantic_judge.endpoint': required for {where} (equivalence judge, engine openai)"
    yield from _verl_problems(config)
    for name in used_datasets(config):
        source = config["datasets"][name]["source"]
        if source["kind"] == "file" and not dataset_files(source["path"]):
            yield (
                f"'datasets.{name}.source.path': file not found: {source['path']} (relative paths "
                f"are read from the directory snakemake runs in, {Path.cwd()})"
            )
    for name, model in config["models"].items():
        source = model["source"]
        if source["kind"] == "local" and not Path(source["path"]).is_dir():
            # checked before any job: a model job that failed on it would already have had
            # Snakemake delete the model's outputs (and everything planned from them)
            yield (
                f"'models.{name}.source.path': model directory not found: {source['path']} (relative "
                f"paths are read from the directory snakemake runs in, {Path.cwd()})"
            )
        if source["kind"] == "demo" and source["corpus"] not in datasets:
            yield f"'models.{name}.source.corpus': unknown dataset '{source['corpus']}'"
        for method in model["methods"]:
            if method not in available_methods(config):
                yield (
                    f"'models.{name}.methods': unknown method '{method}' "
                    f"(available: {', '.join(available_methods(config))})"
                )
        for method, scores in model["published"].items():
            for benchmark in scores:
                if benchmark not in datasets:
                    yield f"'models.{name}.published.{method}.{benchmark}': unknown benchmark '{benchmark}'"


@functools.lru_cache(maxsize=8)
def _read_verl_scripts(path: str) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def authors_verl_script(config: dict[str, Any], model: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(the transcription file, this model's script entry, every reason by key) for a model whose
    `authors.verl_script` names one of the authors' scripts in `reference.authors.verl_scripts`."""
    authors = config["reference"]["authors"]
    own = config["models"][model]["authors"]
    transcription = _read_verl_scripts(authors["verl_scripts"])
    reasons = {**authors.get("verl_script_reasons", {}), **own.get("verl_script_reasons", {})}
    return transcription, transcription["scripts"][own["verl_script"]], reasons


def _authors_script_problems(config: dict[str, Any]) -> Iterator[str]:
    """A named script that is not in the transcription, or a reason for a key it does not set."""
    authors = config["reference"]["authors"]
    for name, model in config["models"].items():
        script = model["authors"].get("verl_script")
        if script is None:
            continue
        where = f"'models.{name}.authors.verl_script'"
        path = authors.get("verl_scripts")
        if not path or not Path(path).is_file():
            yield f"{where}: 'reference.authors.verl_scripts' must name the transcription file ({path!r} not found)"
            continue
        scripts = _read_verl_scripts(path)["scripts"]
        if script not in scripts:
            yield f"{where}: '{script}' is not a script of {path} (one of {', '.join(scripts)})"
            continue
        transcription, entry, reasons = authors_verl_script(config, name)
        known = {"module", *entry["overrides"], *transcription["recipe_config"]["settings"]}
        for key in sorted(set(reasons) - known):
            yield f"'verl_script_reasons.{key}' (model {name}): their script {entry['script']} does not set {key}"


def _verl_problems(config: dict[str, Any]) -> Iterator[str]:
    """What verl would reject only after a job has started on the cluster."""
    yield from _authors_script_problems(config)
    datasets = config["datasets"]
    for name, model in config["models"].items():
        verl = resolved_verl(config, name)
        where_set = f"models.{name}.verl" if "validation_benchmarks" in model["verl"] else "training.verl"
        for position, benchmark in enumerate(verl["validation_benchmarks"]):
            if datasets.get(benchmark, {}).get("role") != "benchmark":
                yield (
                    f"'{where_set}.validation_benchmarks.{position}': '{benchmark}' is not a dataset "
                    f"with role 'benchmark'"
                )
        resources = resolved_resources(config, "train", model=name)
        for method in model["methods"]:
            if method == UNTRAINED_METHOD or method not in config["training"]["methods"]:
                continue
            backend = train_backend(config, method)
            where = f"'models.{name}' (method '{method}', backend {backend})"
            settings = resolved_trainer(config, method, name)
            if settings["save_steps"] > settings["max_steps"]:
                yield f"{where}: save_steps ({settings['save_steps']}) > max_steps ({settings['max_steps']})"
            if backend == "trl" and resources.get("nodes", 1) > 1:
                yield f"{where}: resources.train.nodes is {resources['nodes']}, but the trl backend runs on one node"
            if backend != "verl":
                continue
            if resources["gpus"] < 1:
                yield f"{where}: resources.train.gpus must be >= 1 (verl trains on GPUs only)"
            elif resources["gpus"] % verl["rollout_tensor_parallel"]:
                yield (
                    f"{where}: training.verl.rollout_tensor_parallel ({verl['rollout_tensor_parallel']}) "
                    f"must divide resources.train.gpus ({resources['gpus']})"
                )


def train_backend(config: dict[str, Any], method: str) -> str:
    """Which trainer runs a method: `trl` (one machine) or `verl` (cluster)."""
    return resolved_trainer(config, method)["backend"]


def methods_of_backend(config: dict[str, Any], backend: str) -> list[str]:
    return [method for method in config["training"]["methods"] if train_backend(config, method) == backend]


def available_methods(config: dict[str, Any]) -> list[str]:
    """Methods a model can list: the untrained model and every configured training method."""
    return [UNTRAINED_METHOD, *config["training"]["methods"]]


def load_config(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Read, deep-merge (later files win) and validate config files."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = merge_configs(merged, read_config_file(path))
    return validate_config(merged, source=", ".join(map(str, paths)), files=paths)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """One config file as a mapping; errors name the file, and for YAML errors line and column."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 (byte offset {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        raise ConfigError(f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


# ----------------------------------------------------------------------------------------
# Resolution: what one job needs, as plain JSON-able dicts.


def resolved_decoding(
    config: dict[str, Any], benchmark: str, model: str | None = None, protocol: str | None = None
) -> dict[str, Any]:
    """evaluation.decoding, then the benchmark's per_benchmark keys, then the model's decoding,
    then the protocol's keys (a protocol names its sampling, so it has the last word)."""
    evaluation = config["evaluation"]
    model_keys = config["models"][model]["decoding"] if model is not None else {}
    protocol_keys = (
        {key: value for key, value in evaluation["protocols"].get(protocol, {}).items() if key != "benchmarks"}
        if protocol is not None
        else {}
    )
    return {**evaluation["decoding"], **evaluation["per_benchmark"].get(benchmark, {}), **model_keys, **protocol_keys}


def protocols_of(config: dict[str, Any], benchmark: str) -> list[str]:
    """The protocols a benchmark is evaluated under, in config order."""
    return [
        name
        for name, protocol in config["evaluation"]["protocols"].items()
        if benchmark in protocol.get("benchmarks", config["evaluation"]["benchmarks"])
    ]


def protocol_targets(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (benchmark, protocol) pair, benchmarks in table order."""
    return [
        (benchmark, protocol)
        for benchmark in config["evaluation"]["benchmarks"]
        for protocol in protocols_of(config, benchmark)
    ]


def resolved_prompt(config: dict[str, Any], model: str) -> dict[str, Any]:
    return {**config["evaluation"]["prompt"], **config["models"][model].get("prompt", {})}


def resolved_resources(
    config: dict[str, Any], stage: str, model: str | None = None, dataset: str | None = None
) -> dict[str, Any]:
    resources = dict(config["resources"][stage])
    if model is not None:
        resources.update(config["models"][model]["resources"].get(stage, {}))
    if dataset is not None:
        resources.update(config["datasets"][dataset].get("resources", {}))
    return resources


def resolved_trainer(config: dict[str, Any], method: str, model: str | None = None) -> dict[str, Any]:
    """training.defaults, then the method's keys, then the model's own `trainer` keys (the
    authors ran each model with its own script; `backend` and `reward` stay per method)."""
    training = config["training"]
    model_keys = config["models"][model]["trainer"] if model is not None else {}
    return {**training["defaults"], **training["methods"][method], **model_keys}


def resolved_verl(config: dict[str, Any], model: str) -> dict[str, Any]:
    """training.verl with the model's own `verl` keys over it."""
    return {**config["training"]["verl"], **config["models"][model]["verl"]}


def cluster_setting(config: dict[str, Any], key: str) -> str | None:
    """A SLURM setting: EMPO_SLURM_<KEY> from the environment, else the config's cluster section."""
    import os

    return os.environ.get(f"EMPO_SLURM_{key.upper()}") or config["cluster"].get(key)


def generate_targets(config: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Every (model, method, benchmark, protocol) to generate, in table order."""
    return [
        (model, method, benchmark, protocol)
        for model, spec in config["models"].items()
        for method in spec["methods"]
        for benchmark, protocol in protocol_targets(config)
    ]


def grade_targets(config: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Every (model, method, benchmark, protocol, grader) to grade, in table order."""
    return [(*target, grader) for target in generate_targets(config) for grader in config["evaluation"]["graders"]]


def data_job_spec(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A data job's settings; for a local file source also each file's content digest, so that
    an edited file changes the spec and reruns the data job and what depends on it (Snakemake
    would otherwise see no change: the file is no input of the rule)."""
    spec = {"name": dataset, **copy.deepcopy(config["datasets"][dataset])}
    if spec["source"]["kind"] == "file":
        from pipelines.provenance import file_sha256

        spec["source_sha256"] = {str(path): file_sha256(path) for path in dataset_files(spec["source"]["path"])}
    return spec


def model_job_spec(config: dict[str, Any], model: str) -> dict[str, Any]:
    spec = config["models"][model]
    return {
        "name": model,
        "source": copy.deepcopy(spec["source"]),
        "dtype": spec["dtype"],
        "system_prompt": resolved_prompt(config, model)["system_prompt"],
    }


def train_job_spec(config: dict[str, Any], model: str, method: str) -> dict[str, Any]:
    trainer = resolved_trainer(config, method, model)
    resources = resolved_resources(config, "train", model=model)
    spec = {
        "model": model,
        "method": method,
        "dataset": config["training"]["dataset"],
        "trainer": trainer,
        "gpus": resources["gpus"],
        "grading": dict(config["grading"]),
    }
    if trainer.get("validation") is None:  # off, the default: left out, so specs from before the key stay equal
        trainer.pop("validation", None)
    if trainer["equivalence"] == "judge":  # only judge-based methods retrain when the judge changes
        spec["semantic_judge"] = dict(config["training"]["semantic_judge"])
    elif trainer["equivalence"] == "math":  # the default: left out, so specs (and fingerprints) from before stay equal
        del trainer["equivalence"]
    if trainer["backend"] == "verl":
        # convert_step only matters to the conversion job; changing it must not retrain
        spec["verl"] = {
            key: copy.deepcopy(value) for key, value in resolved_verl(config, model).items() if key != "convert_step"
        }
        spec["nodes"] = resources.get("nodes", 1)
        spec["cpus"] = resources["cpus"]
    return spec


def trl_validation_dataset(config: dict[str, Any], model: str, method: str) -> str | None:
    """The dataset a TRL training job scores during training (trainer.validation), or None."""
    if method not in config["training"]["methods"]:
        return None
    settings = resolved_trainer(config, method, model)
    validation = settings.get("validation")
    return validation["dataset"] if validation and settings["backend"] == "trl" else None


def curves_spec(config: dict[str, Any], model: str) -> dict[str, Any]:
    """One model's training-curve overlay: its trained methods, where their checkpoints live."""
    return {
        "model": model,
        "methods": [
            {
                "method": method,
                "backend": train_backend(config, method),
                "checkpoints": checkpoint_dir(config, model, method),
            }
            for trained_model, method in train_targets(config)
            if trained_model == model
        ],
    }


def curve_models(config: dict[str, Any]) -> list[str]:
    """Models with at least one trained method (each gets an overlay of its methods' curves)."""
    return list(dict.fromkeys(model for model, _ in train_targets(config)))


def checkpoint_dir(config: dict[str, Any], model: str, method: str) -> str:
    """Where a training job keeps its checkpoints (not a declared output: a killed job resumes)."""
    return f"{config['results_dir']}/train/{model}/{method}"


def convert_job_spec(config: dict[str, Any], model: str, method: str) -> dict[str, Any]:
    """What the conversion of a verl checkpoint depends on: the training spec and the step."""
    return {
        "model": model,
        "method": method,
        "step": resolved_verl(config, model)["convert_step"],
        "train": train_job_spec(config, model, method),
    }


def generate_job_spec(config: dict[str, Any], model: str, method: str, benchmark: str, protocol: str) -> dict[str, Any]:
    """Everything a generation depends on (no grader: grading is its own job)."""
    evaluation = config["evaluation"]
    return {
        "model": model,
        "method": method,
        "benchmark": benchmark,
        "protocol_name": protocol,
        "engine": evaluation["engine"],
        "batch_size": evaluation["batch_size"],
        "dtype": config["models"][model]["dtype"],
        "prompt": resolved_prompt(config, model),
        "decoding": resolved_decoding(config, benchmark, model, protocol),
        "gpus": resolved_resources(config, "generate", model=model)["gpus"],
    }


def grader_spec(config: dict[str, Any], grader: str) -> dict[str, Any]:
    """A grader and every setting and version that moves its verdicts (a version bump or a
    changed setting changes this spec, so Snakemake re-plans the grade jobs, and only them)."""
    from importlib import metadata

    spec: dict[str, Any] = {
        "name": grader,
        "timeout_seconds": config["grading"]["timeout_seconds"],
        "math_verify": metadata.version("math-verify"),
    }
    if grader != "math-verify":
        spec["sympy"] = metadata.version("sympy")
    if grader == "llm-judge":
        spec["judge"] = dict(config["evaluation"]["llm_judge"])
    return spec


def grade_job_spec(
    config: dict[str, Any], model: str, method: str, benchmark: str, protocol: str, grader: str
) -> dict[str, Any]:
    """What one grading job needs: the grader and the metrics it reports."""
    stage = "grade" if grader in RULE_GRADERS else "judge"
    return {
        "model": model,
        "method": method,
        "benchmark": benchmark,
        "protocol_name": protocol,
        "grader": grader_spec(config, grader),
        "pass_at_k": list(config["evaluation"]["pass_at_k"]),
        "workers": resolved_resources(config, stage)["cpus"] if stage == "grade" else config["grading"]["workers"],
        "gpus": resolved_resources(config, stage, model=None)["gpus"],
        "bootstrap": dict(BOOTSTRAP),
    }


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


def _differences(area: str, ours: dict[str, Any], theirs: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"setting": f"{area}.{key}", "ours": _shown(ours.get(key)), "theirs": _shown(value)}
        for key, value in theirs.items()
        if ours.get(key) != value
    ]


def divergences(config: dict[str, Any], model: str, method: str) -> list[dict[str, str]]:
    """Every known difference between how we produce a row and how the authors did, from the
    config's `reference.authors` and `models.<model>.authors` (never written by hand)."""
    authors = config["reference"]["authors"]
    own = config["models"][model]["authors"]
    found: list[dict[str, str]] = []
    theirs_decoding = {**authors.get("decoding", {}), **own.get("decoding", {})}
    benchmarks = config["evaluation"]["benchmarks"]
    headline = next(iter(config["evaluation"]["protocols"]))  # the protocol published numbers sit under
    for key, value in theirs_decoding.items():
        ours = sorted(
            {
                _shown(resolved_decoding(config, b, model, headline).get(key))
                for b in benchmarks
                if headline in protocols_of(config, b)
            }
        )
        if ours != [_shown(value)]:
            found.append({"setting": f"evaluation.decoding.{key}", "ours": " / ".join(ours), "theirs": _shown(value)})
    found += _differences("evaluation.prompt", resolved_prompt(config, model), authors.get("prompt", {}))
    graders = config["evaluation"]["graders"]
    if authors.get("grader") and not set(graders) & AUTHORS_GRADERS:
        found.append(
            {
                "setting": "grader",
                "ours": " and ".join(graders) + " (one block of the table each; llm-judge is their full chain)",
                "theirs": authors["grader"],
            }
        )
    if authors.get("grader") and "llm-judge" in graders:
        judge = config["evaluation"]["llm_judge"]
        found.append(
            {
                "setting": "llm-judge",
                "ours": f"{judge['model']}, "
                + (f"temperature {judge['temperature']} (seeded)" if judge.get("temperature") else "greedy")
                + f", up to {judge['max_new_tokens']} tokens, shown the benchmark question",
                "theirs": "xVerify-8B-SFT (not released) at temperature 0.1, up to 4096 tokens, shown the question "
                "only where their data has one (AIME24)",
            }
        )
    if method != UNTRAINED_METHOD and method in config["training"]["methods"]:
        source = config["models"][model]["source"]
        if own.get("start_model") and source.get("hub_id") != own["start_model"]:
            found.append(
                {
                    "setting": "start model",
                    "ours": _shown(source.get("hub_id") or source.get("path")),
                    "theirs": own["start_model"],
                }
            )
        found += _differences(
            "training",
            resolved_trainer(config, method, model),
            {**authors.get("trainer", {}), **own.get("trainer", {})},
        )
        if train_backend(config, method) == "verl":
            found += _differences(
                "training.verl", resolved_verl(config, model), {**authors.get("verl", {}), **own.get("verl", {})}
            )
            if own.get("verl_script"):
                found += _verl_script_divergences(config, model)
        found += [{"setting": "note", "ours": "", "theirs": note} for note in own.get("training_notes", [])]
    found += [{"setting": "note", "ours": "", "theirs": note} for note in own.get("notes", [])]
    return found


def _verl_script_divergences(config: dict[str, Any], model: str) -> list[dict[str, str]]:
    """Each key of the authors' verl script our command differs on, with its reason (the test
    tests/test_paper_config.py keeps these complete: one reason per differing key, no other)."""
    transcription, entry, reasons = authors_verl_script(config, model)
    recipe = transcription["recipe_config"]
    found = []
    for key, reason in reasons.items():
        if key == "module":
            theirs = f"python -m {entry['module']} ({entry['script']})"
        elif key in entry["overrides"]:
            item = entry["overrides"][key]
            theirs = f"{key}={item['value']} ({entry['script']}:{item['line']})"
        else:
            item = recipe["settings"][key]
            theirs = f"{key}: {item['value']} ({recipe['file']}:{item['line']})"
        found.append({"setting": f"verl script, {key}", "ours": "", "theirs": theirs, "reason": reason})
    return found


def report_spec(config: dict[str, Any]) -> dict[str, Any]:
    """What the table needs: rows, columns, published numbers, their citation, and per row
    every known difference from the authors' settings."""

    def label(model: str, method: str) -> dict[str, str]:
        display = config["models"][model]["display"]
        return {
            "label_model": display.get("model", model),
            "label_method": display.get("base", method) if method == UNTRAINED_METHOD else method,
        }

    evaluation = config["evaluation"]
    return {
        "benchmarks": list(evaluation["benchmarks"]),
        "protocols": {
            name: [b for b in evaluation["benchmarks"] if name in protocols_of(config, b)]
            for name in evaluation["protocols"]
        },
        "graders": list(evaluation["graders"]),
        "bootstrap": dict(BOOTSTRAP),
        "rows": [
            {
                "model": model,
                "method": method,
                **label(model, method),
                "published": spec["published"].get(method, {}),
                # trained rows are compared with their model's untrained row, paired per question
                "baseline_method": UNTRAINED_METHOD
                if method != UNTRAINED_METHOD and UNTRAINED_METHOD in spec["methods"]
                else None,
                "divergences": divergences(config, model, method),
            }
            for model, spec in config["models"].items()
            for method in spec["methods"]
        ],
        "published_only": [
            {"model": model, "method": method, "published": scores}
            for model, spec in config["models"].items()
            for method, scores in spec["published"].items()
            if method not in spec["methods"]
        ],
        "reference": {key: value for key, value in config["reference"].items() if key != "authors"},
    }


def train_targets(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (model, method) that trains, in table order."""
    return [
        (model, method)
        for model, spec in config["models"].items()
        for method in spec["methods"]
        if method != UNTRAINED_METHOD
    ]


def plan_spec(config: dict[str, Any]) -> dict[str, Any]:
    """What plan.md shows before any GPU-hour is spent: every training job's settings and
    resources, every evaluation job's protocol, and the throughput the estimates assume."""
    return {
        "results_dir": config["results_dir"],
        "tokens_per_gpu_second": config["cluster"]["estimate_tokens_per_gpu_second"],
        "train": [
            {
                **train_job_spec(config, model, method),
                "resources": resolved_resources(config, "train", model=model),
                "start_model": config["models"][model]["source"],
            }
            for model, method in train_targets(config)
        ],
        "generate": [
            {
                **generate_job_spec(config, model, method, benchmark, protocol),
                "data_source": config["datasets"][benchmark]["source"],
                "data_limit": config["datasets"][benchmark].get("limit"),
            }
            for model, method, benchmark, protocol in generate_targets(config)
        ],
        "graders": [grader_spec(config, grader) for grader in config["evaluation"]["graders"]],
        "generate_per": config["evaluation"]["generate_per"],
        "engine_load_minutes": config["cluster"]["estimate_engine_load_minutes"],
    }


def tracking_spec(config: dict[str, Any]) -> dict[str, Any]:
    """The mlflow section plus where the workflow's parent-run record lives."""
    return {**config["mlflow"], "results_dir": config["results_dir"]}


def to_json(spec: dict[str, Any]) -> str:
    """Canonical JSON (sorted keys) so an unchanged spec never looks changed to Snakemake."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


#: `<stage>-<first 16 hex digits of the sha256 of the file's text>.json`
SPEC_FILE_NAME = re.compile(r"^[a-z_]+-(?P<digest>[0-9a-f]{16})\.json$")


def write_spec_file(spec: dict[str, Any], directory: str | Path, stage: str) -> str:
    """Write a job's spec to `<directory>/<stage>-<digest>.json` and return that path.

    Named by its content: an unchanged spec keeps its path (no rerun), a changed one gets a new
    path (Snakemake reruns the job), and concurrent writers of one name write the same text.
    `read_spec` refuses a file whose text no longer matches its name.
    """
    text = to_json(spec)
    path = Path(directory) / f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
    return str(path)


def read_spec(value: str) -> dict[str, Any]:
    """A spec given on a command line: inline JSON (`{...}`) or a file from `write_spec_file`.

    A content-named file whose text was edited after it was written is refused: the job would
    otherwise run settings that Snakemake's record and the file's name do not show.
    """
    if value.lstrip().startswith("{"):
        return json.loads(value)
    path = Path(value)
    if not path.is_file():
        raise SystemExit(f"spec file {path} does not exist (the workflow writes it when it plans the job)")
    text = path.read_text()
    named = SPEC_FILE_NAME.match(path.name)
    if named and hashlib.sha256(text.encode()).hexdigest()[:16] != named["digest"]:
        raise SystemExit(
            f"spec file {path} was changed after the workflow wrote it (its content no "
            f"longer matches its name); delete it and rerun snakemake to write it again"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SystemExit(f"spec file {path} is not valid JSON: {error}") from None


# ----------------------------------------------------------------------------------------
# Documentation: the README's configuration reference is generated from the schema.


def _schema_rows(node: dict[str, Any], path: str, schema: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    for ref in [node.get("$ref")] + [part.get("$ref") for part in node.get("allOf", [])]:
        if ref:
            target = schema
            for part in ref.removeprefix("#/").split("/"):  # e.g. #/$defs/decoding/properties/n
                target = target[part]
            node = {
                **target,
                **{k: v for k, v in node.items() if k not in ("$ref", "allOf")},
                "properties": target.get("properties", {}),
            }
    kind = node.get("enum") and " \\| ".join(map(str, node["enum"])) or node.get("type", "object")
    if isinstance(kind, list):
        kind = " \\| ".join(map(str, kind))
    default = json.dumps(node["default"]) if "default" in node else ""
    description = " ".join(str(node.get("description", "")).split())
    if path:
        yield path, str(kind), default, description
    for name, child in node.get("properties", {}).items():
        yield from _schema_rows(child, f"{path}.{name}" if path else name, schema)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _schema_rows(extra, f"{path}.<name>", schema)


def schema_reference() -> str:
    """Markdown table of every config key: type, default, meaning."""
    schema = load_schema()
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for path, kind, default, description in _schema_rows(schema, "", schema):
        lines.append(f"| `{path}` | {kind} | {f'`{default}`' if default else ''} | {description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--reference"]:
        print(schema_reference())
    else:
        files = sys.argv[1:] or ["config/config.yaml"]
        try:
            load_config(files)  # several files: merged in order, as snakemake --configfile does
        except ConfigError as error:
            sys.exit(str(error))
        print(f"{', '.join(files)}: valid")
