"""Model stage: the offline demo build, local directories, and the real hub client offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import models
from tests.conftest import REPO_ROOT

CORPUS = [
    json.loads(line)["problem"]
    for line in (REPO_ROOT / "config" / "demo_data" / "arith_train.jsonl").read_text().splitlines()
]
MATHS = [
    "What is $x^2$ if x = 3? Put it in \\boxed{}.",
    "π ≈ 3.14159, \\frac{1}{2} + 0.5 = 1",
    "Let's think step by step and output the final answer within \\boxed{}.",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("demo-model")
    spec = models.DemoModelSpec(seed=0, system_prompt="Reason, then box.")
    return models.build_demo_model(root / "a", CORPUS, spec)


def test_build_is_deterministic_and_seeded(built, tmp_path):
    again = models.build_demo_model(
        tmp_path / "b", CORPUS, models.DemoModelSpec(seed=0, system_prompt="Reason, then box.")
    )
    assert again["sha256"] == built["sha256"]
    other = models.build_demo_model(
        tmp_path / "c", CORPUS, models.DemoModelSpec(seed=1, system_prompt="Reason, then box.")
    )
    assert other["sha256"]["model.safetensors"] != built["sha256"]["model.safetensors"]
    assert other["sha256"]["tokenizer.json"] == built["sha256"]["tokenizer.json"]
    assert 10_000 < built["num_parameters"] < 1_000_000


def test_reloaded_tokenizer_encodes_like_the_trained_one(built):
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(built["path"])
    assert type(reloaded).__name__ == "Qwen2Tokenizer"
    trained = models.train_demo_tokenizer(
        models.tokenizer_corpus(CORPUS, system_prompt="Reason, then box."), models.DemoModelSpec().vocab_size
    )
    for text in MATHS + CORPUS[:20]:
        assert reloaded(text, add_special_tokens=False)["input_ids"] == trained.encode(text).ids
        assert reloaded.decode(reloaded(text)["input_ids"]) == text


def test_chat_template_uses_the_default_system_prompt_unless_given(built):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built["path"])
    user = [{"role": "user", "content": "1+1?"}]
    text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nReason, then box.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
    )
    own = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, *user], tokenize=False, add_generation_prompt=False
    )
    assert own == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n"
    assert tokenizer.encode("<|im_end|>", add_special_tokens=False) == [tokenizer.eos_token_id]


def test_batched_left_padded_generation(built):
    import torch

    model, tokenizer = models.load_model_and_tokenizer(built["path"], dtype="float32")
    assert tokenizer.padding_side == "left"
    batch = tokenizer(
        ["What is 1 + 1?", "Compute $3 \\times 4$. Be brief please.", "Hi"], return_tensors="pt", padding=True
    )
    with torch.inference_mode():
        output = model.generate(**batch, max_new_tokens=16, do_sample=False)
    assert output.shape[0] == 3 and output.shape[1] <= batch["input_ids"].shape[1] + 16
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]


def test_local_directories_are_validated(built, tmp_path):
    assert models.resolve_local_model(Path(built["path"]))["path"] == built["path"]
    broken = tmp_path / "broken"
    shutil.copytree(built["path"], broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(models.ModelSourceError, match="missing weights"):
        models.resolve_local_model(broken)
    (broken / "config.json").unlink()
    with pytest.raises(models.ModelSourceError, match="missing config.json, weights"):
        models.resolve_local_model(broken)
    with pytest.raises(models.ModelSourceError, match="not found"):
        models.resolve_local_model(tmp_path / "absent")


def test_a_sharded_model_missing_a_shard_is_refused(built, tmp_path):
    sharded = tmp_path / "sharded"
    shutil.copytree(built["path"], sharded)
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "lm_head.weight": "model-00002-of-00002.safetensors",
                    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                }
            }
        )
    )
    with pytest.raises(models.ModelSourceError, match="shard model-00002-of-00002.safetensors"):
        models.validate_model_dir(sharded)
    (sharded / "model-00002-of-00002.safetensors").write_bytes(b"")
    models.validate_model_dir(sharded)


def _download_offline(hub_id: str, cache: Path) -> subprocess.CompletedProcess:
    """The real hub client in a fresh process, offline, against a given cache."""
    code = (
        "import json, sys; from pipelines.models import download_hub_model, ModelSourceError\n"
        f"try: print(json.dumps(download_hub_model({hub_id!r}, None)))\n"
        "except ModelSourceError as e: print('ERROR', e); sys.exit(3)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_HOME": str(cache.parent),
        "PYTHONPATH": str(REPO_ROOT),
    }
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_hub_download_works_offline_from_a_filled_cache(built, tmp_path):
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--org--tiny"
    shutil.copytree(built["path"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    result = _download_offline("org/tiny", cache)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads(result.stdout.strip().splitlines()[-1])
    assert manifest["kind"] == "hub" and manifest["resolved_revision"] == commit
    assert Path(manifest["path"]) == (repo / "snapshots" / commit).resolve()


def test_hub_download_offline_without_cache_names_the_model(tmp_path):
    result = _download_offline("nobody/absent-model", tmp_path / "hub")
    assert result.returncode == 3
    assert "could not download model 'nobody/absent-model'" in result.stdout
    assert "kind: local" in result.stdout


def test_manifest_round_trip_and_bad_manifest(tmp_path, built):
    models.write_manifest(built, tmp_path / "m" / "model.json")
    assert models.read_manifest(tmp_path / "m" / "model.json") == built
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(models.ModelSourceError, match="no 'path'"):
        models.read_manifest(tmp_path / "bad.json")


def test_manifests_store_paths_inside_the_results_tree_relative_to_themselves(tmp_path):
    root = tmp_path / "results"
    model_dir = root / "models" / "m" / "empo" / "hf"
    base_dir = root / "models" / "m" / "base" / "hf"
    hub_cache = tmp_path / "hf-cache" / "snapshots" / "abc"
    for folder in (model_dir, base_dir, hub_cache):
        folder.mkdir(parents=True)
    manifest = {
        "kind": "trained",
        "path": str(model_dir),
        "base": {"kind": "demo", "path": str(base_dir)},
        "actor_checkpoint": str(root / "train" / "m" / "empo" / "global_step_2" / "actor"),
        "hub": {"path": str(hub_cache)},
        "note": str(model_dir),
    }
    target = root / "models" / "m" / "empo" / "model.json"
    models.write_manifest(manifest, target, results_root=str(root))
    stored = json.loads(target.read_text())
    assert stored["path"] == "hf" and stored["base"]["path"] == "../base/hf"
    assert stored["actor_checkpoint"] == "../../../train/m/empo/global_step_2/actor"
    assert stored["hub"]["path"] == str(hub_cache)  # outside the tree: as it was
    assert stored["note"] == str(model_dir)  # not a path key
    moved = tmp_path / "elsewhere" / "results"
    shutil.move(str(root), moved)
    back = models.read_manifest(moved / "models" / "m" / "empo" / "model.json")
    assert back["path"] == str(moved / "models" / "m" / "empo" / "hf")
    assert back["base"]["path"] == str(moved / "models" / "m" / "base" / "hf")
    assert back["hub"]["path"] == str(hub_cache)
    # without a known results root (a manual run) nothing is rewritten
    models.write_manifest(manifest, tmp_path / "plain.json")
    assert json.loads((tmp_path / "plain.json").read_text()) == manifest


def test_the_noisy_phase_follows_the_warm_start_and_is_deterministic(tmp_path):
    """Clean steps, then steps on partly replaced answers (fresh optimizer): one loss per step,
    the same bytes for the same spec, other weights when answers are replaced."""
    examples = [(f"What is {a} + {b}?", str(a + b)) for a in range(6) for b in range(6)]
    prompts = [prompt for prompt, _ in examples]

    def build(name: str, **settings) -> dict:
        spec = models.DemoModelSpec(seed=0, warm_start_steps=4, noisy_steps=3, **settings)
        return models.build_demo_model(tmp_path / name, prompts, spec, warm_start_examples=examples)

    noisy = build("a", noisy_fraction=0.6)
    assert len(noisy["warm_start_loss"]) == 7
    assert build("b", noisy_fraction=0.6)["sha256"] == noisy["sha256"]
    clean = build("c", noisy_fraction=0.0)
    assert clean["warm_start_loss"][:4] == noisy["warm_start_loss"][:4]  # the clean phase is shared
    assert clean["sha256"]["model.safetensors"] != noisy["sha256"]["model.safetensors"]


def test_the_tokenizer_learns_the_answer_template_and_the_chat_roles():
    examples = [(f"What is {a} + {b}?", str(a + b)) for a in range(10) for b in range(10)]
    prompts = [p for p, _ in examples]
    learnt = models.train_demo_tokenizer(models.tokenizer_corpus(prompts, examples), 512)
    prompts_only = models.train_demo_tokenizer(prompts, 512)
    for text in ("The answer is \\boxed{12}.", "assistant\n"):
        assert len(learnt.encode(text).ids) < len(prompts_only.encode(text).ids) // 2
    assert len(learnt.encode("assistant\n").ids) <= 2
