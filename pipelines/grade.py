"""Grading stage: one generation (model, method, benchmark, protocol) x one grader -> grades.jsonl
+ metrics.json.

A grade job reads the generation stage's files and never regenerates: a new grader, a grader
fix or a grader version bump re-plans only grade jobs (the grader spec, versions included, is
the job's Snakemake params). Graders:
- `math-verify`: the strict grader of pipelines.grading (last box, math-verify).
- `empo-rules`: the authors' rule chain without its LLM step (pipelines.empo_rules).
- `llm-judge`: empo-rules, then a judge model on every answer the rules call wrong, as the
  authors did with xVerify (pipelines.judge); unparseable judge verdicts count as wrong and
  are counted.
maj@n clusters answers with the grader's own equivalence (the judge's grader: its rules).
Every metric gets a bootstrap standard error and 95% interval (pipelines.metrics).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.cli import parse_stage_args, stage_parser
from pipelines.provenance import (
    file_sha256,
    fingerprint,
    git_commit,
    package_versions,
    write_json_atomic,
    write_text_atomic,
)

LOG = logging.getLogger(__name__)


class GradeError(RuntimeError):
    """Generations that cannot be graded as they are; the message says what to do."""


def read_generations(generations_path: Path, record_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The generation record and its records, checked against each other."""
    try:
        record = json.loads(Path(record_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise GradeError(f"{record_path}: not a generation record of the generate stage ({error})") from error
    digest = file_sha256(generations_path)
    if record.get("generations_sha256") != digest:
        raise GradeError(
            f"{generations_path} is not the file {record_path} describes (sha256 {digest[:12]} vs "
            f"{str(record.get('generations_sha256'))[:12]}): it was changed after generation; "
            "regenerate it (snakemake -R <its generations.jsonl>)"
        )
    records = []
    with open(generations_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise GradeError(f"{generations_path}:{line_number}: not JSON ({error})") from error
    expected = record["counts"]["samples"]
    if len(records) != expected:
        raise GradeError(f"{generations_path} has {len(records)} records, its record says {expected}")
    return record, records


def rule_of(grader: str) -> str:
    """The rule chain a grader applies (the judge grader starts from the authors' rules)."""
    return "empo-rules" if grader == "llm-judge" else grader


def golds_for(grader: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """What each record's answer is compared with: the gold, or (choice-letter) the accepted
    answers built from the gold letter and the record's options."""
    if grader != "choice-letter":
        return [r["gold"] for r in records]
    from pipelines.free_form import choice_gold

    missing = sum("options" not in r for r in records)
    if missing:
        raise ValueError(
            f"the choice-letter grader grades multiple-choice generations; {missing} of "
            f"{len(records)} records have no options (is this benchmark multiple choice?)"
        )
    return [choice_gold(r["gold"], r["options"]) for r in records]


def grade_records(
    grader: Mapping[str, Any], records: Sequence[Mapping[str, Any]], pool: Any, judge: Any = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One verdict per generation record: extracted answer, correct, timed out, deciding step."""
    results = pool.grade_many([r["response"] for r in records], golds_for(grader["name"], records), progress=True)
    verdicts = [
        {
            "index": r["index"],
            "sample": r["sample"],
            "extracted": g.extracted,
            "correct": g.correct,
            "grader_timeout": g.timed_out,
            "decided_by": g.decided_by if g.extracted is not None else "no answer",
        }
        for r, g in zip(records, results)
    ]
    counts = {"judged": 0, "judge_unparseable": 0, "judge_flipped_to_correct": 0}
    if grader["name"] == "llm-judge":
        verdicts = _judge_wrong_answers(records, verdicts, judge, counts)
    return verdicts, counts


def _judge_wrong_answers(
    records: Sequence[Mapping[str, Any]], verdicts: list[dict[str, Any]], judge: Any, counts: dict[str, int]
) -> list[dict[str, Any]]:
    """The authors' last step: the judge sees each answer the rules call wrong (the extracted answer,
    the gold as written, the question), and on "no" again the parts after the last `=`. Answers
    without a box are never judged (they score 0 before any rule runs)."""
    from pipelines import empo_rules

    wrong = [i for i, v in enumerate(verdicts) if not v["correct"] and v["extracted"] is not None]
    first = judge.judge_many(
        [judge_question(records[i]) for i in wrong],
        [verdicts[i]["extracted"] for i in wrong],
        [empo_rules.gold_answer(records[i]["gold"]) for i in wrong],
    )
    retry = [
        (i, tails)
        for i, outcome in zip(wrong, first)
        if not outcome.verdict
        and (tails := empo_rules.split_tails(verdicts[i]["extracted"], records[i]["gold"])) is not None
    ]
    second = (
        dict(
            zip(
                [i for i, _ in retry],
                judge.judge_many(
                    [judge_question(records[i]) for i, _ in retry], [t[0] for _, t in retry], [t[1] for _, t in retry]
                ),
            )
        )
        if retry
        else {}
    )
    for i, outcome in zip(wrong, first):
        outcomes = [outcome] + ([second[i]] if i in second else [])
        verdicts[i]["judge_replies"] = [o.raw for o in outcomes]
        counts["judged"] += len(outcomes)
        counts["judge_unparseable"] += sum(o.verdict is None for o in outcomes)
        if any(o.verdict for o in outcomes):
            counts["judge_flipped_to_correct"] += 1
            verdicts[i]["correct"] = True
            verdicts[i]["decided_by"] = "judge"
        else:
            verdicts[i]["decided_by"] = "judge unparseable" if all(o.verdict is None for o in outcomes) else "judge"
    return verdicts


def judge_question(record: Mapping[str, Any]) -> str:
    """The question as the judge sees it: the benchmark question if recorded, else the prompt."""
    return record.get("question") or record["prompt"]


def run_grading(
    spec: Mapping[str, Any],
    generations_path: Path,
    record_path: Path,
    grades_path: Path,
    metrics_path: Path,
    tracker: Any = None,
    judge: Any = None,
) -> dict[str, Any]:
    """Grade one generation file with one grader; write grades.jsonl and metrics.json."""
    from pipelines import empo_rules, grading
    from pipelines.metrics import summarize

    started = time.time()
    generation, records = read_generations(generations_path, record_path)
    grader = spec["grader"]
    n = generation["protocol"]["decoding"]["n"]
    if grader["name"] == "llm-judge" and judge is None:
        from pipelines.judge import make_judge

        judge = make_judge(grader["judge"], gpus=spec.get("gpus", 0))
    with grading.GradingPool(
        workers=spec["workers"], timeout_seconds=grader["timeout_seconds"], rule=rule_of(grader["name"])
    ) as pool:
        verdicts, judge_counts = grade_records(grader, records, pool, judge)
        graded = [
            {**{k: r[k] for k in ("index", "sample", "response_tokens", "finish_reason")}, **v}
            for r, v in zip(records, verdicts)
        ]
        summary = summarize(
            graded,
            n=n,
            ks=spec["pass_at_k"],
            cluster=lambda answers: grading.cluster_answers(answers, pool=pool),
            bootstrap=spec["bootstrap"],
        )
    write_text_atomic("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in verdicts), grades_path)
    grader_record = {
        **grader,
        "answer": grading.ANSWER_RULE if grader["name"] == "math-verify" else empo_rules.ANSWER_RULE,
    }
    result = {
        "model": spec["model"],
        "method": spec["method"],
        "benchmark": spec["benchmark"],
        "protocol_name": generation["protocol_name"],
        "grader": grader_record,
        "accuracy": summary["metrics"]["accuracy"],
        "metrics": summary["metrics"],
        "uncertainty": summary["uncertainty"],
        "counts": {
            **summary["counts"],
            **(judge_counts if grader["name"] == "llm-judge" else {}),
            "decided_by": dict(sorted(Counter(str(v["decided_by"]) for v in verdicts).items())),
        },
        "per_item": summary["per_item"],
        "protocol": {**generation["protocol"], "grader": grader_record},
        "protocol_id": fingerprint({**generation["protocol"], "grader": grader_record}, length=8),
        "generation": {
            "path": str(generations_path),
            "sha256": generation["generations_sha256"],
            "protocol_id": generation["protocol_id"],
            "mlflow_run_id": generation.get("mlflow_run_id"),
            "duration_seconds": generation.get("duration_seconds"),
        },
        "model_manifest": generation["model_manifest"],
        "dataset": generation["dataset"],
        "versions": package_versions(),
        "git_commit": git_commit(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_seconds": round(time.time() - started, 2),
        "mlflow_run_id": getattr(tracker, "run_id", None),
        "runtime": {"slurm_job_id": os.environ.get("SLURM_JOB_ID"), "hostname": os.uname().nodename},
    }
    write_json_atomic(result, metrics_path)
    LOG.info(
        "%s/%s on %s (%s, %s): accuracy %.4f ± %.4f over %d items (%d no answer, %d timeouts)",
        spec["model"],
        spec["method"],
        spec["benchmark"],
        generation["protocol_name"],
        grader["name"],
        result["accuracy"],
        result["uncertainty"]["accuracy"]["se"],
        summary["counts"]["items"],
        summary["counts"]["no_answer"],
        summary["counts"]["grader_timeouts"],
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.grade` — grade one generation file with one grader."""
    from pipelines import tracking

    parser = stage_parser(main.__doc__)
    parser.add_argument("--generations", required=True, type=Path)
    parser.add_argument("--record", required=True, type=Path, help="the generation's generation.json")
    parser.add_argument("--grades", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    args, spec, tracking_config = parse_stage_args(parser, argv)
    name = f"{spec['model']}/{spec['method']}/{spec['benchmark']}/{spec['protocol_name']}/{spec['grader']['name']}"
    with tracking.job_run(tracking_config, "grade", name, spec, log_file=args.log_file) as tracker:
        tracker.set_tags(
            {
                "model": spec["model"],
                "method": spec["method"],
                "benchmark": spec["benchmark"],
                "protocol": spec["protocol_name"],
                "grader": spec["grader"]["name"],
            }
        )
        result = run_grading(spec, args.generations, args.record, args.grades, args.metrics, tracker=tracker)
        tracker.log_metrics(
            {
                **result["metrics"],
                **{f"{name}.se": u["se"] for name, u in result["uncertainty"].items()},
                **{f"count.{k}": v for k, v in result["counts"].items() if isinstance(v, (int, float))},
            }
        )
        tracker.set_tags({"protocol_id": result["protocol_id"]})
        tracker.link_runs({"generation_run_id": result["generation"].get("mlflow_run_id")})
        tracker.log_artifact(args.metrics, "grade")
        tracker.log_artifact(args.grades, "grade")
        tracker.log_table(graded_sample(args.generations, args.grades), "grade/graded_generations.json")
    return 0


#: Rows of the graded-generations table an MLflow grade run shows (the files keep them all).
GRADED_SAMPLE_ROWS = 200


def graded_sample(
    generations_path: Path, grades_path: Path, rows: int = GRADED_SAMPLE_ROWS, response_chars: int = 4000
) -> list[dict[str, Any]]:
    """The first graded generations as table rows, the verdict first and the prompt last: what
    a reader checks (was it right, what did it answer, against what) before what it was asked."""
    import itertools

    table = []
    with open(generations_path, encoding="utf-8") as generations, open(grades_path, encoding="utf-8") as grades:
        for record_line, grade_line in itertools.islice(zip(generations, grades), rows):
            record, grade = json.loads(record_line), json.loads(grade_line)
            if (record["index"], record["sample"]) != (grade["index"], grade["sample"]):
                break  # never pair a verdict with another sample's response
            table.append(
                {
                    "correct": grade["correct"],
                    "extracted": grade["extracted"],
                    "gold": record["gold"],
                    "decided_by": grade.get("decided_by"),
                    "response": record["response"][:response_chars],
                    "index": record["index"],
                    "sample": record["sample"],
                    "question": record.get("question"),
                }
            )
    return table


if __name__ == "__main__":
    sys.exit(main())
