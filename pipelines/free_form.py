"""Answers of free-form and multiple-choice questions, read the way the authors read them.

The natural-reasoning track (QingyangZhang/EMPO at c5eccd4) extracts every answer with one
math-verify call: `parse` with a boxed-first `LatexExtractionConfig`, `first_match`, and the
last of the returned forms (the matched string). Then
- training rewards (`trl/src/open_r1/rewards.py`, `empo_common`, `general_accuracy`) strip
  `\\text{...}` and an outer `\\boxed{...}` (`normalize_prediction`);
- MMLU-Pro and GPQA grading (`eval_natural/eval/{mmlu_pro,gpqa}/run_eval.py`) strips `$...$`,
  `\\text`, `\\textbf`, `\\overline` and `\\boxed` (`mmlu_normalize_final_answer`) and counts a
  prediction correct when it is the gold letter or "<letter>. <option text>".
An empty extraction is no answer (None here; the authors' '').
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Sequence

CHOICE_LETTERS = "ABCDEFGHIJKLMNOP"


class _DropEquationsNotice(logging.Filter):
    """latex2sympy2 warns on every call that `equations=True` is deprecated; the authors set it
    and it still acts (it keeps the last side of a chained equation), so we keep it, quietly."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "equations=True in NormalizationConfig is deprecated" not in record.getMessage()


@functools.cache
def _extraction_config() -> list:
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig

    logging.getLogger("latex2sympy2_extended.math_normalization").addFilter(_DropEquationsNotice())
    return [
        LatexExtractionConfig(
            normalization_config=NormalizationConfig(
                nits=False, malformed_operators=False, basic_latex=False, equations=True, boxed="all", units=True
            ),
            boxed_match_priority=0,
            try_extract_without_anchor=False,
        )
    ]


def _authors_parse(text: str) -> str:
    """The matched answer string of the authors' math-verify call, '' when nothing matched."""
    from math_verify import parse

    # math-verify's own timeout uses SIGALRM, which only the main thread may set.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    result = parse(text, extraction_config=_extraction_config(), extraction_mode="first_match", parsing_timeout=timeout)
    if not result:
        return ""
    return str(result[-1])


def normalize_prediction(answer: str) -> str:
    """rewards.py `normalize_prediction`, verbatim."""
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    return re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)


def mmlu_normalize_final_answer(answer: str) -> str:
    """eval/mmlu_pro/mmlu_utils.py `mmlu_normalize_final_answer`, verbatim (its live lines)."""
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
    return re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)


def free_form_answer(text: str) -> str | None:
    """A completion's free-form answer as the authors' training rewards read it; None if none."""
    return normalize_prediction(_authors_parse(text)) or None


def choice_answer(text: str) -> str | None:
    """A completion's multiple-choice answer as the authors' MMLU-Pro/GPQA scripts read it."""
    return mmlu_normalize_final_answer(_authors_parse(text)) or None


def accepted_choices(letter: str, options: Sequence[str]) -> list[str]:
    """What the authors count as correct: the letter, or "<letter>. <the option's text>"."""
    index = CHOICE_LETTERS.find(letter)
    if len(letter) != 1 or index < 0 or index >= len(options):
        raise ValueError(f"gold {letter!r} is not one of the {len(options)} option letters")
    return [letter, f"{letter}. {options[index]}"]


def choice_gold(letter: str, options: Sequence[str]) -> str:
    """The gold the choice grader compares with: the accepted answers, JSON-encoded."""
    return json.dumps(accepted_choices(letter, options), ensure_ascii=False)


def is_accepted_choice(prediction: str, gold: str) -> bool:
    """Exact comparison with one of the accepted answers (`choice_gold`), as the authors compare."""
    return prediction in json.loads(gold)


def format_options(question: str, options: Sequence[str]) -> str:
    """The question with its options, one per line, as the authors' `format_example` writes it."""
    return question + "".join(f"\n{CHOICE_LETTERS[i]}. {option}" for i, option in enumerate(options))


def copies_question(prediction: str, question: str) -> bool:
    """The authors' guard against answers lifted from the question (`empo_common`): ROUGE-L
    precision of the answer against the question above 0.8, the answer a substring of the
    question, or an answer ROUGE cannot score (their `except: rep = 1.0`)."""
    from rouge import Rouge

    try:
        precision = Rouge().get_scores(prediction.lower(), question.lower())[0]["rouge-l"]["p"]
    except Exception:  # noqa: BLE001 - the authors treat any ROUGE failure as a copy
        precision = 1.0
    return precision > 0.8 or prediction.lower() in question.lower()
