# One job per dataset: load (hub or local file) -> canonical (verl) schema parquet.


rule data:
    output:
        parquet=f"{RESULTS}/data/{{dataset}}.parquet",
        summary=f"{RESULTS}/data/{{dataset}}.summary.json",
    log:
        f"{RESULTS}/logs/data/{{dataset}}.log",
    params:
        spec=spec_file("data", lambda w: cfg.data_job_spec(CONFIG, w.dataset)),
    threads: resource("data", "cpus")
    resources:
        mem_mb=resource("data", "mem_mb"),
        runtime=resource("data", "runtime"),
        **slurm_resources("data"),
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m pipelines.data --spec {params.spec:q} --output {output.parquet:q}"
        " --summary {output.summary:q} --tracking {TRACKING_SPEC:q} --log-file {log:q}"
        " > {log:q} 2>&1"
