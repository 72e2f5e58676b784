"""Imported by the grading workers' fork server: warm math-verify before workers fork.

The first parses in a process are several times slower than later ones (the LaTeX grammar's
ANTLR caches and sympy's caches fill up). Paying that once in the fork server, instead of in
every worker and again in every replacement of a killed worker, is what makes the pool pay off.
"""

import logging

from pipelines.grading.equivalence import _verify_in_process

# As in the workers: math-verify warns on every call that its own (soft) timeout is off.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_TYPICAL = [
    ("\\frac{1}{2}", "0.5"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),
    ("[2, 5)", "x \\in [2, 5)"),
    ("x^2 + 2x + 1", "(x+1)^2"),
    ("y = 2x - 3", "2x - 3"),
    ("45^\\circ", "\\frac{\\pi}{4}"),
    ("50\\%", "0.5"),
    ("\\text{(C)}", "C"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)"),
    ("3 + 2i", "2i + 3"),
    ("\\dfrac{14}{3}", "4.67"),
    ("-\\infty, 2", "(-\\infty, 2]"),
    ("10^{3}", "1000"),
    ("\\sin x", "\\cos x"),
]

for _prediction, _gold in _TYPICAL:
    try:
        _verify_in_process(_prediction, _gold)
    except Exception:  # noqa: BLE001 - a warm-up failure must not stop the server
        pass
