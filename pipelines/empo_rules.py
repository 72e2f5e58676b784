"""The authors' rule grader (`empo-rules`): their chain without its LLM step, re-implemented.

Reference: QingyangZhang/EMPO, verl-empo/verl/utils/reward_score/empo_verify.py (`grade`,
`answer_tag_reward_fn_for_r1`; the grader behind the published table, via verl validation and
`EMPORewardManager`). The chain, in their order, each step only when the previous said wrong:
1. `mathd`: Hendrycks' MATH normalisation (`_strip_string`, extended with unit words and SI
   symbols) and string equality;
2. `sympy`: their normalisation (pylatexenc to text, lower case) and `are_equal_under_sympy`,
   a relative tolerance of 2e-3 x 1.01 applied *after rounding both numbers to the coarser
   precision of the two*, plus 3-significant-digit mantissa comparison of scientific notation;
   then the same on the parts after the last `=`;
3. `math-verify` with `numeric_precision=3`, plus their interval rule (a number inside a gold
   interval is right); then on the parts after the last `=`.
The judge step (`llm-judge`) comes after these (pipelines.grade, pipelines.judge).

Their quirks are kept on purpose, because they move published numbers (verified against their
code): rounding to the coarser precision accepts 1.63 and even 2 for gold 1.6, and 149 for 100;
single capital letters that are SI symbols (A, C, F, ...) are deleted as units, so `(C)` equals
`\\text{(A)}`; `\\frac{28}{6}` is not `\\frac{14}{3}` to sympy but is to math-verify.
Differences from theirs: time bounds. Their signal alarms are kept (sympy 30 s, math-verify 1 s
parse and verify inside 5 s), but the whole chain of one answer also runs inside our worker's hard
bound (grading.timeout_seconds), after which the answer counts as wrong and as a timeout.
"""

from __future__ import annotations

import functools
import math
import re
import signal
from decimal import Decimal, localcontext
from itertools import islice, zip_longest
from typing import Any

#: How empo-rules reads an answer, for provenance records.
ANSWER_RULE = (
    "the authors' extraction: content of the last \\boxed{...} (\\fbox only when there is no \\boxed; "
    "no box or \\boxed without braces = no answer), gold used as written (its last box if boxed)"
)

# Unit words (mostly MathQA) and SI symbols the authors strip, as in their `unit_texts`, and each
# with an "s" appended. Inserted into a regex unescaped, as theirs are ("q ." is a pattern).
_UNIT_WORDS = [
    "east",
    "degree",
    "mph",
    "kmph",
    "ft",
    "m sqaure",
    " m east",
    "sq m",
    "deg",
    "mile",
    "q .",
    "monkey",
    "prime",
    "ratio",
    "profit of rs",
    "rd",
    "o",
    "p . m",
    "lb",
    "tile",
    "per",
    "lt",
    "gain",
    "ab",
    "way",
    "west",
    "no change",
    "men",
    "soldier",
    "pie",
    "bc",
    "excess",
    "st",
    "inches",
    "noon",
    "percent",
    "by",
    "gal",
    "kmh",
    "acre",
    "rise",
    "a . m",
    "th",
    "π r 2",
    "sq",
    "mark",
    "toy",
    "coin",
    "sq . m",
    "gallon",
    "° f",
    "profit",
    "minw",
    "yr",
    "women",
    "feet",
    "am",
    "pm",
    "hr",
    "cu cm",
    "square",
    "v â € ™",
    "are",
    "rupee",
    "rounds",
    "cubic",
    "cc",
    "mtr",
    "ohm",
    "number",
    "kmph",
    "day",
    "hour",
    "minute",
    "min",
    "second",
    "man",
    "woman",
    "sec",
    "cube",
    "mt",
    "sq inch",
    "mp",
    "∏ cm ³",
    "hectare",
    "more",
    "sec",
    "unit",
    "cu . m",
    "cm 2",
    "rs .",
    "rs",
    "kg",
    "month",
    "cm",
    "mm",
    "apple",
    "liter",
    "loss",
    "yard",
    "pure",
    "year",
    "increase",
    "decrease",
    "less",
    "Surface",
    "litre",
    "pi sq m",
    "s .",
    "metre",
    "meter",
    "inch",
    "kilogram",
    "second",
    "ampere",
    "A",
    "K",
    "mol",
    "cd",
    "N",
    "J",
    "W",
    "Pa",
    "Hz",
    "C",
    "V",
    "Ω",
    "F",
    "T",
    "H",
    "eV",
    "kW·h",
    "atm",
    "bar",
    "°C",
]
UNIT_TEXTS = _UNIT_WORDS + [word + "s" for word in _UNIT_WORDS]
_UNIT_PATTERNS = [re.compile(r"(^|\W)" + unit + r"($|\W)") for unit in UNIT_TEXTS]
_TEXT_WRAPPED = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_PRECISION = 2e-3 * 1.01


class _Alarm:
    """Their SIGALRM time bound (main thread only; elsewhere a no-op, our worker's kill bounds it)."""

    def __init__(self, seconds: int):
        self.seconds = seconds
        self.armed = False

    def _raise(self, signum: int, frame: Any) -> None:
        raise TimeoutError("verify timed out")

    def __enter__(self) -> _Alarm:
        try:
            self.previous = signal.signal(signal.SIGALRM, self._raise)
            signal.alarm(self.seconds)
            self.armed = True
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self.previous)


# ----------------------------------------------------------------------------------------
# Extraction


def _last_box_start(text: str) -> int:
    """Where their scan finds the last box: the last \\boxed, else the last \\fbox; -1 if none."""
    start = text.rfind("\\boxed")
    return start if start >= 0 else text.rfind("\\fbox")


def _balanced_from(text: str, start: int) -> str | None:
    """The box starting at `start` up to the brace that balances its first one; None if unclosed."""
    depth = 0
    for position in range(start, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[start : position + 1]
    return None


def _boxes_from_right(text: str, count: int) -> list[str]:
    """Their `last_n_boxed_strings`: boxes scanned leftwards, an unclosed one skipped."""
    found: list[str] = []
    rest = text
    while rest and len(found) < count:
        start = _last_box_start(rest)
        if start < 0:
            break
        box = _balanced_from(rest, start)
        if box is not None:
            found.append(box)
        rest = rest[:start]
    return found[::-1]


def _unbox(boxed: str) -> str | None:
    if boxed.startswith("\\boxed{") and boxed.endswith("}"):
        return boxed[len("\\boxed{") : -1]
    return None


def extract_answer(response: str) -> str | None:
    """The model's answer as the authors read it; None where they score 0 without grading."""
    boxes = _boxes_from_right(str(response), 1)
    answer = _unbox(boxes[0]) if boxes else None
    return answer or None


def gold_answer(gold: str) -> str:
    """Their gold: the content of its last box when boxed, else the string as written."""
    boxes = _boxes_from_right(str(gold), 1)
    if not boxes:
        return str(gold)
    return _unbox(boxes[0]) or ""


# ----------------------------------------------------------------------------------------
# Step 1: mathd


def _remove_units(text: str) -> str:
    for _ in range(2):
        for pattern in _UNIT_PATTERNS:
            stripped = pattern.sub(r"\1\2", text)
            if stripped != "":
                text = stripped
    return text


def _fix_fracs(text: str) -> str:
    pieces = text.split("\\frac")
    rebuilt = pieces[0]
    for piece in pieces[1:]:
        rebuilt += "\\frac"
        if piece[0] == "{":  # an empty piece raises, as theirs does (the caller falls back)
            rebuilt += piece
            continue
        if len(piece) < 2:
            return text
        first, second, tail = piece[0], piece[1], piece[2:]
        rebuilt += "{" + first + "}{" + second + "}" + tail if second != "{" else "{" + first + "}" + second + tail
    return rebuilt


def _fix_a_slash_b(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    return f"\\frac{{{a}}}{{{b}}}" if text == f"{a}/{b}" else text


def _fix_sqrt(text: str) -> str:
    if "\\sqrt" not in text:
        return text
    pieces = text.split("\\sqrt")
    rebuilt = pieces[0]
    for piece in pieces[1:]:
        rebuilt += "\\sqrt" + piece if piece[0] == "{" else "\\sqrt{" + piece[0] + "}" + piece[1:]
    return rebuilt


def _strip_string(text: str) -> str:
    """Hendrycks' MATH normalisation as the authors extended it (units, SI symbols)."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", text)
    text = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", text).replace("bmatrix", "pmatrix")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    text = text.replace("\\left", "").replace("\\right", "")
    without_text_unit = re.sub(r"\\text{.*?}$", "", text).strip()
    if without_text_unit != "" and without_text_unit != text:
        text = without_text_unit
    text = _remove_units(text)
    text = text.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in text:
        pieces = text.split("\\text{ ")
        if len(pieces) != 2:
            raise ValueError("several '\\text{ ' units")
        text = pieces[0]
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]
    text = _fix_sqrt(text).replace(" ", "")
    text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


@functools.lru_cache(maxsize=65536)
def mathd_normalize(answer: str) -> str:
    answer = answer.strip()
    try:
        match = _TEXT_WRAPPED.search(answer)
        if match is not None:
            answer = match.group("text").strip()
        return _strip_string(answer)
    except Exception:  # noqa: BLE001 - theirs returns the answer as far as it got
        return answer


# ----------------------------------------------------------------------------------------
# Step 2: sympy


def _strip_thousands_commas(text: str) -> str:
    pattern = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
    while True:
        stripped = pattern.sub(r"\1\3\4", text)
        if stripped == text:
            return stripped
        text = stripped


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def _is_integral(value: float) -> bool:
    try:
        return abs(value - int(round(value))) <= 1e-7
    except (ValueError, OverflowError):
        return False


def _latex_to_text(text: str) -> str:
    from pylatexenc import latex2text

    text = text.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    text = latex2text.LatexNodes2Text().latex_to_text(text)
    for symbol, word in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        text = text.replace(symbol, word)
    return text.strip()


@functools.lru_cache(maxsize=65536)
def sympy_normalize(text: str) -> str:
    match = _TEXT_WRAPPED.search(text)
    if match is not None:
        text = match.group("text")
    text = text.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    text = text.replace(" or ", " , ").replace(" and ", " , ")
    text = text.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    text = _remove_units(text)
    text = re.sub(r"\^ *\\circ", "", text)
    if text and text[0] == "{" and text[-1] == "}":
        text = text[1:-1]
    text = re.sub(r",\\! *", "", text)
    value = _float_or_none(text)
    if value is not None and _is_integral(value):
        text = str(int(round(value)))
    if "\\" in text:
        try:
            text = _latex_to_text(text)
        except Exception:  # noqa: BLE001 - theirs keeps the text when pylatexenc fails
            pass
    text = re.sub("- *", "-", text)
    text = re.sub("([0-9]) +([0-9])", r"\1+\2", text)  # a mixed number 7 3/4 -> 7+3/4
    text = text.replace(" ", "").replace("{", "").replace("}", "").lower()
    try:
        as_float = float(_strip_thousands_commas(text))
        if _is_integral(as_float):
            text = str(int(float(text.replace(",", ""))))
    except (ValueError, OverflowError):
        pass
    return text


def _split_tuple(text: str) -> list[str]:
    text = _strip_thousands_commas(text)
    if not text:
        return []
    brackets = "()[]"
    if len(text) > 2 and text[0] in brackets and text[-1] in brackets and all(c not in text[1:-1] for c in brackets):
        return [element.strip() for element in text[1:-1].split(",")]
    return [text]


def _is_fraction(text: str) -> bool:
    return bool(re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", text))


def _same_choice(prediction: str, gold: str) -> bool:
    """Their `judge_MC`: a multiple-choice letter or quoted option."""
    if prediction == gold:
        return True
    if prediction.startswith("[") and prediction.endswith("]"):
        prediction = prediction.strip("[]")
    if not prediction:
        return False
    if "A" <= prediction[0] <= "Z" and len(prediction) > 1 and prediction[1] in ".:":
        return prediction[0] == gold
    return f"'{gold}'" in prediction


_TRUE_WORDS, _FALSE_WORDS = ("TRUE", "YES", "T", "Y"), ("FALSE", "NO", "F", "N")


def _same_truth_value(prediction: str, gold: str) -> bool:
    """Their `judge_TF`: true/false answers, in English or Chinese."""
    if any("\u4e00" <= ch <= "\u9fff" for ch in prediction):
        prediction = {
            "是": "TRUE",
            "对": "TRUE",
            "正确": "TRUE",
            "能": "TRUE",
            "否": "FALSE",
            "错": "FALSE",
            "错误": "FALSE",
            "不能": "FALSE",
        }.get(prediction, prediction)
    else:
        prediction = prediction.upper()
    gold = gold.upper()
    words = _TRUE_WORDS + _FALSE_WORDS
    if gold not in words or prediction not in words:
        return False
    return (gold in _TRUE_WORDS) == (prediction in _TRUE_WORDS)


def _with_pi(text: str, value: float) -> Any:
    """Their `handle_pi`: pi replaced by a number and the result evaluated where Python can."""
    if "pi" not in text:
        return text
    position = text.find("pi")
    while position != -1:
        factor = f"*{value}" if position > 0 and text[position - 1].isdigit() else f"1*{value}"
        text = text[:position] + factor + text[position + 2 :]
        position = text.find("pi", position + 1)
    try:
        return eval(text, {"__builtins__": {}}, {})  # noqa: S307 - as theirs; no names reachable
    except Exception:  # noqa: BLE001
        return text


@functools.lru_cache(maxsize=65536)
def _sympy_parse(text: str) -> Any:
    """Their `_sympy_parse`. Cached per string (a parse is a pure function of it and sympy's
    expressions are immutable): a group compares each answer with several others."""
    from sympy.parsing import sympy_parser

    return sympy_parser.parse_expr(
        text.replace("^", "**"),
        transformations=sympy_parser.standard_transformations + (sympy_parser.implicit_multiplication_application,),
        evaluate=False,
    )


def _decimal_places(value: Any, tolerance: float = 1e-6) -> int:
    """Their `count_decimal_places`: digits after the point until the value is within 1e-6."""
    with localcontext() as context:
        context.prec = 20
        fixed = format(Decimal(str(value)).normalize(), "f")
    if "." not in fixed:
        return 0
    places = 0
    for index, _ in enumerate(fixed.split(".")[1]):
        places += 1
        if abs(value - round(value, index + 1)) <= tolerance:
            break
    return places


def _scientific(number: float) -> str:
    mantissa, exponent = f"{number:.2e}".split("e")
    return f"{mantissa}*10**{int(exponent)}"


def _is_scientific(expression: Any) -> bool:
    from sympy import Mul, Pow

    return isinstance(expression, Mul) and isinstance(expression.args[1], Pow) and expression.args[1].args[0] == 10


def _same_mantissa(a: Any, b: Any) -> bool:
    from sympy import N

    mantissa_a, exponent_a = N(a.args[0]), N(a.args[1].args[1])
    mantissa_b, exponent_b = N(b.args[0]), N(b.args[1].args[1])
    places = min(_decimal_places(mantissa_b), _decimal_places(mantissa_a))
    return exponent_a == exponent_b and abs(round(mantissa_a, places) - round(mantissa_b, places)) <= _PRECISION


def _may_evaluate(text: str) -> bool:
    """Their `should_allow_eval`: at most two letters, no braced or long exponents."""
    letters = {c for c in text.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > 2 or "^{" in text or "^(" in text:
        return False
    return re.search(r"\^[0-9]+\^", text) is None and re.search(r"\^[0-9][0-9]+", text) is None


def _equal_under_sympy(gold: Any, prediction: Any) -> bool:
    """Their `are_equal_under_sympy` (precision 2e-3)."""
    import sympy

    with _Alarm(30):
        try:
            if prediction == gold:
                return True
            value_p, value_g = float(prediction), float(gold)
            places = min(_decimal_places(value_g), _decimal_places(value_p))
            value_p, value_g = round(value_p, places), round(value_g, places)
            if abs((value_p - value_g) / value_g) <= _PRECISION:
                return True
            sci_p, sci_g = _sympy_parse(_scientific(float(prediction))), _sympy_parse(_scientific(float(gold)))
            if _is_scientific(sci_p) and _is_scientific(sci_g) and _same_mantissa(sci_p, sci_g):
                return True
        except Exception:  # noqa: BLE001 - their alarm's TimeoutError too: on to the next phase, as theirs
            pass
        try:
            if _may_evaluate(gold) and _may_evaluate(prediction):
                parsed_g, parsed_p = _sympy_parse(gold), _sympy_parse(prediction)
                difference = (parsed_g - parsed_p) / (parsed_g if parsed_g != 0 else 1)
                if abs(sympy.N(sympy.simplify(difference))) <= _PRECISION:
                    return True
                if _is_scientific(parsed_p) != _is_scientific(parsed_g):
                    if _is_scientific(parsed_p):
                        parsed_g = _sympy_parse(_scientific(float(gold)))
                    else:
                        parsed_p = _sympy_parse(_scientific(float(prediction)))
                if _is_scientific(parsed_p) and _is_scientific(parsed_g):
                    if _same_mantissa(parsed_p, parsed_g):
                        return True
                elif sympy.N(parsed_p) == sympy.N(parsed_g):
                    return True
        except Exception:  # noqa: BLE001 - their alarm's TimeoutError too: on to the next phase, as theirs
            pass
    return False


def sympy_equal(prediction: str, gold: str) -> bool:
    """Their `grade_answer_sympy`."""
    gold_n, prediction_n = sympy_normalize(gold), sympy_normalize(prediction)
    if gold_n == prediction_n:
        return True
    if not prediction_n:
        return False
    gold_elements, prediction_elements = _split_tuple(gold_n), _split_tuple(prediction_n)
    if len(gold_elements) > 1 and (gold_n[0] != prediction_n[0] or gold_n[-1] != prediction_n[-1]):
        return False
    if len(gold_elements) != len(prediction_elements):
        return False
    for gold_element, prediction_element in zip(gold_elements, prediction_elements):
        if _is_fraction(gold_element) and _is_fraction(prediction_element):
            same = gold_element == prediction_element  # unreduced fractions are not accepted here
        else:
            same = _same_choice(prediction_element, gold_element) or _same_truth_value(prediction_element, gold_element)
            if not same:
                if "pi" in prediction_element or "pi" in gold_element:
                    same = any(
                        _equal_or_timeout(_with_pi(gold_element, v), _with_pi(prediction_element, v))
                        for v in (math.pi, 3.14, 180)
                    )
                else:
                    same = _equal_or_timeout(gold_element, prediction_element)
        if not same:
            return False
    return True


def _equal_or_timeout(gold: Any, prediction: Any) -> bool:
    try:
        return _equal_under_sympy(gold, prediction)
    except TimeoutError:
        return False


# ----------------------------------------------------------------------------------------
# Step 3: math-verify at 3 digits, with their interval rule


def _repetitive(text: str) -> bool:
    """Their `repeatness`: the share of repeated substrings (suffix array LCP) above 0.2."""
    codes = [ord(c) for c in text]
    n = len(codes)
    if n <= 1:
        return False

    def ranks(values: list[Any]) -> list[int]:
        index = {v: i for i, v in enumerate(sorted(set(values)))}
        return [index[v] for v in values]

    rank, step = ranks(codes), 1
    while step < n - 1:
        rank = ranks(list(zip_longest(rank, islice(rank, step, None), fillvalue=-1)))
        step <<= 1
    order = [0] * n
    for position, r in enumerate(rank):
        order[r] = position
    total, k = 0, 0
    for i in range(n):
        if rank[i] == n - 1:
            k = 0
            continue
        j = order[rank[i] + 1]
        while i + k < n and j + k < n and codes[i + k] == codes[j + k]:
            k += 1
        total += k
        if k > 0:
            k -= 1
    return total * 2 / (n * (n + 1)) > 0.2


@functools.lru_cache(maxsize=65536)
def _math_verify_parse(text: str) -> tuple:
    """Their parse of one side (math-verify, both extraction configs, no fallback, 1 s), cached per
    string. Its LaTeX is read SLL-first (`grading.equivalence._sll_first_latex_parsing`: ANTLR's
    two-stage prediction, the same trees as their LL parse, tested on 9,101 strings)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    from pipelines.grading.equivalence import _sll_first_latex_parsing

    with _sll_first_latex_parsing():
        # extraction_mode as a list, as theirs: math-verify then reads it as "any_match"
        return tuple(
            parse(
                text,
                extraction_config=(LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()),
                fallback_mode="no_fallback",
                extraction_mode=["first_match"],
                parsing_timeout=1,
            )
        )


def math_verify_equal(prediction: str, gold: str, interval_rule: bool = True) -> bool:
    """Their `grade_answer_math_verify`, and the interval rule `grade` applies after its first call."""
    import sympy
    from math_verify import verify

    try:
        with _Alarm(5):
            if (len(prediction) > 128 and _repetitive(prediction)) or (len(gold) > 128 and _repetitive(gold)):
                return False
            parsed_p = list(_math_verify_parse(prediction if "$" in prediction else f"${prediction}$"))
            parsed_g = list(_math_verify_parse(gold if "$" in gold else f"${gold}$"))
            if verify(parsed_g, parsed_p, numeric_precision=3, timeout_seconds=1):
                return True
            try:
                if interval_rule and (
                    isinstance(parsed_p[0], (sympy.Integer, sympy.Float, sympy.Rational))
                    and isinstance(parsed_g[0], sympy.Interval)
                ):
                    return parsed_g[0].contains(parsed_p[0]) == True  # noqa: E712 - a sympy truth value
            except Exception:  # noqa: BLE001
                pass
            return False
    except Exception:  # noqa: BLE001 - TimeoutError and every parser failure: wrong
        return False


# ----------------------------------------------------------------------------------------
# The chain


def _boxed_gold(gold: str) -> str | None:
    """Their `grade`'s gold: a gold containing `\\boxed` is replaced by the content of its last
    complete box (`extract_boxed_answer`: no fallback to an earlier box); None where that fails
    (theirs then raises, which their callers score as wrong)."""
    if "\\boxed" not in gold:
        return gold
    boxed = _last_box(gold)
    return None if boxed is None else _unbox(boxed)


def _last_box(text: str) -> str | None:
    """Their `last_boxed_only_string`: the last box with balanced braces, None if unclosed (no
    fallback to an earlier box)."""
    start = _last_box_start(text)
    return None if start < 0 else _balanced_from(text, start)


def split_tails(prediction: str, gold: str) -> tuple[str, str] | None:
    """The parts after the last `=`, where the authors retry each step (their `enable_split`
    compares the raw tail with the mathd-normalised answer, so it is on almost always). `gold`
    as the evaluation grader reads it (`gold_answer`)."""
    gold = _boxed_gold(gold_answer(gold))
    return None if gold is None else _tails(prediction, gold)


def _tails(prediction: str, gold: str) -> tuple[str, str] | None:
    tail_p, tail_g = prediction.split("=")[-1], gold.split("=")[-1]
    if tail_p != mathd_normalize(prediction) or tail_g != gold:
        return tail_p, tail_g
    return None


def grade(prediction: str, gold: str) -> tuple[bool, str]:
    """Their `grade(..., use_xverify=False)`: (verdict, the step that decided: mathd, sympy,
    math-verify, or 'rules' when all said wrong). A gold their code cannot read is wrong."""
    gold = _boxed_gold(gold)
    if gold is None:
        return False, "rules"
    if mathd_normalize(gold) == mathd_normalize(prediction):
        return True, "mathd"
    tails = _tails(prediction, gold)
    if tails == (prediction, gold) and SKIP_REPEATED_RETRIES:
        # Their retry on the parts after the last `=` is on whenever the answer is not already
        # mathd-normal, even without an `=`: then it asks each step the same question again, which
        # said no a moment ago (the steps are pure functions of their strings; math-verify's retry
        # only drops the interval rule, which can only turn a no into a yes). Not asked twice here.
        tails = None
    if sympy_equal(prediction, gold) or (tails is not None and sympy_equal(*tails)):
        return True, "sympy"
    if math_verify_equal(prediction, gold) or (tails is not None and math_verify_equal(*tails, interval_rule=False)):
        return True, "math-verify"
    return False, "rules"


#: False runs the chain as their code does, retries included (benchmarks/rewards.py's baseline).
SKIP_REPEATED_RETRIES = True


def equivalent(prediction: str, gold: str) -> tuple[bool, str]:
    """The evaluation grader (their `answer_tag_reward_fn_for_r1` for one answer): the gold as
    they read a benchmark's (`gold_answer`), then `grade`."""
    return grade(prediction, gold_answer(gold))


def reward_equivalent(answer: str, other: str) -> tuple[bool, str]:
    """The training reward's comparison (their `grade_single_answer`, which `auto_verify` calls
    for every pair of a group's answers and for each answer against the gold): an empty string on
    either side is never equal; else `grade(answer, other)`, `other` in the gold's place. Not
    symmetric: `post_semantic_cluster` puts a cluster's first member in the answer's place and the
    new answer in the gold's (`run_sequential_auto_verify` fills entry [i][j], i < j, and mirrors it)."""
    if answer == "" or other == "":
        return False, "rules"
    return grade(answer, other)


def reward_equivalent_certainly(answer: str, other: str) -> bool | None:
    """`reward_equivalent` where it needs no parser: True for the same string or the same
    mathd-normalised strings (the chain's first step) when neither side holds a box for `grade`
    to unwrap; None (undecided) otherwise. Cheap enough for the process that clusters."""
    if answer == "" or other == "" or "\\boxed" in other:
        return None
    if answer == other or mathd_normalize(answer) == mathd_normalize(other):
        return True
    return None
