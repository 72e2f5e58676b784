"""Are two answers the same mathematical object? math-verify in this process, its two-stage
LaTeX parsing, and the fast verdicts that skip it where it is certain; the rules a grading
worker applies (RULES)."""

from __future__ import annotations

import cmath
import functools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

from pipelines.grading.extract import AUTHORS_RULE, _canonical_integer, normalize_answer

MATH_VERIFY_VERSION = metadata.version("math-verify")


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
    if (
        not isinstance(gold_text, str)
        or not isinstance(prediction_text, str)
        or gold_text.strip() == prediction_text.strip()
    ):
        return False
    try:
        return (
            _numbers_clearly_differ(gold, prediction)
            or _expressions_clearly_differ(gold, prediction)
            or _collection_differs_from_single_value(gold, prediction)
            or _linear_equations_differ(gold, prediction)
        )
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
            isinstance(p, sympy.Pow) and p.exp.is_number and abs(p.exp) > 64 for p in expr.atoms(sympy.Pow)
        ):
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

    if (
        not isinstance(gold, sympy.Basic)
        or not isinstance(prediction, sympy.Basic)
        or not (gold.free_symbols or prediction.free_symbols)
    ):
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
    nodes = [expression] + (
        [node for node in sympy.preorder_traversal(expression) if isinstance(node, (sympy.Pow, sympy.Function))]
        if point
        else []
    )
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
        elif not isinstance(
            node,
            (
                sympy.Add,
                sympy.Mul,
                sympy.Pow,
                sympy.NumberSymbol,
                ImaginaryUnit,
                sympy.exp,
                sympy.log,
                sympy.Abs,
                trigonometric.TrigonometricFunction,
                trigonometric.InverseTrigonometricFunction,
                hyperbolic.HyperbolicFunction,
                hyperbolic.InverseHyperbolicFunction,
            ),
        ):
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
    if not (
        _expressions_clearly_differ(*differences)
        and _expressions_clearly_differ(differences[0], prediction.rhs - prediction.lhs)
    ):
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
        if (
            whole
            and _PLAIN_INTEGER.fullmatch(integer)
            and len(_canonical_integer(integer).lstrip("-")) <= 15
            and _canonical_integer(whole.group(1)) == _canonical_integer(integer)
        ):
            return True
    if _PLAIN_DECIMAL.fullmatch(prediction) and _PLAIN_DECIMAL.fullmatch(gold):
        a, b = float(prediction), float(gold)
        if abs(a - b) > 1e-3 * max(1.0, abs(a), abs(b)):
            return False  # plain numbers 0.1% apart: never equal within math-verify's 6 decimals
    return None


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


def _empo_rules_reward_rule(answer: str, other: str) -> tuple[bool, str]:
    from pipelines import empo_rules

    return empo_rules.reward_equivalent(answer, other)


#: Every comparison a worker can apply: the graders' rules and the reward core's `empo-rules`
#: comparison (the authors' `grade_single_answer`: pairs of a group's answers, an answer
#: against the gold; not a grader: evaluation reads the gold as their evaluation does).
WORKER_RULES = {**RULES, AUTHORS_RULE: _empo_rules_reward_rule}


def _certain_verdict(rule: str, prediction: str, gold: str) -> bool | None:
    """A verdict the pool's own process can give without a worker, or None: math-verify's
    certain pairs (`_fast_verdict`), and for the authors' reward comparison the pairs their
    chain's first step (string equality after mathd normalisation) decides."""
    if rule == "math-verify":
        return _fast_verdict(prediction, gold)
    if rule == AUTHORS_RULE:
        from pipelines import empo_rules

        return empo_rules.reward_equivalent_certainly(prediction, gold)
    return None
