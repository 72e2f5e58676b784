# The results table: one block per grader and protocol, rows model x method, columns the
# benchmarks + average (value ± 95% half-width, question counts), the published numbers beside
# each measured row, paired differences against the model's base row, a chart, a JSON map from
# every cell to its metrics.json, and the graders' agreement (flips, with examples).


# The table stage's files that `snakemake --report` shows, with their captions.
REPORT_CAPTIONS = {"png": "table_chart.rst", "csv": "table_csv.rst", "samples": "graded_samples.rst"}


rule table:
    input:
        metrics=all_grade_metrics(),
        grades=all_grades(),
    output:
        **{
            name: (
                report(path, caption=f"../report/{REPORT_CAPTIONS[name]}", category="Results")
                if name in REPORT_CAPTIONS
                else path
            )
            for name, path in table_outputs().items()
        },
    log:
        log_path("table"),
    conda:
        "../../envs/report.yaml"
    params:
        spec=spec_file("report", lambda w: cfg.report_spec(CONFIG)),
        out_dir=lambda w, output: os.path.dirname(output.md),
    shell:
        "python -m pipelines.report --spec {params.spec:q} --metrics {input.metrics:q}"
        " --out-dir {params.out_dir:q} --log-file {log:q} > {log:q} 2>&1"


rule curves:
    # One figure per model: every trained method's reward, semantic entropy and majority share
    # per rollout step on shared axes (TRL histories from files, verl's from its MLflow run).
    input:
        manifests=lambda w: trained_manifests(w.model),
    output:
        report(curves_path("{model}"), caption="../report/curves.rst", category="Training", labels={"model": "{model}"}),
    log:
        log_path("curves", "{model}"),
    conda:
        "../../envs/report.yaml"
    params:
        spec=spec_file("curves", lambda w: cfg.curves_spec(CONFIG, w.model)),
    shell:
        "python -m pipelines.curves --spec {params.spec:q} --manifests {input.manifests:q}"
        " --output {output:q} --log-file {log:q} > {log:q} 2>&1"


rule plan:
    # `snakemake plan`: every training job's settings, resources and GPU-hour estimate, and
    # every evaluation job's protocol, before anything is downloaded or trained.
    input:
        verl_commands=all_verl_commands(),
    output:
        plan_path(),
    log:
        log_path("plan"),
    conda:
        "../../envs/report.yaml"
    params:
        spec=spec_file("plan", lambda w: cfg.plan_spec(CONFIG)),
    shell:
        "python -m pipelines.plan --spec {params.spec:q} --output {output:q} > {log:q} 2>&1"
