# One job per dataset: load (hub or local file) -> canonical (verl) schema parquet.


rule data:
    output:
        parquet=dataset_path("{dataset}"),
        summary=dataset_summary_path("{dataset}"),
    log:
        log_path("data", "{dataset}"),
    conda:
        "../../envs/data.yaml"
    threads: resource("data", "cpus")
    resources:
        **slurm_resources("data"),
        mem_mb=resource("data", "mem_mb"),
        runtime=resource("data", "runtime"),
    params:
        spec=spec_file("data", lambda w: cfg.data_job_spec(CONFIG, w.dataset)),
    shell:
        "python -m pipelines.data --spec {params.spec:q} --output {output.parquet:q}"
        " --summary {output.summary:q} --log-file {log:q}"
        " > {log:q} 2>&1"
