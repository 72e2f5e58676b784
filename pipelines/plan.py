"""`python -m pipelines.plan`: plan.md, what a config will run, before any download or GPU-hour.

Every training job with its key settings side by side (and its exact verl command file, for
verl jobs), every evaluation job's protocol, and estimated GPU-hours. The estimate is stated,
not measured: generated tokens / (tokens per second per GPU) / 3600, where

- a training job generates at most steps x prompts_per_step x num_generations x
  max_completion_length tokens (every response at the cap: an upper bound; RL responses are
  often far shorter early on), and rollouts dominate the time of an RL step;
- an evaluation job generates at most items x n x max_new_tokens tokens (items are counted from
  local dataset files; a hub dataset's size is unknown until it is downloaded);
- tokens per second per GPU is `cluster.estimate_tokens_per_gpu_second`: set it from a
  measured run on your hardware.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, stage_parser


def count_items(source: Mapping[str, Any], limit: int | None) -> int | None:
    """Rows of a local dataset file (None for hub datasets: unknown before the download)."""
    if source.get("kind") != "file" or not Path(source["path"]).is_file():
        return None
    path = Path(source["path"])
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
    else:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = len(lines) - (1 if path.suffix == ".csv" else 0)
    return min(rows, limit) if limit is not None else rows


def training_tokens(trainer: Mapping[str, Any]) -> int:
    """Upper bound on the tokens a training job generates (every response at the cap)."""
    return (
        trainer["max_steps"]
        * trainer["prompts_per_step"]
        * trainer["num_generations"]
        * trainer["max_completion_length"]
    )


def gpu_hours(tokens: int | None, tokens_per_gpu_second: float) -> float | None:
    return None if tokens is None else tokens / tokens_per_gpu_second / 3600


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:,.1f}"


def _decoding(decoding: Mapping[str, Any]) -> str:
    if decoding["temperature"] == 0:
        return "greedy"
    top_k = f", top_k {decoding['top_k']}" if decoding.get("top_k") else ""
    return f"T {decoding['temperature']}, top_p {decoding['top_p']}{top_k}, n {decoding['n']}"


def _start(source: Mapping[str, Any]) -> str:
    if source["kind"] == "hub":
        return source["hub_id"] + (f"@{source['revision'][:8]}" if source.get("revision") else "")
    return source.get("path") or f"demo ({source.get('corpus')})"


def render_plan(spec: Mapping[str, Any]) -> str:
    tps = spec["tokens_per_gpu_second"]
    results = spec["results_dir"]
    lines = [
        "# Plan",
        "",
        f"What this configuration runs. GPU-hours are estimates: generated tokens / {tps:g} tokens/s "
        "per GPU (`cluster.estimate_tokens_per_gpu_second`) / 3600. Training: at most steps x prompts "
        "x G x response cap tokens (every response at the cap, an upper bound). Evaluation: items x n "
        "x max new tokens (items known for local dataset files only).",
        "",
    ]
    train_total = 0.0
    if spec["train"]:
        lines += [
            "## Training jobs",
            "",
            "| model | method | backend | reward | start model | steps | prompts x G | response cap | lr "
            "| loss | save every | validation | GPUs | GPU-hours (≤) |",
            "|" + "---|" * 14,
        ]
        for job in spec["train"]:
            trainer, resources = job["trainer"], job["resources"]
            verl = job.get("verl", {})
            hours = gpu_hours(training_tokens(trainer), tps)
            train_total += hours or 0.0
            loss = trainer["loss"] + (f" ({verl['loss_agg_mode']})" if verl else " (sequence mean)")
            gpus = resources["gpus"] * resources.get("nodes", 1)
            scored = trainer.get("validation")  # TRL: one set, sampled; verl: its benchmarks, greedy
            validation = (
                f"{scored['dataset']} every {scored['every_steps']}"
                if scored
                else ", ".join(verl.get("validation_benchmarks", [])) or "–"
            )
            judge = job.get("semantic_judge")
            reward = trainer["reward"] + (f" (semantic judge {judge['model']}, {judge['engine']})" if judge else "")
            lines.append(
                "| "
                + " | ".join(
                    [
                        job["model"],
                        job["method"],
                        trainer["backend"],
                        reward,
                        _start(job["start_model"]),
                        str(trainer["max_steps"]),
                        f"{trainer['prompts_per_step']} x {trainer['num_generations']}",
                        str(trainer["max_completion_length"]),
                        f"{trainer['learning_rate']:g}",
                        loss,
                        str(trainer["save_steps"]),
                        validation,
                        str(gpus),
                        _hours(hours),
                    ]
                )
                + " |"
            )
        verl_jobs = [job for job in spec["train"] if job["trainer"]["backend"] == "verl"]
        if verl_jobs:
            lines += ["", "The exact verl command of each verl job (written with this plan, no download):", ""]
            lines += [f"- `{results}/train/{job['model']}/{job['method']}/verl_command.txt`" for job in verl_jobs]
        lines += ["", f"Training total: ≤ {_hours(train_total)} GPU-hours.", ""]
    eval_total, unknown = 0.0, 0
    lines += [
        "## Generation jobs",
        "",
        "Each is graded by every grader, one job each: " + describe_graders(spec["graders"]) + ".",
        "",
        "| model | method | benchmark | protocol | items | engine | decoding | max new tokens | prompt | GPU-hours (≤) |",  # noqa: E501
        "|" + "---|" * 10,
    ]
    for job in spec["generate"]:
        items = count_items(job["data_source"], job.get("data_limit"))
        decoding = job["decoding"]
        tokens = None if items is None else items * decoding["n"] * decoding["max_new_tokens"]
        hours = gpu_hours(tokens, tps)
        if hours is None:
            unknown += 1
        else:
            eval_total += hours
        prompt = job["prompt"]["format"] + (", own system prompt" if job["prompt"].get("system_prompt") else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    job["model"],
                    job["method"],
                    job["benchmark"],
                    job["protocol_name"],
                    "?" if items is None else str(items),
                    job["engine"],
                    _decoding(decoding),
                    str(decoding["max_new_tokens"]),
                    prompt,
                    _hours(hours),
                ]
            )
            + " |"
        )
    lines += [
        "",
        f"Generation total: ≤ {_hours(eval_total)} GPU-hours"
        + (f" ({unknown} job(s) of unknown size not counted)" if unknown else "")
        + ".",
        "",
    ]
    lines += engine_loads(spec)
    return "\n".join(lines)


def engine_loads(spec: Mapping[str, Any]) -> list[str]:
    """plan.md's statement of what one engine per model saves: each generate job pays a model
    load (`cluster.estimate_engine_load_minutes`, an assumption) on the job's GPUs."""
    minutes = spec["engine_load_minutes"]
    gpus: dict[tuple[str, str], int] = {}
    for job in spec["generate"]:
        gpus.setdefault((job["model"], job["method"]), max(1, job.get("gpus") or 0))
    evaluations = len(spec["generate"])
    per_benchmark_hours = sum(max(1, job.get("gpus") or 0) for job in spec["generate"]) * minutes / 60
    per_model_hours = sum(gpus.values()) * minutes / 60
    grouped = spec["generate_per"] == "model"
    jobs = len(gpus) if grouped else evaluations
    return [
        "## Engine loads",
        "",
        f"`evaluation.generate_per: {spec['generate_per']}`: {jobs} generate job(s) for {evaluations} evaluations"
        f" of {len(gpus)} (model, method) pair(s). At {minutes:g} min per load "
        "(`cluster.estimate_engine_load_minutes`, an assumption: see a job's `engine_load_seconds` in MLflow), "
        f"loading each model once costs {per_model_hours:,.1f} GPU-hours; one load per evaluation would cost "
        f"{per_benchmark_hours:,.1f}: "
        + (
            f"{per_benchmark_hours - per_model_hours:,.1f} GPU-hours saved"
            if grouped
            else f"{per_benchmark_hours - per_model_hours:,.1f} GPU-hours more than `generate_per: model`"
        )
        + ", before queue waits.",
        "",
    ]


def describe_graders(graders: list[dict]) -> str:
    """The graders as plan.md names them; the judge's jobs need its model (and a GPU, or a server)."""
    parts = []
    for grader in graders:
        judge = grader.get("judge")
        if judge is None:
            parts.append(f"{grader['name']} (CPU)")
        elif judge["engine"] == "openai":
            parts.append(
                f"{grader['name']} ({judge['model']} at {judge['endpoint']}, asked about answers the rules call wrong)"
            )
        else:
            parts.append(
                f"{grader['name']} ({judge['model']} on {judge['engine']}, resources.judge, asked about "
                "answers the rules call wrong)"
            )
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.plan` — write plan.md from the plan spec (config only)."""
    parser = stage_parser(main.__doc__)
    parser.add_argument("--output", required=True, type=Path)
    args, spec, _ = parse_stage_args(parser, argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render_plan(spec), encoding="utf-8")
    print(json.dumps({"train_jobs": len(spec["train"]), "generate_jobs": len(spec["generate"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
