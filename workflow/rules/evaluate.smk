# Evaluation: `generate` (GPU work) writes generations; `grade` (CPU work, or the judge's GPU)
# scores them with one grader. A grader change re-plans only grade jobs.
# generate_per: model (default) = one generate job per (model, method): one engine load for all
# its benchmarks and protocols; generate_per: benchmark = one job per (model, method, benchmark,
# protocol). Either way the job has the same inputs, params and command, so switching reruns
# nothing. generate resumes from generations.partial.jsonl when an
# attempt was interrupted (that file is deliberately not a declared output).


rule generate:
    input:
        unpack(generate_inputs),
    output:
        **GENERATE_OUTPUTS,
    log:
        GENERATE_LOG,
    conda:
        generate_env
    threads: resource("generate", "cpus")
    resources:
        **slurm_resources("generate"),
        gpu=resource("generate", "gpus"),
        mem_mb=resource("generate", "mem_mb"),
        runtime=generate_runtime,
    params:
        spec=spec_file("generate", generate_model_spec),
    shell:
        "python -m pipelines.generate --spec {params.spec:q} --model-manifest {input.model:q}"
        " --generations {output.generations:q} --threads {threads}"
        " --log-file {log:q} > {log:q} 2>&1"


rule grade:
    input:
        generations=generations_path("{model}", "{method}", "{benchmark}", "{protocol}"),
        record=generation_record_path("{model}", "{method}", "{benchmark}", "{protocol}"),
    output:
        metrics=grade_metrics_path("{model}", "{method}", "{benchmark}", "{protocol}", "{grader}"),
        grades=grades_path("{model}", "{method}", "{benchmark}", "{protocol}", "{grader}"),
    log:
        log_path("grade", "{model}", "{method}", "{benchmark}", "{protocol}", "{grader}"),
    conda:
        grade_env
    threads: grade_resource("cpus")
    resources:
        **grade_slurm_resources(),
        gpu=grade_resource("gpus"),
        mem_mb=grade_resource("mem_mb"),
        runtime=grade_resource("runtime"),
    params:
        spec=spec_file(
            "grade", lambda w: cfg.grade_job_spec(CONFIG, w.model, w.method, w.benchmark, w.protocol, w.grader)
        ),
    shell:
        "python -m pipelines.grade --spec {params.spec:q} --generations {input.generations:q}"
        " --record {input.record:q} --grades {output.grades:q} --metrics {output.metrics:q}"
        " --log-file {log:q} > {log:q} 2>&1"
