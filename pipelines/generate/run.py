"""One generate job: every selected evaluation of a (model, method), each with its prompts,
chunks, seeds, resume store, generation.json and MLflow run; `python -m pipelines.generate`."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, stage_parser
from pipelines.data import read_canonical
from pipelines.generate.engines import Engine, EngineCache, GenerationError, engine_key, make_engine
from pipelines.generate.store import GenerationStore
from pipelines.provenance import file_sha256, fingerprint, git_commit, package_versions, write_json_atomic

LOG = logging.getLogger(__name__)


def upstream_runs(manifest: Mapping[str, Any], data_path: Path) -> dict[str, str]:
    """MLflow tags linking a generation run to the runs that made its inputs: the model's
    training run (trained models) and the dataset's data run (its summary sits beside it)."""
    links = {}
    if manifest.get("training_run_id"):
        links["training_run_id"] = str(manifest["training_run_id"])
    summary = Path(data_path).with_name(Path(data_path).name.replace(".parquet", ".summary.json"))
    try:
        run_id = json.loads(summary.read_text()).get("mlflow_run_id")
    except (OSError, ValueError):
        run_id = None
    if run_id:
        links["dataset_run_id"] = str(run_id)
    return links


def options_of(row: Mapping[str, Any]) -> dict[str, list[str]]:
    """{"options": [...]} for a multiple-choice row (the choice-letter grader reads them), else {}."""
    options = (row.get("extra_info") or {}).get("options")
    return {"options": list(options)} if options else {}


def question_of(row: Mapping[str, Any]) -> str:
    """The benchmark question as written (the last user message), for graders that read it."""
    return next((m["content"] for m in reversed(row["prompt"]) if m["role"] == "user"), "")


def render_prompt(messages: Sequence[Mapping[str, str]], tokenizer: Any, prompt: Mapping[str, Any]) -> str:
    """The model input text for one canonical prompt, per the configured prompt format."""
    if prompt["format"] == "plain":
        return "\n\n".join(m["content"] for m in messages if m["role"] == "user")
    if not getattr(tokenizer, "chat_template", None):
        raise GenerationError(
            "prompt.format is 'chat' but the model's tokenizer has no chat template; "
            "set prompt.format: plain for this model (models.<name>.prompt)"
        )
    conversation = [dict(m) for m in messages]
    if prompt.get("system_prompt") is not None:
        conversation = [
            {"role": "system", "content": prompt["system_prompt"]},
            *[m for m in conversation if m["role"] != "system"],
        ]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def left_truncated(prompt: str, tokenizer: Any, max_tokens: int | None) -> tuple[str | list[int], int]:
    """The model input and how many tokens were cut: with `max_tokens`, a longer input keeps
    only its last `max_tokens` tokens (verl's dataset, truncation 'left') and goes to the engine
    as token ids, so no decode/encode round trip changes it."""
    if not max_tokens:
        return prompt, 0
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt, 0
    return list(ids[-max_tokens:]), len(ids) - max_tokens


def protocol_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """How the generations were produced, except the model and the data (the grader is
    recorded by each grade job)."""
    return {
        "name": spec["protocol_name"],
        "engine": spec["engine"],
        "dtype": spec["dtype"],
        "prompt": dict(spec["prompt"]),
        "decoding": dict(spec["decoding"]),
        "chunk_size": spec["batch_size"],
    }


def chunk_items(count: int, chunk_size: int) -> list[range]:
    return [range(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]


def generation_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    counts = {
        "items": len({int(r["index"]) for r in records}),
        "samples": len(records),
        "truncated": sum(r["finish_reason"] == "length" for r in records),
        "mean_response_tokens": sum(int(r["response_tokens"]) for r in records) / max(1, len(records)),
    }
    if any("prompt_tokens_cut" in r for r in records):  # prompt.max_prompt_tokens set
        counts["prompts_cut"] = len({int(r["index"]) for r in records if r.get("prompt_tokens_cut")})
    return counts


def run_generation(
    spec: Mapping[str, Any],
    manifest: Mapping[str, Any],
    data_path: Path,
    generations_path: Path,
    record_path: Path,
    tracker: Any = None,
    threads: int | None = None,
    engine: Engine | None = None,
    engines: EngineCache | None = None,
    keep_partial: bool = False,
) -> dict[str, Any]:
    """Generate (resuming), then write generations.jsonl and its record; return the record.
    `engines` shares one engine across calls; `keep_partial` leaves the resume file in place."""
    from tqdm import tqdm

    started = time.time()
    rows = read_canonical(data_path)
    dataset_digest = file_sha256(data_path)
    decoding = spec["decoding"]
    n = decoding["n"]
    protocol = protocol_of(spec)
    run_fingerprint = fingerprint({"protocol": protocol, "model": manifest, "data": dataset_digest})
    chunks = chunk_items(len(rows), spec["batch_size"])
    expected = {k: {(i, s) for i in chunk for s in range(n)} for k, chunk in enumerate(chunks)}
    store = GenerationStore(generations_path, run_fingerprint)
    done = store.load(expected)
    store.start()
    todo = [k for k in range(len(chunks)) if k not in done]
    if done:
        LOG.info("resuming: %d of %d chunks already generated", len(done), len(chunks))
    items_done = sum(len(chunks[k]) for k in done)
    if todo:
        if engine is None:
            engine = engines.get(spec, manifest["path"]) if engines else make_engine(spec, manifest["path"], threads)
        progress = tqdm(
            total=len(rows),
            initial=items_done,
            unit="item",
            mininterval=2.0,
            desc=f"{spec['model']}/{spec['method']}/{spec['benchmark']}/{spec['protocol_name']}",
        )
        for k in todo:
            chunk_rows = [rows[i] for i in chunks[k]]
            prompts = [render_prompt(row["prompt"], engine.tokenizer, spec["prompt"]) for row in chunk_rows]
            max_prompt_tokens = spec["prompt"].get("max_prompt_tokens")
            inputs, cut = zip(*(left_truncated(p, engine.tokenizer, max_prompt_tokens) for p in prompts))
            seeds = (
                [decoding["seed"] + k] * len(prompts)
                if spec["engine"] == "hf"
                else [decoding["seed"] + i for i in chunks[k]]
            )
            completions = engine.generate(list(inputs), decoding, seeds)
            records = [
                {
                    "index": i,
                    "sample": s,
                    "chunk": k,
                    "question": question_of(row),
                    "prompt": prompt,
                    "response": c.text,
                    "gold": row["reward_model"]["ground_truth"],
                    "prompt_tokens": c.prompt_tokens,
                    "response_tokens": c.response_tokens,
                    "finish_reason": c.finish_reason,
                    **({"prompt_tokens_cut": dropped} if max_prompt_tokens else {}),
                    **options_of(row),
                }
                for i, prompt, row, samples, dropped in zip(chunks[k], prompts, chunk_rows, completions, cut)
                for s, c in enumerate(samples)
            ]
            store.append_chunk(records)
            done[k] = records
            items_done += len(chunks[k])
            progress.update(len(chunks[k]))
            if tracker is not None:
                tracker.log_metrics({"items_done": items_done}, step=items_done)
        progress.close()
    records = [r for k in sorted(done) for r in done[k]]
    result = {
        "model": spec["model"],
        "method": spec["method"],
        "benchmark": spec["benchmark"],
        "protocol_name": spec["protocol_name"],
        "protocol": protocol,
        "protocol_id": fingerprint(protocol, length=8),
        "counts": generation_counts(records),
        "model_manifest": dict(manifest),
        "dataset": {"path": str(data_path), "sha256": dataset_digest, "rows": len(rows)},
        "generations_sha256": None,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_seconds": round(time.time() - started, 2),
        "mlflow_run_id": getattr(tracker, "run_id", None),
        "runtime": {
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "hostname": os.uname().nodename,
        },
    }
    # record first (as .tmp), then the generations, then the record: no torn pair on a kill
    result["generations_sha256"] = file_sha256(store.partial_path)
    record_tmp = record_path.with_name(record_path.name + ".tmp")
    write_json_atomic(result, record_tmp)
    store.finalize(keep_partial=keep_partial)
    record_tmp.replace(record_path)
    LOG.info(
        "%s/%s on %s (%s): %d items, %d samples, %d truncated",
        spec["model"],
        spec["method"],
        spec["benchmark"],
        spec["protocol_name"],
        result["counts"]["items"],
        result["counts"]["samples"],
        result["counts"]["truncated"],
    )
    return result


def selected_jobs(spec: Mapping[str, Any], generations: Sequence[Path]) -> list[dict[str, Any]]:
    """The jobs of a model spec (`{"model", "method", "jobs": [...]}`) whose generations files
    Snakemake asked for, in the spec's order; a path the spec does not know is an error."""
    by_path = {os.path.abspath(job["generations"]): job for job in spec["jobs"]}
    unknown = [str(path) for path in generations if os.path.abspath(path) not in by_path]
    if unknown:
        raise GenerationError(f"no job of {spec['model']}/{spec['method']} in the spec writes {', '.join(unknown)}")
    wanted = {os.path.abspath(path) for path in generations}
    return [job for job in spec["jobs"] if os.path.abspath(job["generations"]) in wanted]


def generate_evaluations(
    jobs: Sequence[Mapping[str, Any]],
    manifest: Mapping[str, Any],
    tracking_config: Mapping[str, Any] | None,
    log_file: str | None,
    threads: int | None,
) -> EngineCache:
    """Each job's generations with its own MLflow run, the engine shared while its settings
    stay the same; resume files are removed only once all are written."""
    from pipelines import tracking

    engines = EngineCache(threads)
    stores = []
    for job in sorted(
        jobs, key=lambda job: engine_key(job["spec"], manifest["path"])
    ):  # stable: spec order within a key
        spec = job["spec"]
        data, generations, record = Path(job["data"]), Path(job["generations"]), Path(job["record"])
        name = f"{spec['model']}/{spec['method']}/{spec['benchmark']}/{spec['protocol_name']}"
        with tracking.job_run(tracking_config, "generate", name, spec, log_file=log_file) as tracker:
            tracker.set_tags(
                {
                    "model": spec["model"],
                    "method": spec["method"],
                    "benchmark": spec["benchmark"],
                    "protocol": spec["protocol_name"],
                }
            )
            tracker.link_runs(upstream_runs(manifest, data))
            loads, load_seconds = engines.loads, engines.load_seconds
            result = run_generation(
                spec, manifest, data, generations, record, tracker=tracker, engines=engines, keep_partial=True
            )
            tracker.log_metrics({f"count.{k}": v for k, v in result["counts"].items()})
            tracker.log_metrics(
                {
                    "engine_loads": engines.loads - loads,
                    "engine_load_seconds": round(engines.load_seconds - load_seconds, 2),
                }
            )
            tracker.set_tags({"protocol_id": result["protocol_id"]})
            tracker.log_artifact(record, "generate")
            tracker.log_artifact(generations, "generate")
        stores.append(GenerationStore(generations, ""))
    for store in stores:
        store.discard_partial()
    LOG.info("%d evaluation(s), %d engine load(s) (%.1f s)", len(jobs), engines.loads, engines.load_seconds)
    return engines


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.generate` — one model (and method) on the benchmarks and protocols
    of its spec whose generations files are named (all of them, or one)."""
    from pipelines.models import read_manifest

    parser = stage_parser(main.__doc__)
    parser.add_argument("--model-manifest", required=True, type=Path)
    parser.add_argument(
        "--generations",
        required=True,
        type=Path,
        nargs="+",
        help="the generations.jsonl files to write: jobs of the spec, by path",
    )
    parser.add_argument("--data", type=Path, default=None, help="a one-job spec (no `jobs` list): its dataset")
    parser.add_argument("--record", type=Path, default=None, help="a one-job spec: its generation.json")
    parser.add_argument("--threads", type=int, default=None)
    args, spec, tracking_config = parse_stage_args(parser, argv)
    manifest = read_manifest(args.model_manifest)
    if "jobs" in spec:
        jobs = selected_jobs(spec, args.generations)
    else:  # one job typed by hand: `--spec <job spec> --data ... --generations ... --record ...`
        if args.data is None or args.record is None or len(args.generations) != 1:
            parser.error("a one-job spec needs --data, --record and one --generations")
        jobs = [{"spec": spec, "data": args.data, "generations": args.generations[0], "record": args.record}]
    generate_evaluations(jobs, manifest, tracking_config, args.log_file, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
