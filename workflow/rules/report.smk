# The results table: rows model x method, columns the benchmarks + average, the published
# numbers beside each measured row, a chart, and a JSON map from every cell to its metrics.json.


rule table:
    input:
        metrics=all_eval_metrics(),
    output:
        md=f"{RESULTS}/table.md",
        csv=f"{RESULTS}/table.csv",
        json=f"{RESULTS}/table.json",
        png=f"{RESULTS}/table.png",
    log:
        f"{RESULTS}/logs/table.log",
    params:
        spec=lambda w: cfg.to_json(cfg.report_spec(CONFIG)),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pipelines.report --spec {params.spec:q} --metrics {input.metrics:q}"
        " --out-dir {RESULTS:q} --tracking {TRACKING_JSON:q} --log-file {log:q} > {log:q} 2>&1"
