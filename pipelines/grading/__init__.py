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

from pipelines.grading.clusters import cluster_answers, cluster_answers_authors, majority_cluster
from pipelines.grading.equivalence import MATH_VERIFY_VERSION, RULES, WORKER_RULES
from pipelines.grading.extract import (
    ANSWER_EXTRACTORS,
    ANSWER_RULE,
    AUTHORS_RULE,
    WORKER_EXTRACTORS,
    extract_answer,
    normalize_answer,
)
from pipelines.grading.pool import (
    DEFAULT_TIMEOUT_SECONDS,
    GradeResult,
    GradingError,
    GradingPool,
    grade,
    grade_batch,
    grade_detailed,
    is_equivalent,
    pool_or_shared,
)

__all__ = [
    "ANSWER_EXTRACTORS",
    "AUTHORS_RULE",
    "ANSWER_RULE",
    "DEFAULT_TIMEOUT_SECONDS",
    "MATH_VERIFY_VERSION",
    "RULES",
    "WORKER_EXTRACTORS",
    "WORKER_RULES",
    "GradeResult",
    "GradingError",
    "GradingPool",
    "cluster_answers",
    "cluster_answers_authors",
    "extract_answer",
    "grade",
    "grade_batch",
    "grade_detailed",
    "is_equivalent",
    "majority_cluster",
    "normalize_answer",
    "pool_or_shared",
]
