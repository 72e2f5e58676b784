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

Modules: `sources` (hub, local, loading), `demo` (the offline demo build), `manifest`, `stage`
(the job; `python -m pipelines.models`)."""

from pipelines.models.demo import (
    ANSWER_TEMPLATE,
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    DemoModelSpec,
    build_demo_model,
    qwen2_tokenizer_pipeline,
    tokenizer_corpus,
    train_demo_tokenizer,
    warm_start,
)
from pipelines.models.manifest import (
    read_manifest,
    write_manifest,
)
from pipelines.models.sources import (
    HUB_ALLOW_PATTERNS,
    WEIGHT_PATTERNS,
    ModelSourceError,
    download_hub_model,
    load_model_and_tokenizer,
    make_group_readable,
    resolve_local_model,
    validate_model_dir,
)
from pipelines.models.stage import (
    link_model_dir,
    main,
    prepare_model,
)

__all__ = [
    "ANSWER_TEMPLATE",
    "CHAT_TEMPLATE",
    "DemoModelSpec",
    "HUB_ALLOW_PATTERNS",
    "ModelSourceError",
    "SPECIAL_TOKENS",
    "WEIGHT_PATTERNS",
    "build_demo_model",
    "download_hub_model",
    "link_model_dir",
    "load_model_and_tokenizer",
    "main",
    "make_group_readable",
    "prepare_model",
    "qwen2_tokenizer_pipeline",
    "read_manifest",
    "resolve_local_model",
    "tokenizer_corpus",
    "train_demo_tokenizer",
    "validate_model_dir",
    "warm_start",
    "write_manifest",
]
