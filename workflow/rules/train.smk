# One job per (model, method) that is not `base`: RL from the model's base checkpoint on the
# training set. Checkpoints live in results/train/... (not declared outputs, so a killed or
# timed-out job resumes from them); the trained model's manifest feeds the usual eval rules.
#
# Backend per method (training.defaults/methods.<m>.backend):
#   trl  -> `train` writes the Hugging Face model and its manifest directly;
#   verl -> `train_verl` leaves FSDP checkpoints + training.json, `convert` merges one step.


rule train:
    input:
        model=lambda w: model_manifest(w.model, "base"),
        data=lambda w: dataset_path(CONFIG["training"]["dataset"]),
        validation=trl_validation_paths,
    output:
        f"{RESULTS}/models/{{model}}/{{method}}/model.json",
    log:
        f"{RESULTS}/logs/train/{{model}}/{{method}}.log",
    wildcard_constraints:
        method=methods_regex("trl"),
    params:
        spec=spec_file("train", lambda w: cfg.train_job_spec(CONFIG, w.model, w.method)),
        checkpoints=lambda w: cfg.checkpoint_dir(CONFIG, w.model, w.method),
    threads: resource("train", "cpus")
    resources:
        gpu=resource("train", "gpus"),
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
        **slurm_resources("train"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m pipelines.train --spec {params.spec:q} --base-manifest {input.model:q}"
        " --data {input.data:q} --checkpoints {params.checkpoints:q} --output {output:q}"
        " --validation-data {input.validation:q}"
        " --threads {threads} --tracking {TRACKING_SPEC:q} --log-file {log:q} > {log:q} 2>&1"


rule verl_command:
    # The exact verl command of a job, from the config alone (no download, no GPU): review it
    # before spending GPU-hours; train_verl runs what it says, so a changed command retrains.
    output:
        f"{RESULTS}/train/{{model}}/{{method}}/verl_command.txt",
    log:
        f"{RESULTS}/logs/verl_command/{{model}}/{{method}}.log",
    wildcard_constraints:
        method=methods_regex("verl"),
    params:
        spec=spec_file("train", lambda w: cfg.train_job_spec(CONFIG, w.model, w.method)),
        model_dir=lambda w: base_model_dir(w.model),
        data=lambda w: dataset_path(CONFIG["training"]["dataset"]),
        val=lambda w: verl_validation_paths(w.model),
        checkpoints=lambda w: cfg.checkpoint_dir(CONFIG, w.model, w.method),
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m pipelines.train.verl_launch --write-command {output:q} --spec {params.spec:q}"
        " --model-dir {params.model_dir:q} --data {params.data:q} --val-data {params.val:q}"
        " --checkpoints {params.checkpoints:q} --tracking {TRACKING_SPEC:q} > {log:q} 2>&1"


rule train_verl:
    input:
        command=f"{RESULTS}/train/{{model}}/{{method}}/verl_command.txt",
        model=lambda w: model_manifest(w.model, "base"),
        data=lambda w: dataset_path(CONFIG["training"]["dataset"]),
        val=lambda w: verl_validation_paths(w.model),
    output:
        f"{RESULTS}/train/{{model}}/{{method}}/training.json",
    log:
        f"{RESULTS}/logs/train/{{model}}/{{method}}.log",
    wildcard_constraints:
        method=methods_regex("verl"),
    params:
        spec=spec_file("train", lambda w: cfg.train_job_spec(CONFIG, w.model, w.method)),
        checkpoints=lambda w: cfg.checkpoint_dir(CONFIG, w.model, w.method),
    threads: resource("train", "cpus")
    resources:
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
        **verl_train_resources(),
    conda:
        "../../envs/verl.yaml"
    shell:
        "python -m pipelines.train.verl_launch --command-file {input.command:q} --spec {params.spec:q}"
        " --base-manifest {input.model:q} --data {input.data:q} --val-data {input.val:q}"
        " --checkpoints {params.checkpoints:q} --output {output:q} --tracking {TRACKING_SPEC:q}"
        " --log-file {log:q} > {log:q} 2>&1"


rule convert:
    input:
        f"{RESULTS}/train/{{model}}/{{method}}/training.json",
    output:
        f"{RESULTS}/models/{{model}}/{{method}}/model.json",
    log:
        f"{RESULTS}/logs/convert/{{model}}/{{method}}.log",
    wildcard_constraints:
        method=methods_regex("verl"),
    params:
        spec=spec_file("convert", lambda w: cfg.convert_job_spec(CONFIG, w.model, w.method)),
    threads: resource("convert", "cpus")
    resources:
        mem_mb=resource("convert", "mem_mb"),
        runtime=resource("convert", "runtime"),
        **slurm_resources("convert"),
    conda:
        "../../envs/verl.yaml"
    shell:
        "python -m pipelines.convert --spec {params.spec:q} --training {input:q} --output {output:q}"
        " --tracking {TRACKING_SPEC:q} --log-file {log:q} > {log:q} 2>&1"
