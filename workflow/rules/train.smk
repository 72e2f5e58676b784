# One job per (model, method) that is not `base`: RL from the model's base checkpoint on the
# training set. Checkpoints live in results/train/... (not declared outputs, so a killed or
# timed-out job resumes from them); the trained model's manifest feeds the usual eval rules.
#
# Backend per method (training.defaults/methods.<m>.backend):
#   trl  -> `train_trl` (pipelines.train.trl_backend) writes the Hugging Face model and its
#           manifest directly;
#   verl -> `verl_command` writes verl's command, `train_verl` (pipelines.train.verl_launch)
#           runs it and leaves FSDP checkpoints + training.json, `convert` merges one step.
# Both training rules read the same base model, training set, spec and checkpoint folder and
# log to the same file (the helpers in common.smk).


rule train_trl:
    input:
        model=base_manifest,
        data=training_data_path,
        validation=trl_validation_paths,
    output:
        model_manifest("{model}", "{method}"),
    log:
        log_path("train", "{model}", "{method}"),
    wildcard_constraints:
        method=methods_regex("trl"),
    conda:
        "../../envs/train.yaml"
    threads: resource("train", "cpus")
    resources:
        **slurm_resources("train"),
        gpu=resource("train", "gpus"),
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
    params:
        spec=train_spec(),
        checkpoints=checkpoint_dir,
    shell:
        "python -m pipelines.train.trl_backend --spec {params.spec:q} --base-manifest {input.model:q}"
        " --data {input.data:q} --checkpoints {params.checkpoints:q} --output {output:q}"
        " --validation-data {input.validation:q}"
        " --threads {threads} --log-file {log:q} > {log:q} 2>&1"


rule verl_command:
    # The exact verl command of a job, from the config alone (no download, no GPU): review it
    # before spending GPU-hours; train_verl runs what it says, so a changed command retrains.
    output:
        verl_command_path("{model}", "{method}"),
    log:
        log_path("verl_command", "{model}", "{method}"),
    wildcard_constraints:
        method=methods_regex("verl"),
    conda:
        "../../envs/report.yaml"
    params:
        spec=train_spec(),
        model_dir=lambda w: base_model_dir(w.model),
        data=training_data_path,
        val=lambda w: verl_validation_paths(w.model),
        checkpoints=checkpoint_dir,
    shell:
        "python -m pipelines.train.verl_launch --write-command {output:q} --spec {params.spec:q}"
        " --model-dir {params.model_dir:q} --data {params.data:q} --val-data {params.val:q}"
        " --checkpoints {params.checkpoints:q} > {log:q} 2>&1"


rule train_verl:
    input:
        command=rules.verl_command.output[0],
        model=base_manifest,
        data=training_data_path,
        val=lambda w: verl_validation_paths(w.model),
    output:
        verl_training_record_path("{model}", "{method}"),
    log:
        log_path("train", "{model}", "{method}"),
    wildcard_constraints:
        method=methods_regex("verl"),
    conda:
        "../../envs/verl.yaml"
    threads: resource("train", "cpus")
    resources:
        **verl_train_resources(),
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
    params:
        spec=train_spec(),
        checkpoints=checkpoint_dir,
    shell:
        "python -m pipelines.train.verl_launch --command-file {input.command:q} --spec {params.spec:q}"
        " --base-manifest {input.model:q} --data {input.data:q} --val-data {input.val:q}"
        " --checkpoints {params.checkpoints:q} --output {output:q}"
        " --log-file {log:q} > {log:q} 2>&1"


rule convert:
    input:
        rules.train_verl.output[0],
    output:
        model_manifest("{model}", "{method}"),
    log:
        log_path("convert", "{model}", "{method}"),
    wildcard_constraints:
        method=methods_regex("verl"),
    conda:
        "../../envs/verl.yaml"
    threads: resource("convert", "cpus")
    resources:
        **slurm_resources("convert"),
        mem_mb=resource("convert", "mem_mb"),
        runtime=resource("convert", "runtime"),
    params:
        spec=spec_file("convert", lambda w: cfg.convert_job_spec(CONFIG, w.model, w.method)),
    shell:
        "python -m pipelines.convert --spec {params.spec:q} --training {input:q} --output {output:q}"
        " --log-file {log:q} > {log:q} 2>&1"
