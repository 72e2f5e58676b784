# Evaluation: `generate` (GPU work) writes generations; `grade` (CPU work, or the judge's GPU)
# scores them with one grader. A grader change re-plans only grade jobs.
# generate_per: model (default) = one generate job per (model, method): one engine load for all
# its benchmarks and protocols; generate_per: benchmark = one job per (model, method, benchmark,
# protocol). Either way the job has the same inputs, params and command, so switching reruns
# nothing. generate resumes from generations.partial.jsonl when an
# attempt was interrupted (that file is deliberately not a declared output).


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
    return {"model": model_manifest(wildcards.model, wildcards.method),
            "data": [dataset_path(benchmark) for benchmark in CONFIG["evaluation"]["benchmarks"]]}


def generate_model_spec(wildcards):
    """Every evaluation of a (model, method): each job's spec and files (the jobs a command runs
    are those whose generations files it names)."""
    model, method = wildcards.model, wildcards.method
    return {"model": model, "method": method, "jobs": [
        {"spec": cfg.generate_job_spec(CONFIG, model, method, benchmark, protocol), "data": dataset_path(benchmark),
         "generations": generations_path(model, method, benchmark, protocol),
         "record": generation_record_path(model, method, benchmark, protocol)}
        for benchmark, protocol in cfg.protocol_targets(CONFIG)]}


# What one generate job writes: every evaluation of a (model, method), or one of them.
if CONFIG["evaluation"]["generate_per"] == "model":
    GENERATE_OUTPUTS = {
        "generations": [generations_path("{model}", "{method}", b, p) for b, p in cfg.protocol_targets(CONFIG)],
        "records": [generation_record_path("{model}", "{method}", b, p) for b, p in cfg.protocol_targets(CONFIG)],
    }
    GENERATE_LOG = f"{RESULTS}/logs/generate/{{model}}/{{method}}.log"
    EVALUATIONS_PER_GENERATE_JOB = len(cfg.protocol_targets(CONFIG))
else:
    GENERATE_OUTPUTS = {
        "generations": generations_path("{model}", "{method}", "{benchmark}", "{protocol}"),
        "records": generation_record_path("{model}", "{method}", "{benchmark}", "{protocol}"),
    }
    GENERATE_LOG = f"{RESULTS}/logs/generate/{{model}}/{{method}}/{{benchmark}}/{{protocol}}.log"
    EVALUATIONS_PER_GENERATE_JOB = 1


def generate_runtime(wildcards, attempt=1):
    """A model job runs every evaluation of the model one after another."""
    return resource("generate", "runtime")(wildcards, attempt) * EVALUATIONS_PER_GENERATE_JOB


rule generate:
    input:
        unpack(generate_inputs),
    output:
        **GENERATE_OUTPUTS,
    log:
        GENERATE_LOG,
    params:
        spec=spec_file("generate", generate_model_spec),
    threads: resource("generate", "cpus")
    resources:
        gpu=resource("generate", "gpus"),
        mem_mb=resource("generate", "mem_mb"),
        runtime=generate_runtime,
        **slurm_resources("generate"),
    conda:
        generate_env
    shell:
        "python -m pipelines.generate --spec {params.spec:q} --model-manifest {input.model:q}"
        " --generations {output.generations:q} --threads {threads} --tracking {TRACKING_SPEC:q}"
        " --log-file {log:q} > {log:q} 2>&1"


rule grade:
    input:
        generations=generations_path("{model}", "{method}", "{benchmark}", "{protocol}"),
        record=generation_record_path("{model}", "{method}", "{benchmark}", "{protocol}"),
    output:
        metrics=grade_metrics_path("{model}", "{method}", "{benchmark}", "{protocol}", "{grader}"),
        grades=grades_path("{model}", "{method}", "{benchmark}", "{protocol}", "{grader}"),
    log:
        f"{RESULTS}/logs/grade/{{model}}/{{method}}/{{benchmark}}/{{protocol}}/{{grader}}.log",
    params:
        spec=spec_file("grade", lambda w: cfg.grade_job_spec(CONFIG, w.model, w.method, w.benchmark, w.protocol, w.grader)),
    threads: grade_resource("cpus")
    resources:
        gpu=grade_resource("gpus"),
        mem_mb=grade_resource("mem_mb"),
        runtime=grade_resource("runtime"),
        **grade_slurm_resources(),
    conda:
        grade_env
    shell:
        "python -m pipelines.grade --spec {params.spec:q} --generations {input.generations:q}"
        " --record {input.record:q} --grades {output.grades:q} --metrics {output.metrics:q}"
        " --tracking {TRACKING_SPEC:q} --log-file {log:q} > {log:q} 2>&1"
