# One job per (model, method, benchmark). Resumes from generations.partial.jsonl when a
# previous attempt was interrupted (that file is deliberately not a declared output).


def eval_env(wildcards):
    return "../../envs/eval-vllm.yaml" if CONFIG["evaluation"]["engine"] == "vllm" else "../../envs/eval.yaml"


rule eval:
    input:
        model=lambda w: model_manifest(w.model, w.method),
        data=lambda w: dataset_path(w.benchmark),
    output:
        metrics=f"{RESULTS}/eval/{{model}}/{{method}}/{{benchmark}}/metrics.json",
        generations=f"{RESULTS}/eval/{{model}}/{{method}}/{{benchmark}}/generations.jsonl",
    log:
        f"{RESULTS}/logs/eval/{{model}}/{{method}}/{{benchmark}}.log",
    params:
        spec=lambda w: cfg.to_json(cfg.eval_job_spec(CONFIG, w.model, w.method, w.benchmark)),
    threads: resource("eval", "cpus")
    resources:
        gpu=resource("eval", "gpus"),
        mem_mb=resource("eval", "mem_mb"),
        runtime=resource("eval", "runtime"),
        **slurm_resources("eval"),
    conda:
        eval_env
    shell:
        "python -m pipelines.evaluate --spec {params.spec:q} --model-manifest {input.model:q}"
        " --data {input.data:q} --metrics {output.metrics:q} --generations {output.generations:q}"
        " --threads {threads} --tracking {TRACKING_JSON:q} --log-file {log:q} > {log:q} 2>&1"
