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

Modules: `engines` (hf, vllm, the engine cache), `store` (the resume store), `run` (the job and its
CLI, `python -m pipelines.generate`)."""

from pipelines.generate.engines import (
    Completion,
    Engine,
    EngineCache,
    GenerationError,
    HFEngine,
    VLLMEngine,
    cut_at_stop,
    engine_key,
    make_engine,
    vllm_engine_kwargs,
)
from pipelines.generate.run import (
    chunk_items,
    generate_evaluations,
    generation_counts,
    left_truncated,
    main,
    options_of,
    protocol_of,
    question_of,
    render_prompt,
    run_generation,
    selected_jobs,
    upstream_runs,
)
from pipelines.generate.store import GenerationStore

__all__ = [
    "Completion",
    "Engine",
    "EngineCache",
    "GenerationError",
    "GenerationStore",
    "HFEngine",
    "VLLMEngine",
    "chunk_items",
    "cut_at_stop",
    "engine_key",
    "generate_evaluations",
    "generation_counts",
    "left_truncated",
    "main",
    "make_engine",
    "options_of",
    "protocol_of",
    "question_of",
    "render_prompt",
    "run_generation",
    "selected_jobs",
    "upstream_runs",
    "vllm_engine_kwargs",
]
