"""A tiny Qwen2 model and byte-level BPE tokenizer with a chat template, built offline and
deterministically (the verl and vLLM test environments; the main suite uses the demo model)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_qwen2(
    path: Path | str,
    attention_heads: int,
    kv_heads: int,
    max_length: int,
    vocab_size: int | None = None,
    extra_corpus: tuple[str, ...] = (),
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
) -> str:
    """A ~0.1 M-parameter Qwen2 (hidden 64, 2 layers by default) saved with its tokenizer in float32.

    `vocab_size` None = the tokenizer's own size, so every id an engine samples decodes; head
    size = 64 / attention_heads (vLLM's CPU attention needs at least 32). `extra_corpus` joins
    the tokenizer's training text (e.g. a verifier's "Final Decision: Yes" so " Yes" is one token)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        [
            "The answer is \\boxed{42}. So x = 3/4 and y = 12.",
            "Let us compute 1 + 2 = 3, hence \\boxed{3}.",
            *extra_corpus,
        ]
        * 20,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=max_length
    )
    wrapped.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size or len(wrapped),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=attention_heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_length,
        tie_word_embeddings=False,
        eos_token_id=wrapped.eos_token_id,
        pad_token_id=wrapped.pad_token_id,
        bos_token_id=None,
    )
    Qwen2ForCausalLM(config).to(torch.float32).save_pretrained(path)
    wrapped.save_pretrained(path)
    return str(path)


def make_opinionated_verifier(path: str, prompts: list[str]) -> None:
    """Turn a random tiny model into one whose Yes/No decision depends on the answers: a random
    model's last hidden state barely moves with them (every prompt ends alike), so its decision
    is the same for all. Set the Yes row of its output layer to the No row plus the direction
    along which these prompts' last hidden states differ most, centred on their mean."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.judge import decision_token_ids

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    captured = []
    hook = model.lm_head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0][0, -1]))
    with torch.inference_mode():
        for prompt in prompts:
            model(tokenizer(prompt, return_tensors="pt").input_ids)
    hook.remove()
    states = torch.stack(captured)
    mean = states.mean(0)
    direction = torch.linalg.svd(states - mean, full_matrices=False).Vh[0]
    yes, no = decision_token_ids(tokenizer, " Yes", " No")
    with torch.no_grad():
        weight = model.lm_head.weight
        # margin(h) = (w_yes - w_no) . h = scale * direction . (h - mean)
        scale = 50.0 / float((states - mean).matmul(direction).abs().max())
        weight[yes] = weight[no] + scale * (direction - direction.dot(mean) * mean / mean.dot(mean))
    model.save_pretrained(path)
