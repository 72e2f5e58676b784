# The results table: one block per grader and protocol, rows model x method, columns the
# benchmarks + average (value ± 95% half-width, question counts), the published numbers beside
# each measured row, paired differences against the model's base row, a chart, a JSON map from
# every cell to its metrics.json, and the graders' agreement (flips, with examples).


rule table:
    input:
        metrics=all_grade_metrics(),
        grades=all_grades(),
    output:
        **{
            name: (
                report(path, caption=f"../report/table_{'chart' if name == 'png' else 'csv'}.rst", category="Results")
                if name in ("png", "csv")
                else path
            )
            for name, path in table_outputs().items()
        },
    log:
        f"{RESULTS}/logs/table.log",
    params:
        spec=lambda w: cfg.to_json(cfg.report_spec(CONFIG)),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pipelines.report --spec {params.spec:q} --metrics {input.metrics:q}"
        " --out-dir {RESULTS:q} --tracking {TRACKING_JSON:q} --log-file {log:q} > {log:q} 2>&1"


rule plan:
    # `snakemake plan`: every training job's settings, resources and GPU-hour estimate, and
    # every evaluation job's protocol, before anything is downloaded or trained.
    input:
        verl_commands=all_verl_commands(),
    output:
        f"{RESULTS}/plan.md",
    log:
        f"{RESULTS}/logs/plan.log",
    params:
        spec=lambda w: cfg.to_json(cfg.plan_spec(CONFIG)),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pipelines.plan --spec {params.spec:q} --output {output:q} > {log:q} 2>&1"
