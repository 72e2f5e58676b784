# Shared by all rule files: the validated config, output paths and input functions.
# Kept light (yaml + jsonschema only) so that a dry-run of the full paper table stays fast.

import re

from pipelines import config as cfg


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


def dataset_path(name):
    return f"{RESULTS}/data/{name}.parquet"


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
    return [f"{RESULTS}/train/{model}/{method}/verl_command.txt" for model, method in cfg.train_targets(CONFIG)
            if cfg.train_backend(CONFIG, method) == "verl"]


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
    return {**files, "agreement": f"{RESULTS}/agreement.md", "flips": f"{RESULTS}/grader_flips.jsonl",
            "samples": f"{RESULTS}/graded_samples.csv"}


def demo_corpus(wildcards):
    """The demo model's tokenizer is trained on a dataset; other sources need no input."""
    source = CONFIG["models"][wildcards.model]["source"]
    return [dataset_path(source["corpus"])] if source["kind"] == "demo" else []


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
        print(f"WARNING: the MLflow {action} hook failed ({status}); results are unaffected",
              file=sys.stderr)


onstart:
    tracking_hook("start", config_files=list(map(str, workflow.configfiles)), command=" ".join(sys.argv))


onsuccess:
    tracking_hook("end", status="FINISHED", log_file=str(log or ""))


onerror:
    tracking_hook("end", status="FAILED", log_file=str(log or ""))
