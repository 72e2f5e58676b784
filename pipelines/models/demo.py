"""The demo model, built offline and deterministically: a byte-level BPE tokenizer trained on
the training prompts (Qwen's own normalizer and pre-tokenizer) and a tiny Qwen2, warm-started
to answer in \\boxed{} and then made noisy (see README, "the demo")."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pipelines.models.sources import ModelSourceError, validate_model_dir
from pipelines.provenance import file_sha256

LOG = logging.getLogger(__name__)


SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


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
