"""The grading core: answer extraction, normalisation, math-verify equivalence, hard time bound.

Every stage that needs "is this answer right?" or "are these two answers the same?" imports
this module: the grade stage, maj@n, and the reward core of the trainers. Its worker pool also
runs the authors' rule chain (`rule="empo-rules"`, pipelines.empo_rules) under the same bound.

Facts this design rests on (measured on math-verify 0.9):
- the gold must be parsed wrapped in `\\boxed{}`; raw golds fail to self-match;
- several boxes are merged into a set, so we extract the LAST box ourselves first (the
  authors' and Qwen's graders also take the last box);
- `1 000` and `1\\,000` are read as products (1*0 = 0), `4.5e33` as 4.5*e*33: normalize_answer
  joins digit groups and rewrites e-notation before math-verify sees them;
- no input string may raise out of this module's entry points: integers are compared as digit
  strings, never through `int()` (which refuses more than 4,300 digits), and anything a worker
  raises is a wrong answer;
- math-verify's own timeouts are `signal.alarm` based and soft: big-integer work such as
  `(10^{10^{10}})!` runs tens of seconds past them. Only killing a process bounds a grade, so
  every math-verify call runs in a worker process that is killed at its deadline; the item
  then counts as wrong and as a timeout. Inside the worker, math-verify's signal timeouts are
  disabled (the kill is the bound and the alarm would only add a second, softer one).
- most of a parse's time is ANTLR's LL prediction in latex2sympy, which redoes full-context
  prediction at every parenthesis; ANTLR's two-stage strategy (SLL first, LL on error) gives the
  same parses in a fraction of the time (`_sll_first_latex_parsing`).
"""

from __future__ import annotations

import atexit
import cmath
import functools
import multiprocessing
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.connection import Connection, wait

DEFAULT_TIMEOUT_SECONDS = 5.0
MATH_VERIFY_VERSION = metadata.version("math-verify")

#: How an answer is read, for provenance records (every math-verify metrics.json's grader).
ANSWER_RULE = ("last \\boxed{} / \\fbox{} (several boxes: the last one only), gold wrapped in \\boxed{}; "
               "digit groups joined (1 000, 1\\,000, 1{,}000 -> 1000); "
               "e-notation rewritten (4.5e33 -> 4.5\\times 10^{33})")

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
                return text[open_index + 1:index]
        index += 1
    return None


def extract_answer(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (brace-matched), or `\\boxed 5`.

    None when there is no box or the last box never closes.
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
        return None if content is None else content.strip()
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
    if start > 0 and _GLUED_BEFORE.match(text, start - 1) and text[max(0, start - 2):start] != "\\,":
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
            inner = text[len(left):-len(right)]
            if left == "$" and "$" in inner:
                continue  # `$a$ and $b$`: not one wrapper
            text = inner.strip()
            break
    if text.endswith(".") and not text.endswith("..."):
        text = text[:-1].rstrip()
    text = _DIGIT_RUN.sub(_join_digit_groups, text)
    text = _E_NOTATION.sub(_rewrite_e_notation, text)
    return text + "}" * _unclosed_braces(text)


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
def _parse_boxed(normalised: str) -> tuple:
    """math-verify parse of one normalised answer, cached: a worker sees the same answers across
    groups and steps (the reward core clusters 16 answers per prompt), so each is parsed once.
    Its LaTeX is read with SLL prediction first (`_sll_first_latex_parsing`): the same parse."""
    from math_verify import parse

    with _sll_first_latex_parsing():
        return tuple(parse("\\boxed{" + normalised + "}", parsing_timeout=None))


_sll_first = threading.local()  # .active: this thread's latex2sympy parsers try SLL first


@contextmanager
def _sll_first_latex_parsing() -> Iterator[None]:
    """Within this block (this thread only), latex2sympy reads LaTeX with ANTLR's two-stage
    strategy: SLL prediction first, and on any error a fresh parser exactly as before (LL).

    Why the result is the same: math-verify's `parse_latex_cached` (math_verify/parser.py) calls
    `latex2sympy`, whose `_Latex2Sympy.parse` runs `parser.math()` (a rule ending in EOF) with
    a `MathErrorListener` that raises at the first syntax error, then converts the tree. ANTLR
    documents SLL (antlr4 PredictionMode.SLL) as returning either the tree LL returns or a syntax
    error, and on an error the unchanged LL parse runs from scratch, so the tree, the exception
    and the conversion are those of the LL parse. The SLL stage keeps its own DFA cache: LL
    parses, here and elsewhere in the process, run exactly as without this. Why it pays: LL
    falls back to full-context prediction, which is never cached, at every parenthesis
    (`(15,-29)`: ~45 ms per parse, ~1 ms with SLL); that was most of the parse time.
    """
    _install_sll_first_parser()
    _sll_first.active = True
    try:
        yield
    finally:
        _sll_first.active = False


@functools.cache
def _install_sll_first_parser() -> None:
    """latex2sympy's `create_parser`, made to return a two-stage parser while `_sll_first` is
    active in the calling thread (unchanged otherwise)."""
    from antlr4.atn.ParserATNSimulator import ParserATNSimulator
    from antlr4.atn.PredictionMode import PredictionMode
    from antlr4.dfa.DFA import DFA
    from antlr4.PredictionContext import PredictionContextCache
    from latex2sympy2_extended.latex2sympy2 import PSParser, _Latex2Sympy

    create_parser = _Latex2Sympy.create_parser
    sll_dfa = [DFA(state, decision) for decision, state in enumerate(PSParser.atn.decisionToState)]
    sll_contexts = PredictionContextCache()

    def create_two_stage_parser(converter, latex: str):
        parser = create_parser(converter, latex)
        if not getattr(_sll_first, "active", False):
            return parser
        parser._interp = ParserATNSimulator(parser, parser.atn, sll_dfa, sll_contexts)
        parser._interp.predictionMode = PredictionMode.SLL
        sll_math = parser.math

        def math():
            try:
                return sll_math()
            except Exception:  # noqa: BLE001 - a syntax error, or input that needs LL: parse as before
                return create_parser(converter, latex).math()

        parser.math = math
        return parser

    _Latex2Sympy.create_parser = create_two_stage_parser


def _verify_in_process(prediction: str, gold: str) -> bool:
    """math-verify on normalised, boxed strings, in THIS process (no time bound: workers only)."""
    from math_verify import verify

    gold_parsed = _parse_boxed(normalize_answer(gold))
    prediction_parsed = _parse_boxed(normalize_answer(prediction))
    if not gold_parsed or not prediction_parsed:
        return False
    if _certainly_not_equivalent(gold_parsed, prediction_parsed):
        return False
    return bool(verify(list(gold_parsed), list(prediction_parsed), timeout_seconds=None))


def _certainly_not_equivalent(gold_parsed: tuple, prediction_parsed: tuple) -> bool:
    """math-verify's verdict is certainly False, decided without its `verify`.

    `verify` (math_verify/grader.py) is True when some pair of the two parse lists compares
    equal (`compare_single_extraction`): a sympy object against a string never does, two strings
    do when equal. A parse is (sympy object, its LaTeX string); so both must be such pairs with
    different strings, and the two sympy objects must certainly differ under `sympy_expr_eq`,
    by one of the checks below (each tested against math-verify in tests/test_grading.py).
    """
    if len(gold_parsed) != 2 or len(prediction_parsed) != 2:
        return False
    (gold, gold_text), (prediction, prediction_text) = gold_parsed, prediction_parsed
    if not isinstance(gold_text, str) or not isinstance(prediction_text, str) \
            or gold_text.strip() == prediction_text.strip():
        return False
    try:
        return (_numbers_clearly_differ(gold, prediction) or _expressions_clearly_differ(gold, prediction)
                or _collection_differs_from_single_value(gold, prediction)
                or _linear_equations_differ(gold, prediction))
    except Exception:  # noqa: BLE001 - a check that fails decides nothing: math-verify does
        return False


def _numbers_clearly_differ(gold: object, prediction: object) -> bool:
    """Two constant (real or complex) expressions more than 0.1% apart: math-verify's verdict is certainly
    False (numbers equal only within 6 decimals; constants that differ numerically cannot be
    symbolically equal), so skip its simplification machinery. Percentages (which math-verify
    compares specially), sets, relations, symbols, factorials and huge powers are left to it."""
    import sympy

    values = []
    for expr in (gold, prediction):
        if not isinstance(expr, sympy.Expr) or not expr.is_number or expr.has(sympy.UnevaluatedExpr):
            return False
        if expr.has(sympy.factorial) or any(
                isinstance(p, sympy.Pow) and p.exp.is_number and abs(p.exp) > 64 for p in expr.atoms(sympy.Pow)):
            return False
        try:
            value = complex(expr.evalf(15))
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            return False
        if not cmath.isfinite(value):
            return False
        values.append(value)  # complex numbers too: math-verify compares their values alike
    a, b = values
    return abs(a - b) > 1e-3 * max(1.0, abs(a), abs(b))


def _expressions_clearly_differ(gold: object, prediction: object) -> bool:
    """Two expressions, at least one with free symbols, whose values at one point are more
    than 0.1% apart (`_value_at_point`): then math-verify's verdict is certainly False.

    Its path for two such expressions in `sympy_expr_eq` (neither a relation, set, tuple,
    matrix or bare symbol) is: `sympy_str_eq`, structural `==` (equal trees take equal values);
    `sympy_numeric_eq`, which rounds two Numbers (`round` raises on free symbols: False),
    compares `doit()` results structurally (`doit` keeps values), or asks whether
    `(a - b).evalf(chop=True)` is 0 (it keeps the free symbols, or is the constant a - b, more
    than 0.1% from 0); and `sympy_symbolic_eq`, `simplify(a - b).is_zero`: `simplify` keeps
    the function's values where it is continuous, and a - b is continuous and nonzero around
    the point. Pairs such as `\\cot x` against `\\frac{11}{36}` or `p - q` against `9` are where
    its `simplify` spends most of the reward core's time.
    """
    import sympy

    if not isinstance(gold, sympy.Basic) or not isinstance(prediction, sympy.Basic) \
            or not (gold.free_symbols or prediction.free_symbols):
        return False  # numbers: `_numbers_clearly_differ`
    a, b = _value_at_point(gold), _value_at_point(prediction)
    return a is not None and b is not None and abs(a - b) > 1e-3 * max(1.0, abs(a), abs(b))


@functools.lru_cache(maxsize=65536)
def _value_at_point(expression: object) -> complex | None:
    """The value of an elementary expression (`_is_elementary`) with each symbol set to a
    rational from its name, to 30 digits (sympy's `evalf`, no exact powers); None where it is
    not finite or evalf fails, and, for an expression with free symbols, where a power or
    function in it takes a value that is not real, or it holds i: then no branch cut is near
    the point, and the expression is continuous there. Cached: a worker meets the same
    parsed answers again."""
    import sympy

    if not _is_elementary(expression):
        return None
    point = {symbol: _symbol_value(symbol.name) for symbol in expression.free_symbols}
    if point and expression.has(sympy.I):
        return None
    nodes = [expression] + ([node for node in sympy.preorder_traversal(expression)
                             if isinstance(node, (sympy.Pow, sympy.Function))] if point else [])
    values = []
    for node in nodes:  # Add and Mul of real values are real: powers and functions are checked
        try:
            value = complex(node.evalf(30, subs=point))
        except Exception:  # noqa: BLE001 - no value: math-verify decides
            return None
        if not cmath.isfinite(value) or (point and value.imag != 0):
            return None
        values.append(value)
    return values[0]


def _symbol_value(name: str) -> object:
    """A rational k/1009 in (0, 1), a function of the symbol's name only (prime denominator:
    never a simple fraction such as 1/2, where functions tend to have poles or zeros)."""
    import zlib

    import sympy

    return sympy.Rational(1 + zlib.crc32(name.encode("utf-8", "surrogatepass")) % 1008, 1009)


def _is_elementary(expression: object) -> bool:
    """A scalar expression of at most 200 nodes (a bound on the shortcut's own time): finite
    numbers, constants (pi, e, i), plain or real symbols, +, *, powers and continuous elementary
    functions (exp, log, trigonometric, hyperbolic, their inverses, Abs). Left out: percentages
    (UnevaluatedExpr), unevaluated integrals, sums and limits, factorials, floor, sign,
    undefined functions, and symbols with assumptions such as integer or positive, which
    `simplify` may use and a rational point does not respect."""
    import sympy
    from sympy.core.numbers import ImaginaryUnit
    from sympy.functions.elementary import hyperbolic, trigonometric

    if not isinstance(expression, sympy.Expr) or isinstance(expression, (sympy.Symbol, sympy.MatrixExpr)):
        return False
    for count, node in enumerate(sympy.preorder_traversal(expression)):
        if count == 200:
            return False
        if isinstance(node, sympy.Symbol):
            if type(node) is not sympy.Symbol or node.assumptions0 not in _plain_symbol_assumptions():
                return False
        elif isinstance(node, sympy.Number):
            if not node.is_finite:
                return False
        elif not isinstance(node, (sympy.Add, sympy.Mul, sympy.Pow, sympy.NumberSymbol, ImaginaryUnit, sympy.exp,
                                   sympy.log, sympy.Abs, trigonometric.TrigonometricFunction,
                                   trigonometric.InverseTrigonometricFunction, hyperbolic.HyperbolicFunction,
                                   hyperbolic.InverseHyperbolicFunction)):
            return False
    return True


@functools.cache
def _plain_symbol_assumptions() -> tuple[dict, ...]:
    """What a symbol may assume: nothing, or real (math-verify's parse makes real symbols)."""
    import sympy

    return sympy.Symbol("x").assumptions0, sympy.Symbol("x", real=True).assumptions0


def _collection_differs_from_single_value(gold: object, prediction: object) -> bool:
    """An interval, tuple or finite set that can never equal the other side in math-verify's
    `sympy_compare_sets`, where a single value v is the set {v}. Certain for:
    - a real interval of positive length against a value, or a finite set or tuple whose length
      is not 2: `==` differs in type, the symmetric difference holds the interval's other points
      (not empty), neither is a finite set on both sides, and the open-interval-against-pair
      rule needs length 2 (intervals on both sides are compared by `sympy_compare_interval`);
    - a tuple of 2 or more against a value: `==` differs, a tuple is no Set (no symmetric
      difference), and `sympy_deep_compare_set_and_tuple` needs equal lengths;
    - a finite set holding two numbers more than 0.1% apart against a value: as the tuple, and
      the value equals at most one of them, so the symmetric difference is not empty.
    The single value is a scalar expression (relations, sets and matrices are left to
    math-verify, which converts relations to sets)."""
    import sympy

    def is_single_value(value):
        return isinstance(value, sympy.Expr) and not isinstance(value, sympy.MatrixExpr)

    for collection, other in ((gold, prediction), (prediction, gold)):
        if isinstance(collection, sympy.Interval) and _has_positive_length(collection):
            if is_single_value(other) or (isinstance(other, (sympy.FiniteSet, sympy.Tuple)) and len(other) != 2):
                return True
        elif isinstance(collection, sympy.Tuple) and len(collection) >= 2 and is_single_value(other):
            return True
        elif isinstance(collection, sympy.FiniteSet) and is_single_value(other):
            values = [_value_at_point(element) for element in collection.args if not element.free_symbols]
            values = [value for value in values if value is not None]
            if any(abs(value - values[0]) > 1e-3 * max(1.0, abs(value), abs(values[0])) for value in values[1:]):
                return True
    return False


def _has_positive_length(interval: object) -> bool:
    import sympy

    start, end = interval.start, interval.end
    try:
        return bool(start.is_number and end.is_number and (end > start) is sympy.true)
    except TypeError:  # complex endpoints
        return False


def _linear_equations_differ(gold: object, prediction: object) -> bool:
    """Two equations `a = b`, each linear in its symbols with rational coefficients, that are
    not multiples of one another: math-verify's verdict is certainly False.

    For two equations, `sympy_expr_eq` compares them structurally (equal trees are multiples),
    then `sympy_compare_relational` tries: the two differences a - b (same relation type), a - b
    against the prediction's b - a (`INVERSE_RELATIONS`), both ruled out here by
    `_expressions_clearly_differ` on those very expressions; and `sympy_solve_and_compare`,
    which is True only when `solve` gives both equations the same solutions, key by key, values
    equal under `sympy_expr_eq`. For rational polynomials that is equality, once bare symbols
    compared by name (`sympy_compare_symbols`, case-insensitive for long names) cannot meet
    another symbol of the same name; and linear equations with the same solutions are
    multiples of one another. Chains (`a = b = c`) and inequalities are left to math-verify.
    """
    import sympy

    if type(gold) is not sympy.Equality or type(prediction) is not sympy.Equality:
        return False
    differences = (gold.lhs - gold.rhs, prediction.lhs - prediction.rhs)
    if not (_expressions_clearly_differ(*differences)
            and _expressions_clearly_differ(differences[0], prediction.rhs - prediction.lhs)):
        return False
    symbols = sorted(differences[0].free_symbols | differences[1].free_symbols, key=sympy.default_sort_key)
    names = [symbol.name.lower() for symbol in symbols]
    if len(set(names)) != len(names) or not all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names):
        return False
    rows = []
    for difference in differences:
        if not difference.free_symbols or not difference.is_polynomial(*symbols):
            return False
        polynomial = sympy.Poly(difference, *symbols)
        if not (polynomial.domain.is_ZZ or polynomial.domain.is_QQ) or polynomial.total_degree() != 1:
            return False  # coefficients with floats, roots or pi: left to math-verify
        rows.append([polynomial.coeff_monomial(symbol) for symbol in symbols] + [polynomial.coeff_monomial(1)])
    return sympy.Matrix(rows).rank() == 2


_PLAIN_INTEGER = re.compile(r"-?\d+")
_PLAIN_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?|-?\.\d+")
_WHOLE_DECIMAL = re.compile(r"(-?\d+)\.0+")  # 12.0, 12.000


def _fast_verdict(prediction: str, gold: str) -> bool | None:
    """The verdict where math-verify's is certain without running it, else None.

    Identical normalised strings are equivalent; two plain integers are equivalent exactly
    when equal (math-verify compares them as sympy Integers), compared as canonical digit
    strings so that integers of any length work (`int()` refuses more than 4,300 digits);
    an integer of up to 15 digits and the same integer written `n.0` (or `n.000`) are: the
    decimal is parsed as a Float of at least 53 bits, exactly n, so `sympy_symbolic_eq`
    (math_verify/grader.py) finds `simplify(n - n.0)` zero; two plain decimals more than
    0.1% apart are not. Integers are most maths answers, so this spares most parses and
    verifications in the reward core and the evaluator.
    """
    prediction, gold = normalize_answer(prediction), normalize_answer(gold)
    if prediction == gold:
        return True
    if _PLAIN_INTEGER.fullmatch(prediction) and _PLAIN_INTEGER.fullmatch(gold):
        return _canonical_integer(prediction) == _canonical_integer(gold)
    for integer, decimal in ((prediction, gold), (gold, prediction)):
        whole = _WHOLE_DECIMAL.fullmatch(decimal)
        if whole and _PLAIN_INTEGER.fullmatch(integer) and len(_canonical_integer(integer).lstrip("-")) <= 15 \
                and _canonical_integer(whole.group(1)) == _canonical_integer(integer):
            return True
    if _PLAIN_DECIMAL.fullmatch(prediction) and _PLAIN_DECIMAL.fullmatch(gold):
        a, b = float(prediction), float(gold)
        if abs(a - b) > 1e-3 * max(1.0, abs(a), abs(b)):
            return False  # plain numbers 0.1% apart: never equal within math-verify's 6 decimals
    return None


def _worker_loop(connection: Connection) -> None:
    """Grade (prediction, gold) pairs sent over the pipe until told to stop."""
    import logging

    # math-verify warns on every call that its own timeout is off: the kill is our bound.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        rule, prediction, gold = message
        try:
            verdict, step = RULES[rule](prediction, gold)
        except BaseException as error:  # noqa: BLE001 - any parser failure is a wrong answer
            # BaseException too: math-verify's TimeoutException derives from it, and a worker
            # that exits on an input before its first answer would read as "cannot start".
            try:
                detail = f"{type(error).__name__}: {error}"[:300]
            except BaseException:  # noqa: BLE001 - e.g. a str() that itself fails
                detail = type(error).__name__
            connection.send((False, detail, "error"))
            continue
        connection.send((bool(verdict), None, step))


def _math_verify_rule(prediction: str, gold: str) -> tuple[bool, str]:
    return _verify_in_process(prediction, gold), "math-verify"


def _empo_rules_rule(prediction: str, gold: str) -> tuple[bool, str]:
    from pipelines import empo_rules

    return empo_rules.equivalent(prediction, gold)


def _choice_letter_rule(prediction: str, gold: str) -> tuple[bool, str]:
    from pipelines import free_form

    return free_form.is_accepted_choice(prediction, gold), "choice-letter"


#: Equivalence rules a worker can apply, by grader name: (prediction, gold) -> (verdict, the step
#: that decided). Extraction is each grader's own (ANSWER_EXTRACTORS). The choice-letter gold is
#: its accepted answers, JSON-encoded (`free_form.choice_gold`).
RULES = {"math-verify": _math_verify_rule, "empo-rules": _empo_rules_rule, "choice-letter": _choice_letter_rule}


def _empo_extract(text: str) -> str | None:
    from pipelines import empo_rules

    return empo_rules.extract_answer(text)


def _choice_extract(text: str) -> str | None:
    from pipelines import free_form

    return free_form.choice_answer(text)


ANSWER_EXTRACTORS = {"math-verify": lambda text: extract_answer(text), "empo-rules": _empo_extract,
                     "choice-letter": _choice_extract}


@dataclass(frozen=True)
class GradeResult:
    """Outcome of grading one response against one gold answer."""

    correct: bool
    extracted: str | None
    timed_out: bool = False
    error: str | None = None
    decided_by: str | None = None  # the rule step that gave the verdict (empo-rules: exact, sympy, ...)


class GradingError(RuntimeError):
    """The grader itself is broken (not an answer that is wrong or slow)."""


@contextmanager
def _main_file_hidden_if_unreadable() -> Iterator[None]:
    """multiprocessing re-runs the caller's main file in each new worker. A main read from
    standard input (`python - <<EOF`, `__file__ == "<stdin>"`) or another pseudo-file cannot be
    re-run, and the worker needs nothing from it (its code is in this module): hide the name
    while the worker starts. A real script keeps the usual rule (guard it with
    `if __name__ == "__main__":`); notebooks and `python -c` have no main file at all."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path) or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


class _Worker:
    def __init__(self, context) -> None:
        self.answered = 0
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_loop, args=(child,), daemon=True)
        with _main_file_hidden_if_unreadable():
            self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


def _context():
    """forkserver: workers fork from a clean server with math-verify preloaded and warmed up
    (pipelines.grading_warmup), not from a parent that may hold torch threads (fork after
    torch can deadlock)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["math_verify", "pipelines.grading", "pipelines.empo_rules",
                                    "pipelines.grading_warmup"])
    return context


class GradingPool:
    """Worker processes with a hard per-item deadline; results in input order."""

    def __init__(self, workers: int | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 rule: str = "math-verify"):
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if rule not in RULES:
            raise ValueError(f"unknown grading rule {rule!r} (known: {', '.join(RULES)})")
        self.rule = rule
        self.size = max(1, workers or os.cpu_count() or 1)
        self.timeout_seconds = timeout_seconds
        self.timeouts = 0
        self._context = _context()
        self._workers: list[_Worker] = []

    def __enter__(self) -> "GradingPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def _ensure_workers(self, needed: int) -> None:
        while len(self._workers) < min(self.size, needed):
            self._workers.append(_Worker(self._context))

    def equivalent_many(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, bool]]:
        """(equivalent, timed_out) per (prediction, gold) pair."""
        return [(r[0], r[1]) for r in self._run(pairs)]

    def _run(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, bool, str | None, str | None]]:
        """(verdict, timed out, error, deciding step) per pair, in order."""
        results: list[tuple[bool, bool, str | None, str | None] | None] = [None] * len(pairs)
        undecided: list[int] = []
        for index, (prediction, gold) in enumerate(pairs):
            verdict = _fast_verdict(prediction, gold) if self.rule == "math-verify" else None
            if verdict is None:
                undecided.append(index)
            else:
                results[index] = (verdict, False, None, "math-verify")
        if not undecided:
            return results  # type: ignore[return-value]
        # Longest first: the rare slow item (a long expression) starts early instead of
        # finishing last on one worker while the others idle.
        pending = deque(sorted(undecided, key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1]))))
        self._ensure_workers(len(pending))
        idle = list(range(len(self._workers)))
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (item, deadline)
        while pending or busy:
            while idle and pending:
                slot, item = idle.pop(), pending.popleft()
                self._workers[slot].connection.send((self.rule, *pairs[item]))
                busy[slot] = (item, time.monotonic() + self.timeout_seconds)
            next_deadline = min(deadline for _, deadline in busy.values())
            ready = wait([self._workers[s].connection for s in busy],
                         timeout=max(0.0, next_deadline - time.monotonic()))
            for slot in [s for s in busy if self._workers[s].connection in ready]:
                item, _ = busy.pop(slot)
                worker = self._workers[slot]
                try:
                    equivalent, error, step = worker.connection.recv()
                    worker.answered += 1
                    results[item] = (bool(equivalent), False, error, step)
                except (EOFError, OSError):  # the worker died
                    worker.process.join(timeout=5)
                    if worker.answered == 0 and (worker.process.exitcode or 0) > 0:
                        raise GradingError(
                            f"a grading worker exited with code {worker.process.exitcode} before grading "
                            "anything: it could not start (workers re-import the main module: a script "
                            "must guard its code with `if __name__ == '__main__':`)") from None
                    results[item] = (False, False, "grader process died", None)  # e.g. killed for memory
                    self._replace(slot)
                idle.append(slot)
            now = time.monotonic()
            for slot in [s for s, (_, deadline) in busy.items() if deadline <= now]:
                item, _ = busy.pop(slot)
                results[item] = (False, True, f"timed out after {self.timeout_seconds} s", None)
                self.timeouts += 1
                self._replace(slot)
                idle.append(slot)
        return results  # type: ignore[return-value]

    def _replace(self, slot: int) -> None:
        self._workers[slot].kill()
        self._workers[slot] = _Worker(self._context)

    def grade_many(self, responses: Sequence[str], golds: Sequence[str],
                   progress: bool = False) -> list[GradeResult]:
        """Extract each response's answer and compare it with its gold."""
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
        extract = ANSWER_EXTRACTORS[self.rule]
        extracted = [extract(r) for r in responses]
        todo = [i for i, answer in enumerate(extracted) if answer is not None]
        outcomes: dict[int, tuple[bool, bool, str | None, str | None]] = {}
        batches = [todo[i:i + 256] for i in range(0, len(todo), 256)]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="answer", desc="grading", mininterval=2.0)
        for batch in batches:
            for index, outcome in zip(batch, self._run([(extracted[i], golds[i]) for i in batch])):
                outcomes[index] = outcome
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return [
            GradeResult(correct=False, extracted=None) if index not in outcomes else
            GradeResult(correct=outcomes[index][0], extracted=extracted[index],
                        timed_out=outcomes[index][1], error=outcomes[index][2],
                        decided_by=outcomes[index][3])
            for index in range(len(responses))
        ]


_shared_pool: GradingPool | None = None
_shared_lock = threading.Lock()


def _shared(timeout_seconds: float) -> GradingPool:
    global _shared_pool
    if _shared_pool is None:
        _shared_pool = GradingPool(workers=1, timeout_seconds=timeout_seconds)
        atexit.register(_shared_pool.close)
    _shared_pool.timeout_seconds = timeout_seconds
    return _shared_pool


def grade_detailed(response: str, gold: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> GradeResult:
    with _shared_lock:
        return _shared(timeout_seconds).grade_many([response], [gold])[0]


def grade(response: str, gold: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> bool:
    """Is the last boxed answer of `response` equivalent to `gold`? Returns within the bound."""
    return grade_detailed(response, gold, timeout_seconds).correct


def is_equivalent(prediction: str, gold: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> bool:
    """Are two extracted answers the same mathematical object? Timeouts count as no."""
    with _shared_lock:
        return _shared(timeout_seconds).equivalent_many([(prediction, gold)])[0][0]


def grade_batch(responses: Sequence[str], golds: Sequence[str], workers: int | None = None,
                timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, progress: bool = False) -> list[GradeResult]:
    with GradingPool(workers=workers, timeout_seconds=timeout_seconds) as pool:
        return pool.grade_many(responses, golds, progress=progress)


def cluster_answers(answers: Sequence[str | None], pool: GradingPool | None = None,
                    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> list[int | None]:
    """Equivalence classes of answers: a cluster id per answer (0, 1, ... by first appearance).

    Identical normalised strings share a cluster without any math-verify call; each new
    distinct answer is compared only with the existing clusters' representatives (their first
    member), in order, and joins the first equivalent one. None answers get None.
    """
    normalised = [None if a is None else normalize_answer(a) for a in answers]
    cluster_of_string: dict[str, int] = {}
    representatives: list[str] = []
    for text, answer in zip(normalised, answers):
        if text is None or text in cluster_of_string:
            continue
        assigned = None
        # Representatives in order, as many at a time as there are workers, stopping at the
        # first equivalent one: most new answers match an early (large) cluster.
        step = pool.size if pool is not None else 1
        for start in range(0, len(representatives), step):
            pairs = [(answer, rep) for rep in representatives[start:start + step]]
            if pool is not None:
                verdicts = pool.equivalent_many(pairs)
            else:
                with _shared_lock:
                    verdicts = _shared(timeout_seconds).equivalent_many(pairs)
            match = next((offset for offset, (same, _) in enumerate(verdicts) if same), None)
            if match is not None:
                assigned = start + match
                break
        if assigned is None:
            assigned = len(representatives)
            representatives.append(answer)  # type: ignore[arg-type]
        cluster_of_string[text] = assigned
    return [None if text is None else cluster_of_string[text] for text in normalised]


def majority_cluster(cluster_ids: Sequence[int | None]) -> int | None:
    """The largest cluster of `cluster_answers` output; ties go to the cluster seen first.
    Missing answers (None) never form the majority; None if no answer at all."""
    sizes: dict[int, int] = {}
    for cluster_id in cluster_ids:
        if cluster_id is not None:
            sizes[cluster_id] = sizes.get(cluster_id, 0) + 1
    return max(sizes, key=lambda cid: (sizes[cid], -cid)) if sizes else None
