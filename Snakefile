"""EMPO reproduction workflow: data -> models -> evaluation -> results table, all in MLflow.

This file only validates the config, includes the rule files and names the targets.
    snakemake --cores 2 --configfile config/demo.yaml      # the embedded CPU demo
    snakemake --profile slurm                              # the paper table on a cluster
    snakemake -R results/<tree>/eval/<model>/<method>/<benchmark>/<protocol>/generations.jsonl --configfile ...   # regenerate one
"""

import sys

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, workflow.basedir)

if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    table,
    curves,
    plan,
    verl_command,


# The metrics too, not only the table: Snakemake does not rebuild a missing intermediate file
# whose consumer is up to date, so a deleted metrics.json would leave its number in the table.
rule all:
    default_target: True
    input:
        list(table_outputs().values()),
        all_grade_metrics(),
        all_curves(),
