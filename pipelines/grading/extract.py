"""Reading the final answer out of a response: the last box, and the normalisation math-verify
needs first (digit groups, e-notation). Also each grader's own extractor (ANSWER_EXTRACTORS)."""

from __future__ import annotations

import functools
import re

#: How an answer is read, for provenance records (every math-verify metrics.json's grader).
ANSWER_RULE = (
    "last \\boxed{} / \\fbox{} (several boxes: the last one only), gold wrapped in \\boxed{}; "
    "digit groups joined (1 000, 1\\,000, 1{,}000 -> 1000); "
    "e-notation rewritten (4.5e33 -> 4.5\\times 10^{33})"
)

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _box_starts(text: str) -> list[int]:
    starts = []
    for command in _BOX_COMMANDS:
        position = text.find(command)
        while position != -1:
            after = position + len(command)
            if after >= len(text) or not text[after].isalpha():  # not \boxedfoo
                starts.append(position)
            position = text.find(command, after)
    return sorted(starts)


def _braced_content(text: str, open_index: int) -> str | None:
    """Content of the brace group opening at `open_index`; None if it never closes. Linear."""
    depth = 0
    index = open_index
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\" and index + 1 < length and text[index + 1] in "{}":
            index += 2  # escaped brace: literal, does not count
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index]
        index += 1
    return None


def extract_answer(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (brace-matched), or `\\boxed 5`.

    None when there is no box, the last box never closes or holds nothing but spaces (`\\boxed{}`
    is no answer: equal empty boxes must not agree with each other as one answer).
    """
    if not text:
        return None
    starts = _box_starts(text)
    if not starts:
        return None
    start = starts[-1]
    command = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    index = start + len(command)
    while index < len(text) and text[index] == " ":
        index += 1
    if index < len(text) and text[index] == "{":
        content = _braced_content(text, index)
        return None if content is None else (content.strip() or None)
    if index > start + len(command):  # `\boxed 5`: one token up to `$` or whitespace
        token = re.match(r"[^\s$]+", text[index:])
        return token.group(0) if token else None
    return None


_E_NOTATION = re.compile(r"(?<![\w\\.])(\d+(?:\.\d+)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))

# Digit-group separators: a LaTeX spacing command / `{,}` / `~` with optional spaces around it
# (tried first, so ` \, ` is one separator), or one space (also no-break, thin and narrow no-break
# space). `\!` (negative space) is not one.
_GROUP_SEPARATOR = r"(?: *(?:\\[,;: ]|\\thinspace(?![a-zA-Z])|\{,\}|~) *|[ \u00a0\u2009\u202f])"
# A maximal run of separated digit groups (greedy, so it never ends inside a digit string or
# starts inside one), validated in _join_digit_groups. Linear: runs cannot overlap.
_DIGIT_RUN = re.compile(rf"(?<!\d)\d+(?:{_GROUP_SEPARATOR}\d+)+")
_SEPARATOR_SPLIT = re.compile(_GROUP_SEPARATOR)
_GLUED_BEFORE = re.compile(r"[\w.,^_]")  # a word, a decimal point or comma, an exponent, a subscript


def _join_digit_groups(match: re.Match) -> str:
    """`1 000 000` -> `1000000` when the run is a leading group of 1-3 digits, then groups of
    exactly 3, all with the same separator, and the run is not glued to what precedes it
    (`x1 000`, `3.141 592`, `10^3 000`); anything else (`12 34`, `1 2345`) is left alone."""
    run, start, text = match.group(0), match.start(), match.string
    if start > 0 and _GLUED_BEFORE.match(text, start - 1) and text[max(0, start - 2) : start] != "\\,":
        return run  # (after `\,`, a spacing command, the run is not glued)
    groups = _SEPARATOR_SPLIT.split(run)
    separators = {s.strip(" ") or " " for s in _SEPARATOR_SPLIT.findall(run)}
    if len(separators) != 1 or not 1 <= len(groups[0]) <= 3 or any(len(g) != 3 for g in groups[1:]):
        return run
    return "".join(groups)


def _rewrite_e_notation(match: re.Match) -> str:
    """`4.5e33` -> `4.5\\times 10^{33}`; the exponent is rewritten as a string (sign kept, `+` and
    leading zeros dropped), never through `int()`, which refuses more than 4,300 digits."""
    return f"{match.group(1)}\\times 10^{{{_canonical_integer(match.group(2))}}}"


def _canonical_integer(text: str) -> str:
    """An optionally signed digit string in canonical form (`+007` -> `7`, `-0` -> `0`)."""
    negative = text.startswith("-")
    digits = text.lstrip("+-").lstrip("0") or "0"
    return "-" + digits if negative and digits != "0" else digits


def _unclosed_braces(text: str) -> int:
    depth = 0
    previous = ""
    for char in text:
        if previous != "\\":
            if char == "{":
                depth += 1
            elif char == "}" and depth > 0:
                depth -= 1
        previous = char if previous != "\\" else ""
    return depth


@functools.lru_cache(maxsize=65536)
def normalize_answer(answer: str) -> str:
    """Surface normalisation applied to predictions and golds alike.

    Strips whitespace, one outer `$...$`/`$$...$$`/`\\(...\\)`/`\\[...\\]`, a trailing period;
    joins digit groups (`1 000`, `1\\,000`, `1{,}000`, `1~000` -> `1000`: a leading group of 1-3
    digits then groups of exactly 3 with one separator, not glued to a digit, a word, a decimal
    point or comma, `^` or `_`), which math-verify reads as products (`1 000` = 0);
    plain commas are left to math-verify, which already reads `1,000` as 1000 and `1,5` as {1, 5};
    rewrites e-notation (`4.5e33` -> `4.5\\times 10^{33}`), which math-verify would read as
    4.5 * e * 33; closes braces left open (68 Minerva golds are truncated at their first `}`,
    e.g. `\\frac{2 \\pi c^{2`: closed, they parse, and an answer of exactly that prefix matches).
    """
    text = answer.strip()
    for left, right in _WRAPPERS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            inner = text[len(left) : -len(right)]
            if left == "$" and "$" in inner:
                continue  # `$a$ and $b$`: not one wrapper
            text = inner.strip()
            break
    if text.endswith(".") and not text.endswith("..."):
        text = text[:-1].rstrip()
    text = _DIGIT_RUN.sub(_join_digit_groups, text)
    text = _E_NOTATION.sub(_rewrite_e_notation, text)
    return text + "}" * _unclosed_braces(text)


def _empo_extract(text: str) -> str | None:
    from pipelines import empo_rules

    return empo_rules.extract_answer(text)


def _choice_extract(text: str) -> str | None:
    from pipelines import free_form

    return free_form.choice_answer(text)


ANSWER_EXTRACTORS = {
    "math-verify": lambda text: extract_answer(text),
    "empo-rules": _empo_extract,
    "choice-letter": _choice_extract,
}
#: The worker rule of the authors' training-reward comparison (their grade_single_answer,
#: `empo_rules.reward_equivalent`): not a grader, the reward core's `empo-rules` equivalence.
AUTHORS_RULE = "empo-rules-reward"
#: Each worker rule's extractor (pipelines.grading.equivalence.WORKER_RULES).
WORKER_EXTRACTORS = {**ANSWER_EXTRACTORS, AUTHORS_RULE: _empo_extract}
