"""Tests that need verl itself: run in the verl virtualenv (`make test-verl`).

In the main environment (no verl) every module here skips at import with that reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def verl_config_dir() -> str:
    verl = pytest.importorskip("verl", reason="verl is not installed here; run `make test-verl`")
    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


@pytest.fixture(scope="session")
def compose_verl(verl_config_dir):
    """Compose verl's own `ppo_trainer` config with our overrides (struct mode: unknown keys fail)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def run(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=verl_config_dir, version_base=None):
            return compose(config_name="ppo_trainer", overrides=list(overrides))

    return run


def tiny_base_model(path: Path) -> Path:
    """A 0.14 M-parameter Qwen2 model and a byte-level BPE tokenizer, built offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        ["The answer is \\boxed{42}. So x = 3/4 and y = 12.", "Let us compute 1 + 2 = 3, hence \\boxed{3}."] * 20,
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                      pad_token="<|endoftext|>")
    wrapped.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, eos_token_id=wrapped.eos_token_id,
                         pad_token_id=wrapped.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(path)
    wrapped.save_pretrained(path)
    return path
