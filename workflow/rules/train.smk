# One job per (model, method) that is not `base`: RL from the model's base checkpoint on the
# training set. Checkpoints live in results/train/... (not declared outputs, so a killed or
# timed-out job resumes from them); the trained model's manifest feeds the usual eval rules.


rule train:
    input:
        model=lambda w: model_manifest(w.model, "base"),
        data=lambda w: dataset_path(CONFIG["training"]["dataset"]),
    output:
        f"{RESULTS}/models/{{model}}/{{method}}/model.json",
    log:
        f"{RESULTS}/logs/train/{{model}}/{{method}}.log",
    wildcard_constraints:
        method=r"(?!base$)[a-z0-9_]+",
    params:
        spec=lambda w: cfg.to_json(cfg.train_job_spec(CONFIG, w.model, w.method)),
        checkpoints=lambda w: f"{RESULTS}/train/{w.model}/{w.method}",
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
        " --threads {threads} --tracking {TRACKING_JSON:q} --log-file {log:q} > {log:q} 2>&1"
