"""An LLM judge: a model asked whether a response's answer matches the gold, as the authors
graded with xVerify after their rules (QingyangZhang/EMPO,
verl-empo/verl/utils/reward_score/empo_verify.py, `grade_answer_xverify`).

One prompt per (question, response, gold), the judge's greedy reply parsed into a verdict:
True, False, or None when the reply says neither (counted by the grade stage, never guessed).
Three ways to run the judge model, chosen in `evaluation.llm_judge.engine`:
- `hf`: transformers on CPU or one GPU, batched (left padding);
- `vllm`: vLLM's offline engine on the job's GPUs (pipelines.generate's engine);
- `openai`: an OpenAI-compatible chat-completions server (what the authors ran).
Prompts and replies go through the model's chat template in every engine (an OpenAI server
applies it itself), so the three engines ask the same question.

The same machinery (model loading, the vLLM engine, the OpenAI-compatible client) serves the
*semantic judge* of the natural-reasoning track: `EquivalenceJudge` asks a verifier model
(default TIGER-Lab/general-verifier, the authors' choice) whether two free-form answers to a
question are equivalent, read from its next-token "Yes"/"No" scores after the authors' raw
prompt (QingyangZhang/EMPO, trl/src/open_r1/semantic_uncertainty.py,
`GeneralVerifier.check_implication`). Training rewards cluster a group's answers with it
(`pipelines.rewards.core.judge_cluster_ids`), many pairs per forward pass.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)

#: The authors' xVerify prompt (empo_verify.py, `grade_answer_xverify`), verbatim: their layout,
#: their fifth rule and their spelling; filled with the question, the extracted answer and the gold.
XVERIFY_PROMPT = (
    "\nYou are a diligent and precise assistant tasked with evaluating the correctness of responses. You will\n"
    "receive a question, an output sentence, and the correct answer. Your task is to determine if the output\n"
    "sentence accurately answers the question based on the provided correct answer. Respond with either\n"
    "[Correct] or [Incorrect].\n"
    "-\n"
    "Special considerations:\n"
    "1. **Multiple Answers**: If the output contains multiple answers, evaluate whether later answers\n"
    "modify or correct earlier ones. In such cases, compare the final answer with the correct answer. If the\n"
    "final answer is unclear or incorrect, respond with [Incorrect].\n"
    "2. **Mathematical Problems**: If the formats differ but the answers are mathematically equivalent such as 256/55=4.65,\n"  # noqa: E501 (the authors' prompt, byte for byte)
    "respond with [Correct].\n"
    "3. **Phycis Problems**: If the values match such as 3=3 \\, \\text{{GHz}} return [Correct].\n"
    "4. **Explicit Options**: If the question provides explicit candidate answers, the output will be\n"
    "considered correct if it clearly indicates the correct option\u2019s code or the correct option\u2019s content.\n"
    "5. **No Explicit Options**: If the question does not provide explicit options, the output must align\n"
    "with the correct answer in content and meaning to be considered [Correct].\n"
    "-\n"
    'Question: """{question}"""\n'
    'Output sentence: """{output}"""\n'
    'Correct answer: """{answer}"""\n'
    "Judgement:\n"
)

#: Replies read as a verdict, exactly as the authors read them (after strip, case-sensitive).
CORRECT_REPLIES = ("Correct", "[Correct]")
INCORRECT_REPLIES = ("Incorrect", "[Incorrect]")


@dataclass(frozen=True)
class JudgeVerdict:
    verdict: bool | None  # None: the reply says neither correct nor incorrect
    raw: str


def render_judge_prompt(question: str, output: str, answer: str) -> str:
    return XVERIFY_PROMPT.format(question=question, output=output, answer=answer)


def parse_verdict(reply: str) -> bool | None:
    """True for the authors' two correct replies, False for the two incorrect ones, None for
    anything else (they score it wrong; the grade stage does too, and counts it)."""
    reply = (reply or "").strip()
    if reply in CORRECT_REPLIES:
        return True
    if reply in INCORRECT_REPLIES:
        return False
    return None


class Judge:
    """Prompts in, verdicts out, through one completion backend."""

    def __init__(self, complete: Callable[[Sequence[str]], list[str]], batch_size: int, name: str):
        self.complete = complete
        self.batch_size = batch_size
        self.name = name
        self.calls = 0

    def judge_many(
        self, questions: Sequence[str], outputs: Sequence[str], answers: Sequence[str]
    ) -> list[JudgeVerdict]:
        from tqdm import tqdm

        prompts = [render_judge_prompt(q, o, a) for q, o, a in zip(questions, outputs, answers, strict=True)]
        verdicts: list[JudgeVerdict] = []
        with tqdm(total=len(prompts), unit="answer", desc=f"judge {self.name}", mininterval=2.0) as bar:
            for start in range(0, len(prompts), self.batch_size):
                replies = self.complete(prompts[start : start + self.batch_size])
                self.calls += len(replies)
                verdicts += [JudgeVerdict(parse_verdict(reply), reply) for reply in replies]
                bar.update(len(replies))
        return verdicts


def load_judge_model(model: str, revision: str | None, dtype: str, device: str) -> tuple[Any, Any]:
    """A judge model in eval mode and its tokenizer for left-padded batches (both judges' hf
    engines); `auto` dtype is float32 on the CPU."""
    from pipelines.models import load_model_and_tokenizer

    if dtype == "auto" and device == "cpu":
        dtype = "float32"
    loaded, tokenizer = load_model_and_tokenizer(model, dtype=dtype, device=device, revision=revision)
    loaded.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return loaded, tokenizer


#: The seed of a sampling judge (temperature > 0): each batch (hf) or request (vllm, openai)
#: samples from it, so a rerun gives the same verdicts.
JUDGE_SEED = 0


class HFCompletion:
    """Chat completions with transformers (CPU or one GPU), left-padded batches; greedy at
    temperature 0, else sampled at it (seeded per batch)."""

    def __init__(self, model: str, revision: str | None, dtype: str, max_new_tokens: int, temperature: float = 0.0):
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer = load_judge_model(model, revision, dtype, self.device)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        import torch

        texts = [chat_text(self.tokenizer, prompt) for prompt in prompts]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = self.temperature > 0
        if sampling:
            torch.manual_seed(JUDGE_SEED)
        with torch.inference_mode():
            output = self.model.generate(
                **encoded,
                do_sample=sampling,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                top_p=1.0,
                top_k=0,
                temperature=self.temperature if sampling else 1.0,
            )
        width = encoded["input_ids"].shape[1]
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in output]


class VLLMCompletion:
    """Chat completions with vLLM's offline engine (greedy at temperature 0, else seeded samples)."""

    def __init__(
        self, model: str, revision: str | None, dtype: str, max_new_tokens: int, gpus: int, temperature: float = 0.0
    ):
        from vllm import LLM

        from pipelines.generate import vllm_engine_kwargs

        self.llm = LLM(model=model, revision=revision, seed=0, **vllm_engine_kwargs(gpus, dtype))
        self.tokenizer = self.llm.get_tokenizer()
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=self.temperature, top_p=1.0, top_k=0, max_tokens=self.max_new_tokens, seed=JUDGE_SEED
        )
        outputs = self.llm.generate([chat_text(self.tokenizer, p) for p in prompts], params, use_tqdm=False)
        return [request.outputs[0].text for request in outputs]


class OpenAICompletion:
    """An OpenAI-compatible chat-completions server (vLLM's, SGLang's, ...) at the judge's
    temperature (seeded where the server honours `seed`, as vLLM's does).

    Requests run `concurrency` at a time; a failed request is an error that names the server,
    never a silent verdict."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        max_new_tokens: int,
        api_key_env: str,
        timeout_seconds: float,
        concurrency: int,
        temperature: float = 0.0,
    ):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.api_key = os.environ.get(api_key_env)
        self.timeout_seconds = timeout_seconds
        self.concurrency = concurrency
        self.temperature = temperature

    def _one(self, prompt: str) -> str:
        payload = post_json(
            self.url,
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature,
                "max_tokens": self.max_new_tokens,
                **({"seed": JUDGE_SEED} if self.temperature > 0 else {}),
            },
            self.api_key,
            self.timeout_seconds,
        )
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as error:
            raise RuntimeError(f"the judge server {self.url} sent no completion: {str(payload)[:300]}") from error

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts))


def post_json(url: str, body: Mapping[str, Any], api_key: str | None, timeout_seconds: float) -> Any:
    """One JSON POST to an OpenAI-compatible server; a failure is an error naming the server."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, TimeoutError, ValueError) as error:
        raise RuntimeError(f"the judge server {url} failed: {error}") from error


def chat_text(tokenizer: Any, prompt: str) -> str:
    """The judge prompt as one user turn of the judge model's chat template (as a server does)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def make_judge(settings: Mapping[str, Any], gpus: int = 0) -> Judge:
    """The judge of `evaluation.llm_judge` on the engine it names."""
    engine = settings["engine"]
    temperature = float(settings.get("temperature") or 0.0)
    if engine == "openai":
        complete: Callable[[Sequence[str]], list[str]] = OpenAICompletion(
            settings["endpoint"],
            settings["model"],
            settings["max_new_tokens"],
            settings["api_key_env"],
            settings["timeout_seconds"],
            settings["batch_size"],
            temperature,
        )
    elif engine == "vllm":
        complete = VLLMCompletion(
            settings["model"],
            settings.get("revision"),
            settings["dtype"],
            settings["max_new_tokens"],
            gpus,
            temperature,
        )
    else:
        complete = HFCompletion(
            settings["model"], settings.get("revision"), settings["dtype"], settings["max_new_tokens"], temperature
        )
    return Judge(complete, settings["batch_size"], name=f"{settings['model']} ({engine})")


# --- The semantic judge: a verifier's Yes/No decision on pairs of answers --------------------

#: The authors' verifier prompt (semantic_uncertainty.py, `check_implication`), verbatim: raw
#: text, no chat template, ending where the verifier's decision word comes next. The authors fill
#: "Ground Truth Answer" with the first answer of the pair and "Student Answer" with the second.
GENERAL_VERIFIER_PROMPT = (
    "User: ### Question: {question}\n\n"
    "### Ground Truth Answer: {reference}\n\n"
    "### Student Answer: {answer}\n\n"
    "For the above question, please verify if the student's answer is equivalent to the ground truth answer.\n"
    "Do not solve the question by yourself; just check if the student's answer is equivalent to the ground truth answer.\n"  # noqa: E501 (the authors' prompt, byte for byte)
    'If correct, output "Final Decision: Yes". If incorrect, output "Final Decision: No".\n'
    "Assistant: Final Decision: "
)


def render_verifier_prompt(template: str | None, question: str, reference: str, answer: str) -> str:
    return (template or GENERAL_VERIFIER_PROMPT).format(question=question, reference=reference, answer=answer)


class EquivalenceJudge:
    """(question, reference, answer) triples in, "equivalent?" verdicts out: the answer is
    equivalent when the verifier scores "Yes" above "No" as its next token (the authors'
    `yes_prob > no_prob`; a softmax never changes which of two logits is larger).

    `batch_size` triples go through one forward pass; `pairs`, `forward_passes` and `seconds`
    count what the judge did, for the group diagnostics and the benchmark."""

    def __init__(
        self,
        margins: Callable[[Sequence[str]], list[float]],
        batch_size: int,
        template: str | None = None,
        name: str = "judge",
    ):
        self.margins = margins
        self.batch_size = batch_size
        self.template = template
        self.name = name
        self.pairs = 0
        self.forward_passes = 0
        self.seconds = 0.0

    def equivalent_many(self, triples: Sequence[tuple[str, str, str]]) -> list[bool]:
        prompts = [render_verifier_prompt(self.template, q, r, a) for q, r, a in triples]
        verdicts: list[bool] = []
        for start in range(0, len(prompts), self.batch_size):
            began = time.perf_counter()
            margins = self.margins(prompts[start : start + self.batch_size])
            self.seconds += time.perf_counter() - began
            self.forward_passes += 1
            self.pairs += len(margins)
            verdicts += [margin > 0 for margin in margins]  # NaN (neither word scored) is "No"
        return verdicts


def resolve_device(device: str) -> str:
    """`auto`: in a multi-process run, this rank's own GPU (each rank judges its share of the
    groups, so the verifier copies spread over the GPUs instead of piling onto one); in one
    process, the last visible GPU (where the authors put theirs); without a GPU, the CPU."""
    import torch

    if device != "auto":
        return device
    if not torch.cuda.is_available():
        return "cpu"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return f"cuda:{torch.cuda.device_count() - 1}"


def decision_token_ids(tokenizer: Any, yes: str, no: str) -> tuple[int, int]:
    """The ids of the decision words, as the authors take them (`tokenizer(" Yes", " No")`, the
    first two ids), refusing words that are not one token each (their ids would then be the
    wrong tokens, silently)."""
    for word in (yes, no):
        pieces = tokenizer(word, add_special_tokens=False).input_ids
        if len(pieces) != 1:
            raise ValueError(
                f"the verifier's tokenizer splits the decision word {word!r} into {len(pieces)} "
                f"tokens; set training.semantic_judge.yes_token/no_token to single-token words"
            )
    ids = tokenizer(yes, no, add_special_tokens=False).input_ids
    return int(ids[0]), int(ids[1])


class HFDecision:
    """Yes-minus-No next-token logits with transformers, left-padded batches (position ids from
    the attention mask, so a padded prompt scores as it would alone)."""

    def __init__(self, model: str, revision: str | None, dtype: str, device: str, yes: str, no: str):
        self.device = resolve_device(device)
        self.model, self.tokenizer = load_judge_model(model, revision, dtype, self.device)
        self.yes_id, self.no_id = decision_token_ids(self.tokenizer, yes, no)

    def __call__(self, prompts: Sequence[str]) -> list[float]:
        import torch

        # The authors tokenise with the tokenizer's default special tokens (add_special_tokens=True).
        encoded = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.device)
        positions = (encoded["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(**encoded, position_ids=positions, logits_to_keep=1).logits[:, -1, :].float()
        return (logits[:, self.yes_id] - logits[:, self.no_id]).tolist()


def _margin_from_top_logprobs(top: Mapping[Any, float] | None, yes: Any, no: Any) -> float:
    """Yes-minus-No log-probability from a top-k table (keyed by token text or id); a word
    outside it scores -inf, and neither in it is NaN (read as "No")."""
    top = top or {}
    if yes not in top and no not in top:
        return math.nan
    return top.get(yes, -math.inf) - top.get(no, -math.inf)


class VLLMDecision:
    """The decision with vLLM: one generated token with its top-20 log-probabilities."""

    TOP_LOGPROBS = 20

    def __init__(self, model: str, revision: str | None, dtype: str, gpus: int, yes: str, no: str):
        from vllm import LLM

        from pipelines.generate import vllm_engine_kwargs

        self.llm = LLM(model=model, revision=revision, seed=0, **vllm_engine_kwargs(gpus, dtype))
        self.tokenizer = self.llm.get_tokenizer()
        self.yes_id, self.no_id = decision_token_ids(self.tokenizer, yes, no)

    def __call__(self, prompts: Sequence[str]) -> list[float]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.TOP_LOGPROBS)
        margins = []
        for request in self.llm.generate(list(prompts), params, use_tqdm=False):
            table = {token: entry.logprob for token, entry in request.outputs[0].logprobs[0].items()}
            margins.append(_margin_from_top_logprobs(table, self.yes_id, self.no_id))
        return margins


class OpenAIDecision:
    """The decision from an OpenAI-compatible completions endpoint (raw prompt, one token,
    top-20 log-probabilities), `concurrency` requests at a time."""

    def __init__(
        self, endpoint: str, model: str, api_key_env: str, timeout_seconds: float, concurrency: int, yes: str, no: str
    ):
        self.url = endpoint.rstrip("/") + "/completions"
        self.model = model
        self.api_key = os.environ.get(api_key_env)
        self.timeout_seconds = timeout_seconds
        self.concurrency = concurrency
        self.yes, self.no = yes, no

    def _one(self, prompt: str) -> float:
        payload = post_json(
            self.url,
            {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": 20},
            self.api_key,
            self.timeout_seconds,
        )
        try:
            top = payload["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError) as error:
            raise RuntimeError(
                f"the judge server {self.url} sent no log-probabilities: {str(payload)[:300]}"
            ) from error
        return _margin_from_top_logprobs(top, self.yes, self.no)

    def __call__(self, prompts: Sequence[str]) -> list[float]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts))


def make_equivalence_judge(settings: Mapping[str, Any], gpus: int = 0) -> EquivalenceJudge:
    """The semantic judge of `training.semantic_judge` on the engine it names."""
    engine, yes, no = settings["engine"], settings["yes_token"], settings["no_token"]
    if engine == "openai":
        margins: Callable[[Sequence[str]], list[float]] = OpenAIDecision(
            settings["endpoint"],
            settings["model"],
            settings["api_key_env"],
            settings["timeout_seconds"],
            settings["batch_size"],
            yes,
            no,
        )
    elif engine == "vllm":
        margins = VLLMDecision(settings["model"], settings.get("revision"), settings["dtype"], gpus, yes, no)
    else:
        margins = HFDecision(
            settings["model"], settings.get("revision"), settings["dtype"], settings["device"], yes, no
        )
    return EquivalenceJudge(
        margins, settings["batch_size"], settings.get("prompt"), name=f"{settings['model']} ({engine})"
    )
