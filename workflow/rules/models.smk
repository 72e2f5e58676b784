# One job per model: a hub snapshot, a validated local directory, or the offline demo build.
# The output is a manifest (path, source, revision, digests) that evaluation reads.


rule model:
    input:
        corpus=demo_corpus,
    output:
        model_manifest("{model}", "base"),
    log:
        log_path("models", "{model}"),
    conda:
        "../../envs/models.yaml"
    threads: resource("model", "cpus")
    resources:
        **slurm_resources("model"),
        mem_mb=resource("model", "mem_mb"),
        runtime=resource("model", "runtime"),
    params:
        spec=spec_file("model", lambda w: cfg.model_job_spec(CONFIG, w.model)),
    shell:
        "python -m pipelines.models --spec {params.spec:q} --output {output:q}"
        " --corpus {input.corpus:q} --log-file {log:q}"
        " > {log:q} 2>&1"
