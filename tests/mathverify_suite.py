"""Math-Verify's own test cases, read from its sdist's tests/ (see `make build/math-verify-tests`).

Their tests are pytest functions parametrized over (gold, pred, expected[, option]) whose body
asserts `compare_strings(gold, pred, ...) == expected` (a helper in their test_all.py around
`verify(parse(gold), parse(pred))`) or `int(verify(parse(gold), parse(pred))) == result`. We
read them with `ast` (never importing their modules, which need their own conftest/package) and
keep each case's non-default options (precision, strict, allow_set_relation_comp, match_types)
so that a disagreement can be told apart from a configuration we do not use.

`python -m tests.mathverify_suite [folder]` prints the agreement of our grader with the suite.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent.parent / "build" / "math-verify-tests"

#: compare_strings' defaults in their test_all.py, which are also our grader's settings
#: (parse: LaTeX + expression extraction; verify: 6 decimals, strict, no set/relation mixing).
DEFAULT_OPTIONS = {"match_types": ("latex", "expr"), "precision": 6, "strict": True, "allow_set_relation_comp": False}
_VERIFY_KEYWORDS = {
    "float_rounding": "precision",
    "strict": "strict",
    "allow_set_relation_comp": "allow_set_relation_comp",
}


@dataclass(frozen=True)
class Case:
    id: str  # "test_all.py::test_latex_notation[3]" (pytest's parameter index)
    gold: str
    pred: str
    expected: bool
    options: dict = field(default_factory=dict)  # only those that differ from DEFAULT_OPTIONS


@dataclass
class Suite:
    cases: list[Case]
    unreadable: list[str]  # cases whose arguments are not literals (e.g. an f-string)
    other_tests: list[str]  # tests that do not compare a gold with a prediction


class _NotLiteral(Exception):
    pass


def _value(node: ast.AST, params: dict):
    if isinstance(node, ast.Name) and node.id in params:
        return params[node.id]
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as error:
        raise _NotLiteral(ast.dump(node)[:80]) from error


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _unwrap(call: ast.AST) -> ast.AST:
    while isinstance(call, ast.Call) and _name(call.func) in ("int", "bool") and len(call.args) == 1:
        call = call.args[0]
    return call


def _compares_strings(node: ast.AST) -> bool:
    call = _unwrap(node)
    return isinstance(call, ast.Call) and _name(call.func) in ("compare_strings", "verify")


def _comparison(call: ast.AST, params: dict) -> tuple[str, str, dict] | None:
    """(gold, pred, options) of `compare_strings(...)` / `verify(parse(g), parse(p), ...)`,
    possibly wrapped in int()/bool(); None for any other expression."""
    call = _unwrap(call)
    if not isinstance(call, ast.Call):
        return None
    options: dict = {}
    if _name(call.func) == "compare_strings":
        names = ["gold", "pred", "match_types", "precision", "strict", "allow_set_relation_comp"]
        bound = dict(zip(names, call.args))
        bound.update({k.arg: k.value for k in call.keywords if k.arg})
        gold, pred = _value(bound.pop("gold"), params), _value(bound.pop("pred"), params)
        for key, node in bound.items():
            value = _value(node, params)
            options[key] = tuple(value) if isinstance(value, list) else value
    elif _name(call.func) == "verify" and len(call.args) >= 2:
        parsed = []
        for argument in call.args[:2]:
            if not (isinstance(argument, ast.Call) and _name(argument.func) == "parse" and argument.args):
                return None
            if len(argument.args) > 1 or argument.keywords:
                options["extraction"] = "custom"
            parsed.append(_value(argument.args[0], params))
        gold, pred = parsed
        for keyword in call.keywords:
            options[_VERIFY_KEYWORDS.get(keyword.arg, keyword.arg)] = _value(keyword.value, params)
    else:
        return None
    options = {k: v for k, v in options.items() if DEFAULT_OPTIONS.get(k, object()) != v}
    return gold, pred, options


def _parametrizations(function: ast.FunctionDef) -> list[dict] | None:
    """Each parameter set of a `@pytest.mark.parametrize` test; None if it has none."""
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and _name(decorator.func) == "parametrize" and len(decorator.args) >= 2:
            names = ast.literal_eval(decorator.args[0])
            names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
            rows = decorator.args[1]
            if not isinstance(rows, (ast.List, ast.Tuple)):
                return []
            sets = []
            for row in rows.elts:
                try:
                    values = _value(row, {})
                    sets.append(dict(zip(names, values if len(names) > 1 else [values])))
                except _NotLiteral:
                    sets.append({"__unreadable__": True})
            return sets
    return None


def read_suite(folder: Path = SUITE_DIR) -> Suite:
    suite = Suite([], [], [])
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for function in tree.body:
            if not (isinstance(function, ast.FunctionDef) and function.name.startswith("test_")):
                continue
            base = f"{path.name}::{function.name}"
            parameter_sets = _parametrizations(function)
            comparisons = [
                node
                for node in ast.walk(function)
                if isinstance(node, ast.Compare)
                and len(node.ops) == 1
                and isinstance(node.ops[0], ast.Eq)
                and _compares_strings(node.left)
            ]
            if not comparisons:  # e.g. parse-only or timeout tests: no gold/prediction pair
                suite.other_tests.append(base)
                continue
            for index, params in enumerate(parameter_sets if parameter_sets is not None else [{}]):
                case_id = f"{base}[{index}]" if parameter_sets is not None else base
                if params.get("__unreadable__"):
                    suite.unreadable.append(case_id)
                    continue
                number = 0
                for compare in comparisons:
                    try:
                        comparison = _comparison(compare.left, params)
                        if comparison is None:
                            continue
                        expected = _value(compare.comparators[0], params)
                    except _NotLiteral:
                        suite.unreadable.append(case_id)
                        continue
                    gold, pred, options = comparison
                    suffix = f"#{number}" if number else ""
                    suite.cases.append(Case(case_id + suffix, gold, pred, bool(expected), options))
                    number += 1
    return suite


def our_pair(case: Case) -> tuple[str, str, bool]:
    """(prediction, gold, prediction_was_boxed) as our grader sees the case.

    Golds are answers (a gold that is itself a boxed solution gives its last box); a prediction
    with a box is a response, graded on its last box exactly as `grading.grade` does; one
    without a box is taken as the answer itself, as `grading.is_equivalent` (the reward path)
    sees an extracted answer. Our evaluator would count an unboxed response as wrong outright.
    """
    from pipelines import grading

    gold = grading.extract_answer(case.gold)
    prediction = grading.extract_answer(case.pred)
    return (
        case.pred if prediction is None else prediction,
        case.gold if gold is None else gold,
        prediction is not None,
    )


def grade_suite(suite: Suite, pool) -> list[bool]:
    return [verdict for verdict, _ in pool.equivalent_many([our_pair(c)[:2] for c in suite.cases])]


def main(argv: list[str]) -> int:
    from pipelines import grading

    folder = Path(argv[0]) if argv else SUITE_DIR
    suite = read_suite(folder)
    with grading.GradingPool(workers=2) as pool:
        verdicts = grade_suite(suite, pool)
    default = [i for i, c in enumerate(suite.cases) if not c.options]
    agree = [verdicts[i] == c.expected for i, c in enumerate(suite.cases)]
    print(f"{len(suite.cases)} cases ({len(suite.unreadable)} unreadable, other tests: {len(suite.other_tests)})")
    print(
        f"agreement: {sum(agree)}/{len(agree)} = {100 * sum(agree) / len(agree):.1f}%; "
        f"default options only: {sum(agree[i] for i in default)}/{len(default)}"
    )
    for case, verdict, ok in zip(suite.cases, verdicts, agree):
        if not ok:
            prediction, gold, boxed = our_pair(case)
            print(
                f"  {case.id}: expected {case.expected}, ours {verdict}, options {case.options}, "
                f"{'boxed' if boxed else 'unboxed'}: {prediction[:70]!r} vs {gold[:50]!r}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
