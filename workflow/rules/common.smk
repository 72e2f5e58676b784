# Shared by every rules file: the validated config, output paths and input functions.
# Kept light (yaml + jsonschema only) so that a dry-run of the full paper table stays fast.

import os
import re

from pipelines import config as cfg
from pipelines.cli import TRACKING_SPEC_ENV

CONFIG = cfg.validate_config(
    config,
    source=", ".join(map(str, workflow.configfiles)) or "the --config overrides",
    files=workflow.configfiles,
)
RESULTS = CONFIG["results_dir"]
# Job specs are files named by their content (short commands; a changed spec is a new name,
# so Snakemake reruns the job). Written when a job is planned, dry runs included.
SPECS = f"{RESULTS}/specs"
TRACKING_SPEC = cfg.write_spec_file(cfg.tracking_spec(CONFIG), SPECS, "tracking")
# Every job finds it here (pipelines.cli), whether Snakemake starts it locally or on a SLURM node
# (where Snakemake reads this file again): not a rule parameter, so that a change to MLflow
# settings alone reruns no job.
os.environ[TRACKING_SPEC_ENV] = TRACKING_SPEC


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    method=r"[a-z0-9_]+",
    benchmark=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    protocol=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    grader="|".join(re.escape(name) for name in cfg.grader_names()),


def spec_file(stage, make_spec):
    """A params function: the job's spec (`make_spec(wildcards)`) written as a file, its path."""
    return lambda wildcards: cfg.write_spec_file(make_spec(wildcards), SPECS, stage)


def resource(stage, key, model=None, dataset=None):
    """An input function returning one resource of a stage (model/dataset overrides applied).

    `runtime` grows with the attempt (retries after a time-out), the job resuming its work.
    """

    def lookup(wildcards, attempt=1):
        value = cfg.resolved_resources(
            CONFIG,
            stage,
            model=wildcards.get("model", model),
            dataset=wildcards.get("dataset", dataset),
        )[key]
        if key == "runtime":
            return int(value * CONFIG["cluster"]["retry_runtime_factor"] ** (attempt - 1))
        return value

    return lookup


def slurm_resources(stage):
    """Account, partition and GPU model for SLURM jobs of a stage (only keys that are set)."""
    settings = {
        "slurm_account": cfg.cluster_setting(CONFIG, "account"),
        "slurm_partition": cfg.cluster_setting(CONFIG, "partition"),
    }
    if stage in ("train", "generate"):
        settings["gpu_model"] = cfg.cluster_setting(CONFIG, "gpu_model")
    return {key: value for key, value in settings.items() if value}


def methods_regex(backend):
    """Wildcard constraint matching exactly the training methods of one backend."""
    methods = cfg.methods_of_backend(CONFIG, backend)
    return "|".join(re.escape(method) for method in methods) if methods else "(?!)"


def verl_train_resources():
    """GPUs of a verl train job: `--gpus=N` on one node; per node (`--gres=gpu:N`) on several,
    since SLURM spreads a total `--gpus` count over nodes unevenly."""

    def nodes(wildcards):
        return cfg.resolved_resources(CONFIG, "train", model=wildcards.model).get("nodes", 1)

    def gpus(wildcards):
        return cfg.resolved_resources(CONFIG, "train", model=wildcards.model)["gpus"]

    gpu_model = cfg.cluster_setting(CONFIG, "gpu_model")
    settings = {
        "nodes": nodes,
        "gpu": lambda w: gpus(w) if nodes(w) == 1 else 0,
        "gres": lambda w: "" if nodes(w) == 1 else ":".join(["gpu", *([gpu_model] if gpu_model else []), str(gpus(w))]),
    }
    if gpu_model:
        settings["gpu_model"] = lambda w: gpu_model if nodes(w) == 1 else ""
    settings.update({key: value for key, value in slurm_resources("train").items() if key != "gpu_model"})
    return settings


# Every path of the results tree, defined once here: rules call these with wildcard
# placeholders ("{model}") for their outputs and with values for other rules' inputs.


def log_path(stage, *parts):
    """A job's log: `<results>/logs/<stage>/<parts...>.log`."""
    return f"{RESULTS}/logs/{'/'.join([stage, *parts])}.log"


def dataset_path(name):
    return f"{RESULTS}/data/{name}.parquet"


def dataset_summary_path(name):
    return f"{RESULTS}/data/{name}.summary.json"


def training_data_path(wildcards):
    """The training set every RL job reads (training.dataset)."""
    return dataset_path(CONFIG["training"]["dataset"])


def base_manifest(wildcards):
    """The manifest of the base model an RL job starts from."""
    return model_manifest(wildcards.model, "base")


def verl_command_path(model, method):
    return f"{RESULTS}/train/{model}/{method}/verl_command.txt"


def verl_training_record_path(model, method):
    return f"{RESULTS}/train/{model}/{method}/training.json"


def train_spec():
    """The params function of both training rules: the (model, method) job's spec file."""
    return spec_file("train", lambda w: cfg.train_job_spec(CONFIG, w.model, w.method))


def checkpoint_dir(wildcards):
    """Where a training job keeps its checkpoints (not declared outputs: a killed job resumes)."""
    return cfg.checkpoint_dir(CONFIG, wildcards.model, wildcards.method)


def plan_path():
    return f"{RESULTS}/plan.md"


def base_model_dir(model):
    """Where every base model is reachable (the model job's link to the hub snapshot or local
    folder; the demo build itself), so a verl command can name it before any download."""
    return f"{RESULTS}/models/{model}/base/hf"


def verl_validation_paths(model):
    return [dataset_path(name) for name in cfg.resolved_verl(CONFIG, model)["validation_benchmarks"]]


def trl_validation_paths(wildcards):
    """The dataset a TRL job scores during training (trainer.validation), as a list (none: [])."""
    name = cfg.trl_validation_dataset(CONFIG, wildcards.model, wildcards.method)
    return [] if name is None else [dataset_path(name)]


def model_manifest(model, method):
    return f"{RESULTS}/models/{model}/{method}/model.json"


def evaluation_dir(model, method, benchmark, protocol):
    return f"{RESULTS}/eval/{model}/{method}/{benchmark}/{protocol}"


def generations_path(model, method, benchmark, protocol):
    return f"{evaluation_dir(model, method, benchmark, protocol)}/generations.jsonl"


def generation_record_path(model, method, benchmark, protocol):
    return f"{evaluation_dir(model, method, benchmark, protocol)}/generation.json"


def grade_metrics_path(model, method, benchmark, protocol, grader):
    return f"{evaluation_dir(model, method, benchmark, protocol)}/{grader}/metrics.json"


def grades_path(model, method, benchmark, protocol, grader):
    return f"{evaluation_dir(model, method, benchmark, protocol)}/{grader}/grades.jsonl"


def all_verl_commands():
    return [
        verl_command_path(model, method)
        for model, method in cfg.train_targets(CONFIG)
        if cfg.train_backend(CONFIG, method) == "verl"
    ]


def all_grade_metrics():
    return [grade_metrics_path(*target) for target in cfg.grade_targets(CONFIG)]


def all_grades():
    return [grades_path(*target) for target in cfg.grade_targets(CONFIG)]


def curves_path(model):
    return f"{RESULTS}/curves/{model}.png"


def trained_manifests(model):
    """The manifests of a model's trained methods, in the curves spec's order."""
    return [model_manifest(model, entry["method"]) for entry in cfg.curves_spec(CONFIG, model)["methods"]]


def all_curves():
    return [curves_path(model) for model in cfg.curve_models(CONFIG)]


def table_outputs():
    """The report's files by name (rule table's outputs; rule all asks for them)."""
    files = {suffix: f"{RESULTS}/table.{suffix}" for suffix in ("md", "csv", "json", "png")}
    return {
        **files,
        "agreement": f"{RESULTS}/agreement.md",
        "flips": f"{RESULTS}/grader_flips.jsonl",
        "samples": f"{RESULTS}/graded_samples.csv",
    }


def demo_corpus(wildcards):
    """The demo model's tokenizer is trained on a dataset; other sources need no input."""
    source = CONFIG["models"][wildcards.model]["source"]
    return [dataset_path(source["corpus"])] if source["kind"] == "demo" else []


# Evaluation: the generate and grade rules' environments, resources, inputs and outputs.


def generate_env(wildcards):
    return "../../envs/eval-vllm.yaml" if CONFIG["evaluation"]["engine"] == "vllm" else "../../envs/eval.yaml"


def grade_env(wildcards):
    judge = CONFIG["evaluation"]["llm_judge"]
    if wildcards.grader == "llm-judge" and judge["engine"] == "vllm":
        return "../../envs/eval-vllm.yaml"
    return "../../envs/eval.yaml"


def grade_stage(wildcards):
    """Rule graders are CPU jobs (resources.grade); the judge is a model job (resources.judge)."""
    return "grade" if wildcards.grader in cfg.RULE_GRADERS else "judge"


def grade_resource(key):
    return lambda wildcards, attempt=1: resource(grade_stage(wildcards), key)(wildcards, attempt)


def grade_slurm_resources():
    """Account and partition for every grade job; the GPU model only for judge jobs."""
    settings = {key: value for key, value in slurm_resources("grade").items()}
    gpu_model = cfg.cluster_setting(CONFIG, "gpu_model")
    if gpu_model:
        settings["gpu_model"] = lambda w: gpu_model if grade_stage(w) == "judge" else ""
    return settings


def generate_inputs(wildcards):
    """The model and every benchmark it is evaluated on, whatever `generate_per` (the same
    inputs, so switching reruns nothing)."""
    return {
        "model": model_manifest(wildcards.model, wildcards.method),
        "data": [dataset_path(benchmark) for benchmark in CONFIG["evaluation"]["benchmarks"]],
    }


def generate_model_spec(wildcards):
    """Every evaluation of a (model, method): each job's spec and files (the jobs a command runs
    are those whose generations files it names)."""
    model, method = wildcards.model, wildcards.method
    return {
        "model": model,
        "method": method,
        "jobs": [
            {
                "spec": cfg.generate_job_spec(CONFIG, model, method, benchmark, protocol),
                "data": dataset_path(benchmark),
                "generations": generations_path(model, method, benchmark, protocol),
                "record": generation_record_path(model, method, benchmark, protocol),
            }
            for benchmark, protocol in cfg.protocol_targets(CONFIG)
        ],
    }


# What one generate job writes: every evaluation of a (model, method), or one of them.
if CONFIG["evaluation"]["generate_per"] == "model":
    GENERATE_OUTPUTS = {
        "generations": [generations_path("{model}", "{method}", b, p) for b, p in cfg.protocol_targets(CONFIG)],
        "records": [generation_record_path("{model}", "{method}", b, p) for b, p in cfg.protocol_targets(CONFIG)],
    }
    GENERATE_LOG = log_path("generate", "{model}", "{method}")
    EVALUATIONS_PER_GENERATE_JOB = len(cfg.protocol_targets(CONFIG))
else:
    GENERATE_OUTPUTS = {
        "generations": generations_path("{model}", "{method}", "{benchmark}", "{protocol}"),
        "records": generation_record_path("{model}", "{method}", "{benchmark}", "{protocol}"),
    }
    GENERATE_LOG = log_path("generate", "{model}", "{method}", "{benchmark}", "{protocol}")
    EVALUATIONS_PER_GENERATE_JOB = 1


def generate_runtime(wildcards, attempt=1):
    """A model job runs every evaluation of the model one after another."""
    return resource("generate", "runtime")(wildcards, attempt) * EVALUATIONS_PER_GENERATE_JOB


def tracking_hook(action, **options):
    """Open/close the workflow's MLflow parent run, before/after all jobs: through the tracking
    service (`pipelines.tracking_service`, started here and reused by the jobs), else with
    MLflow in a child process.

    Best effort: a tracking failure prints one warning and never changes Snakemake's outcome
    (the result files are the record; MLflow mirrors them).
    """
    import subprocess

    from pipelines import tracking_service

    try:
        if tracking_service.workflow_hook(action, TRACKING_SPEC, RESULTS, **options):
            return
    except Exception as error:
        print(f"WARNING: the MLflow tracking service failed ({error}); using MLflow directly", file=sys.stderr)
    command = ["python", "-m", "pipelines.tracking", action, "--tracking", TRACKING_SPEC, "--results-dir", RESULTS]
    for option, value in options.items():
        command += [f"--{option.replace('_', '-')}", *([value] if isinstance(value, str) else value)]
    try:
        status = subprocess.run(command, check=False).returncode
    except OSError as error:
        status = error
    if status != 0:
        print(f"WARNING: the MLflow {action} hook failed ({status}); results are unaffected", file=sys.stderr)


onstart:
    tracking_hook("start", config_files=list(map(str, workflow.configfiles)), command=" ".join(sys.argv))


onsuccess:
    tracking_hook("end", status="FINISHED", log_file=str(log or ""))


onerror:
    tracking_hook("end", status="FAILED", log_file=str(log or ""))
