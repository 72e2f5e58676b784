"""Model stage: one local Hugging Face model directory per configured model.

Three sources: a hub snapshot (the real `huggingface_hub` client; it works offline from a
pre-filled cache), an existing local directory (validated, not copied), or the demo model,
built offline and deterministically: a byte-level BPE tokenizer trained on the training
prompts plus a tiny random Qwen2. The stage writes a manifest (`model.json`: path, source,
revision, digests) that evaluation reads, so a rebuilt or re-downloaded model changes the
fingerprint that guards resumed evaluations.

Tokenizer pitfall (measured): with transformers 5, AutoTokenizer on a qwen2 folder returns
Qwen2Tokenizer, which re-applies Qwen's own normalizer and pre-tokenizer. The demo tokenizer is
trained with exactly that pipeline, so encodings do not change after a reload.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, results_root, stage_parser
from pipelines.provenance import file_sha256, portable_paths, resolved_paths, write_json_atomic

LOG = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
HUB_ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")

#: Qwen-style chat template; `default_system` is filled in per model (None = no system turn).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- set rest = messages[1:] -%}"
    "{%- else -%}"
    "{%- if DEFAULT_SYSTEM -%}{{- '<|im_start|>system\\n' + DEFAULT_SYSTEM + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- set rest = messages -%}"
    "{%- endif -%}"
    "{%- for message in rest -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


class ModelSourceError(RuntimeError):
    """A model that cannot be obtained or is not a usable Hugging Face directory."""


@dataclass(frozen=True)
class DemoModelSpec:
    """Architecture and seed of the offline demo model (a tiny random Qwen2)."""

    seed: int = 0
    """Seed of the weights (torch) — same seed and corpus, byte-identical files."""
    vocab_size: int = 512
    """BPE vocabulary size, special tokens included."""
    hidden_size: int = 64
    """Model width."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention, as in Qwen2)."""
    intermediate_size: int = 128
    """MLP width."""
    max_position_embeddings: int = 1024
    """Longest prompt + response the model accepts."""
    system_prompt: str | None = None
    """Default system message of the chat template (Qwen2.5-Math ships one); None = none."""
    warm_start_steps: int = 0
    """Supervised steps on (prompt, 'The answer is \\boxed{gold}.') before saving. A random model
    never emits a boxed answer, so every label-free reward would be equal and RL would have
    no signal; a short warm start gives it the format and varied answers."""
    warm_start_learning_rate: float = 3e-3
    """AdamW learning rate of the warm start."""
    noisy_steps: int = 0
    """Supervised steps after the warm start on answers of which `noisy_fraction` are replaced by
    other answers of the corpus, with a fresh optimizer. A cleanly warm-started model is right
    and sure of it; a half-trained one is confidently wrong (systematic errors), and EMPO then
    amplifies its majority, right or wrong. The noisy phase makes a model that is right on
    average with diffuse errors (maj@n clearly above mean@n): what label-free RL can improve."""
    noisy_fraction: float = 0.6
    """Share of noisy-phase answers replaced by a random answer of the corpus."""
    noisy_learning_rate: float = 1e-4
    """AdamW learning rate of the noisy phase."""

    @classmethod
    def from_source(cls, source: dict[str, Any], system_prompt: str | None = None) -> DemoModelSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in source.items() if k in known}, system_prompt=system_prompt)


def qwen2_tokenizer_pipeline():
    """An untrained tokenizer with Qwen2Tokenizer's normalizer, pre-tokenizer and decoder."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(
        BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_demo_tokenizer(corpus: Sequence[str], vocab_size: int):
    """Byte-level BPE on the corpus; every byte is in the alphabet, so any text encodes."""
    from tokenizers import pre_tokenizers, trainers

    tokenizer = qwen2_tokenizer_pipeline()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    return tokenizer


#: The demo model's response: the tokenizer is trained on it too, so an answer is a few tokens.
ANSWER_TEMPLATE = "The answer is \\boxed{{{answer}}}."


def tokenizer_corpus(
    prompts: Sequence[str], warm_start_examples: Sequence[tuple[str, str]] = (), system_prompt: str | None = None
) -> list[str]:
    """What the demo tokenizer is trained on: the prompts, and what every chat also carries.

    The warm-start responses: trained on prompts only, the answer template takes ~20 tokens and
    a short completion budget never reaches the boxed answer. The system prompt and the chat
    template's role lines once per prompt: without them they cost ~40 tokens per sequence, and
    every training step pays for them.
    """
    responses = [ANSWER_TEMPLATE.format(answer=answer) for _, answer in warm_start_examples]
    chat = ([system_prompt] if system_prompt else []) + ["system\n", "user\n", "assistant\n"]
    return list(prompts) + responses + chat * len(prompts)


def warm_start(model, tokenizer, examples: Sequence[tuple[str, str]], spec: DemoModelSpec) -> list[float]:
    """Cross-entropy on 'The answer is \\boxed{answer}.' responses only: `warm_start_steps` on the
    true answers, then `noisy_steps` (fresh AdamW) with `noisy_fraction` of the answers replaced
    by random corpus answers (see DemoModelSpec.noisy_steps for why).

    Returns the loss per step of both phases (logged by the model stage). Deterministic on CPU.
    """
    import torch
    from tqdm import tqdm

    if not examples or spec.warm_start_steps + spec.noisy_steps == 0:
        return []
    generator = torch.Generator().manual_seed(spec.seed)

    def encode_target(answer: str) -> list[int]:
        return tokenizer(ANSWER_TEMPLATE.format(answer=answer) + "<|im_end|>", add_special_tokens=False)["input_ids"]

    prefixes, targets = [], []
    for prompt, answer in examples:
        prefix = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        prefixes.append(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        targets.append(encode_target(answer))
    answers = sorted({answer for _, answer in examples})
    answer_targets = [encode_target(answer) for answer in answers]
    batch_size = 16

    def run_phase(steps: int, learning_rate: float, noisy_fraction: float, name: str) -> list[float]:
        # linear decay to zero: at the end of the phase the weights settle (a fixed learning
        # rate leaves the last steps' batches imprinted, and needs more steps to the same loss)
        if steps == 0:
            return []
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
        losses = []
        for _ in tqdm(range(steps), desc=name, mininterval=5):
            picks = torch.randint(len(prefixes), (batch_size,), generator=generator).tolist()
            noise = torch.rand(batch_size, generator=generator).tolist()
            others = torch.randint(len(answers), (batch_size,), generator=generator).tolist()
            pairs = [
                (prefixes[i], answer_targets[other] if draw < noisy_fraction else targets[i])
                for i, draw, other in zip(picks, noise, others)
            ]
            width = max(len(prefix) + len(target) for prefix, target in pairs)
            ids = torch.full((batch_size, width), tokenizer.pad_token_id)
            labels = torch.full((batch_size, width), -100)
            mask = torch.zeros((batch_size, width), dtype=torch.long)
            for row, (prefix, target) in enumerate(pairs):
                sequence = prefix + target
                ids[row, : len(sequence)] = torch.tensor(sequence)
                labels[row, len(prefix) : len(sequence)] = torch.tensor(target)
                mask[row, : len(sequence)] = 1
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
        return losses

    model.train()
    losses = run_phase(spec.warm_start_steps, spec.warm_start_learning_rate, 0.0, "warm start")
    losses += run_phase(spec.noisy_steps, spec.noisy_learning_rate, spec.noisy_fraction, "noisy phase")
    model.eval()
    return losses


def build_demo_model(
    output_dir: Path, corpus: Sequence[str], spec: DemoModelSpec, warm_start_examples: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """Build the demo model offline and deterministically; return its manifest."""
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    if not corpus:
        raise ModelSourceError("the demo model needs a non-empty corpus to train its tokenizer")
    output_dir = Path(output_dir)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    backend = train_demo_tokenizer(tokenizer_corpus(corpus, warm_start_examples, spec.system_prompt), spec.vocab_size)
    template = CHAT_TEMPLATE.replace("DEFAULT_SYSTEM", json.dumps(spec.system_prompt or ""))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = template
    tokenizer.model_max_length = spec.max_position_embeddings
    ids = {token: backend.token_to_id(token) for token in SPECIAL_TOKENS}

    torch.manual_seed(spec.seed)
    config = Qwen2Config(
        vocab_size=backend.get_vocab_size(),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
    )
    losses = warm_start(model, tokenizer, warm_start_examples, spec)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    _tag_qwen2_tokenizer(output_dir)
    validate_model_dir(output_dir)
    digests = {name: file_sha256(output_dir / name) for name in ("model.safetensors", "tokenizer.json", "config.json")}
    return {
        "kind": "demo",
        "path": str(output_dir.resolve()),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "spec": asdict(spec),
        "tokenizer_vocab_size": backend.get_vocab_size(),
        "corpus_size": len(corpus),
        "warm_start_loss": losses,
        "sha256": digests,
    }


def _tag_qwen2_tokenizer(output_dir: Path) -> None:
    """Record Qwen2Tokenizer as the class, as a real Qwen checkpoint does."""
    path = output_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def validate_model_dir(path: Path) -> None:
    """A directory evaluation can load: config, tokenizer and weights present and parseable."""
    path = Path(path)
    if not path.is_dir():
        raise ModelSourceError(f"model directory not found: {path}")
    missing = []
    config = path / "config.json"
    if not config.is_file():
        missing.append("config.json")
    else:
        try:
            json.loads(config.read_text())
        except ValueError as error:
            raise ModelSourceError(f"{config} is not valid JSON: {error}") from error
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        missing.append("a tokenizer (tokenizer.json or tokenizer_config.json)")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or *.bin)")
    missing.extend(_missing_shards(path))
    if missing:
        raise ModelSourceError(f"{path} is not a usable Hugging Face model directory: missing " + ", ".join(missing))


def _missing_shards(path: Path) -> list[str]:
    """Shards a sharded checkpoint's index lists but the folder lacks (an interrupted or partial
    download, e.g. an offline snapshot that holds only some files, still looks like a model)."""
    missing = []
    for index in sorted(path.glob("*.index.json")):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except ValueError as error:
            raise ModelSourceError(f"{index} is not valid JSON: {error}") from error
        missing += [f"shard {name} (listed in {index.name})" for name in sorted(shards) if not (path / name).is_file()]
    return missing


def make_group_readable(directory: Path) -> None:
    """transformers 5 writes model.safetensors owner-only (0600); models on a shared cluster
    folder must be readable by the group's other jobs and users."""
    for path in Path(directory).rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o044)


def resolve_local_model(path: Path) -> dict[str, Any]:
    validate_model_dir(Path(path))
    return {
        "kind": "local",
        "path": str(Path(path).resolve()),
        "sha256": {"config.json": file_sha256(Path(path) / "config.json")},
    }


def download_hub_model(
    hub_id: str, revision: str | None, allow_patterns: Sequence[str] | None = None
) -> dict[str, Any]:
    """Snapshot a hub model into the Hugging Face cache (HF_HOME; served from it when offline).

    The cache, not results/, holds the weights: a 7B model is not copied per project, and a
    cluster's shared HF_HOME is reused.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(
            repo_id=hub_id, revision=revision, allow_patterns=list(allow_patterns or HUB_ALLOW_PATTERNS)
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        raise ModelSourceError(
            f"could not download model '{hub_id}' (revision {revision or 'default'}): "
            f"{type(error).__name__}: {error}. Without network access, pre-download it into the "
            f"Hugging Face cache (HF_HOME) or use source: {{kind: local, path: ...}}"
        ) from error
    snapshot_path = Path(snapshot)
    validate_model_dir(snapshot_path)
    return {
        "kind": "hub",
        "hub_id": hub_id,
        "revision": revision,
        "resolved_revision": snapshot_path.name,
        "path": str(snapshot_path.resolve()),
        "sha256": {"config.json": file_sha256(snapshot_path / "config.json")},
    }


def load_model_and_tokenizer(
    path: str | Path, dtype: str = "float32", device: str = "cpu", revision: str | None = None
):
    """Model + tokenizer ready for batched generation (left padding); a local directory or a
    hub id (with its revision)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left", revision=revision)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, revision=revision).to(device)
    return model, tokenizer


def write_manifest(manifest: dict[str, Any], path: Path, results_root: str | Path | None = None) -> None:
    """Write a manifest; paths inside `results_root` are stored relative to the manifest's folder
    (provenance.portable_paths), so the results tree can move."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(portable_paths(manifest, path.parent, results_root), path)


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest with its paths absolute again (relative ones are read from its own folder)."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"cannot read model manifest {path}: {error}") from error
    if "path" not in manifest:
        raise ModelSourceError(f"model manifest {path} has no 'path'")
    return resolved_paths(manifest, Path(path).parent)


def prepare_model(spec: dict[str, Any], output: Path, corpus_files: Sequence[str]) -> dict[str, Any]:
    """The model of one config entry, as a manifest (see module docstring)."""
    source = spec["source"]
    if source["kind"] == "hub":
        return download_hub_model(source["hub_id"], source.get("revision"))
    if source["kind"] == "local":
        return resolve_local_model(Path(source["path"]))
    from pipelines.data import read_canonical

    rows = [row for file in corpus_files for row in read_canonical(file)]
    corpus = [row["prompt"][-1]["content"] for row in rows]
    examples = [(row["prompt"][-1]["content"], row["reward_model"]["ground_truth"]) for row in rows]
    demo = DemoModelSpec.from_source(source, system_prompt=spec.get("system_prompt"))
    return build_demo_model(output.parent / "hf", corpus, demo, warm_start_examples=examples)


def link_model_dir(model_dir: Path, link: Path) -> None:
    """results/models/<model>/base/hf reaches every base model (a link to the hub snapshot or
    the local folder; the demo model is built there), so a verl command can name it before the
    model is downloaded."""
    if link.exists() and not link.is_symlink() and link.resolve() == model_dir.resolve():
        return  # built in place (demo)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise ModelSourceError(f"{link} is a folder of another model; remove it")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(model_dir.resolve(), target_is_directory=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.models` — one model to results/models/<model>/base/model.json."""
    from pipelines import tracking

    parser = stage_parser(main.__doc__)
    parser.add_argument("--output", required=True, type=Path, help="manifest path")
    parser.add_argument("--corpus", nargs="*", default=[], help="canonical parquet(s) for the demo tokenizer")
    args, spec, tracking_config = parse_stage_args(parser, argv)
    corpus_files = [c for c in args.corpus if c]
    with tracking.job_run(tracking_config, "model", spec["name"], spec, log_file=args.log_file) as tracker:
        manifest = prepare_model(spec, args.output, corpus_files)
        link_model_dir(Path(manifest["path"]), args.output.parent / "hf")
        write_manifest(manifest, args.output, results_root(tracking_config))
        LOG.info("model %s ready at %s", spec["name"], manifest["path"])
        if "num_parameters" in manifest:
            tracker.log_metrics({"num_parameters": manifest["num_parameters"]})
        if manifest.get("warm_start_loss"):
            tracker.log_metric_series("warm_start_loss", manifest["warm_start_loss"])
        tracker.set_tags({"model.path": manifest["path"], "model.kind": manifest["kind"]})
        tracker.log_artifact(args.output, "model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
