# One job per model: a hub snapshot, a validated local directory, or the offline demo build.
# The output is a manifest (path, source, revision, digests) that evaluation reads.


rule model:
    input:
        corpus=demo_corpus,
    output:
        f"{RESULTS}/models/{{model}}/base/model.json",
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    params:
        spec=spec_file("model", lambda w: cfg.model_job_spec(CONFIG, w.model)),
    threads: resource("model", "cpus")
    resources:
        mem_mb=resource("model", "mem_mb"),
        runtime=resource("model", "runtime"),
        **slurm_resources("model"),
    conda:
        "../../envs/models.yaml"
    shell:
        "python -m pipelines.models --spec {params.spec:q} --output {output:q}"
        " --corpus {input.corpus:q} --tracking {TRACKING_SPEC:q} --log-file {log:q}"
        " > {log:q} 2>&1"
