# Evaluation: `generate` (GPU work: one job per model, method, benchmark and protocol) writes
# generations; `grade` (CPU work, or the judge's GPU) scores them with one grader. A grader
# change re-plans only grade jobs. generate resumes from generations.partial.jsonl when an
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


rule generate:
    input:
        model=lambda w: model_manifest(w.model, w.method),
        data=lambda w: dataset_path(w.benchmark),
    output:
        generations=generations_path("{model}", "{method}", "{benchmark}", "{protocol}"),
        record=generation_record_path("{model}", "{method}", "{benchmark}", "{protocol}"),
    log:
        f"{RESULTS}/logs/generate/{{model}}/{{method}}/{{benchmark}}/{{protocol}}.log",
    params:
        spec=spec_file("generate", lambda w: cfg.generate_job_spec(CONFIG, w.model, w.method, w.benchmark, w.protocol)),
    threads: resource("generate", "cpus")
    resources:
        gpu=resource("generate", "gpus"),
        mem_mb=resource("generate", "mem_mb"),
        runtime=resource("generate", "runtime"),
        **slurm_resources("generate"),
    conda:
        generate_env
    shell:
        "python -m pipelines.generate --spec {params.spec:q} --model-manifest {input.model:q}"
        " --data {input.data:q} --generations {output.generations:q} --record {output.record:q}"
        " --threads {threads} --tracking {TRACKING_SPEC:q} --log-file {log:q} > {log:q} 2>&1"


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
