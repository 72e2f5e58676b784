"""The semantic judge of the natural-reasoning track: the authors' verifier prompt and Yes/No
decision, their clustering (batched here, the same clusters), their free-form reward shaping,
and the code path on a real (tiny, offline) verifier model."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import free_form
from pipelines.judge import (
    GENERAL_VERIFIER_PROMPT,
    EquivalenceJudge,
    HFDecision,
    _margin_from_top_logprobs,
    decision_token_ids,
    make_equivalence_judge,
    render_verifier_prompt,
)
from pipelines.rewards import (
    empo_free_form_rewards,
    group_metrics,
    judge_cluster_ids,
    judge_supervised_rewards,
    score_group,
)
from pipelines.rewards.core import GroupClusters
from tests.authors_semantic import authors_check_implication, authors_semantic_ids

QUESTION = "Which gas do plants take in for photosynthesis?"


class StubVerifier:
    """Margins from a fixed relation: (reference, answer) -> equivalent. Prompts are rendered
    with the template "{reference}\x1f{answer}" so the stub can read them back."""

    TEMPLATE = "{reference}\x1f{answer}"

    def __init__(self, relation):
        self.relation = relation
        self.asked: list[tuple[str, str]] = []

    def __call__(self, prompts):
        pairs = [tuple(p.split("\x1f")) for p in prompts]
        self.asked += pairs
        return [1.0 if self.relation(a, b) else -1.0 for a, b in pairs]


def stub_judge(relation, batch_size=64) -> tuple[EquivalenceJudge, StubVerifier]:
    verifier = StubVerifier(relation)
    return EquivalenceJudge(verifier, batch_size, template=StubVerifier.TEMPLATE, name="stub"), verifier


def partition(ids, answers) -> set[frozenset[int]]:
    """The clusters of the answered positions, as sets of positions (numbering aside)."""
    groups: dict[int, set[int]] = {}
    for position, (cluster, answer) in enumerate(zip(ids, answers)):
        if answer not in (None, ""):
            groups.setdefault(cluster, set()).add(position)
    return {frozenset(g) for g in groups.values()}


# ------------------------------------------------------------------------ the decision rule


def test_the_prompt_is_the_authors_verbatim():
    theirs = (
        f"User: ### Question: {QUESTION}\n\n"
        f"### Ground Truth Answer: CO2\n\n"
        f"### Student Answer: carbon dioxide\n\n"
        "For the above question, please verify if the student's answer is equivalent to the ground truth answer.\n"
        "Do not solve the question by yourself; just check if the student's answer is equivalent to the ground truth answer.\n"  # noqa: E501 (the authors' prompt, byte for byte)
        'If correct, output "Final Decision: Yes". If incorrect, output "Final Decision: No".\n'
        "Assistant: Final Decision: "
    )
    assert render_verifier_prompt(None, QUESTION, "CO2", "carbon dioxide") == theirs
    assert GENERAL_VERIFIER_PROMPT.endswith("Final Decision: ")
    assert render_verifier_prompt("{answer}|{reference}|{question}", "q", "r", "a") == "a|r|q"


@pytest.mark.parametrize(
    "margin, verdict",
    [(2.0, True), (1e-6, True), (0.0, False), (-0.5, False), (math.nan, False), (math.inf, True), (-math.inf, False)],
)
def test_yes_above_no_is_equivalent_and_a_tie_or_nothing_is_not(margin, verdict):
    judge = EquivalenceJudge(lambda prompts: [margin] * len(prompts), batch_size=4)
    assert judge.equivalent_many([("q", "a", "b")]) == [verdict]


def test_top_logprob_tables_decide_like_the_full_distribution():
    assert _margin_from_top_logprobs({" Yes": -0.1, " No": -2.3}, " Yes", " No") == pytest.approx(2.2)
    assert _margin_from_top_logprobs({" No": -0.1}, " Yes", " No") == -math.inf
    assert _margin_from_top_logprobs({" Yes": -3.0}, " Yes", " No") == math.inf
    assert math.isnan(_margin_from_top_logprobs({"maybe": -0.1}, " Yes", " No"))


def test_batches_and_counters():
    judge, verifier = stub_judge(lambda a, b: a == b, batch_size=3)
    verdicts = judge.equivalent_many([("q", str(i % 2), "0") for i in range(7)])
    assert verdicts == [True, False, True, False, True, False, True]
    assert (judge.pairs, judge.forward_passes) == (7, 3)
    assert len(verifier.asked) == 7


# ------------------------------------------------------------------------ clustering


def _same_word(a: str, b: str) -> bool:
    return a.lower() == b.lower()


@pytest.mark.parametrize(
    "answers, relation, expected",
    [
        # equivalence classes, with case differences
        (["CO2", "co2", "O2", "CO2", "o2"], _same_word, [0, 0, 1, 0, 1]),
        # not transitive: A~B, B~C, A!~C; C opens its own cluster (B was taken, never a representative)
        (["A", "B", "C"], lambda a, b: {a, b} in ({"A", "B"}, {"B", "C"}), [0, 0, 1]),
        # a later representative takes an answer an earlier one had (A~C, B~C, A!~B): C moves to B
        (["A", "B", "C"], lambda a, b: {a, b} in ({"A", "C"}, {"B", "C"}), [0, 1, 1]),
        # asymmetric: the representative is the first argument
        (["x", "y"], lambda a, b: (a, b) == ("y", "x"), [0, 1]),
    ],
)
def test_clusters_are_the_authors_clusters(answers, relation, expected):
    judge, _ = stub_judge(relation)
    ids = judge_cluster_ids(answers, QUESTION, judge)
    assert ids == expected
    assert partition(ids, answers) == partition(authors_semantic_ids(answers, relation)[0], answers)


def test_missing_answers_join_no_cluster_and_are_never_asked_about():
    judge, verifier = stub_judge(lambda a, b: True)
    ids = judge_cluster_ids(["a", None, "b", None], QUESTION, judge)
    assert ids == [0, None, 0, None]
    assert all(None not in pair for pair in verifier.asked)


@settings(max_examples=200, deadline=None)
@given(
    answers=st.lists(st.sampled_from(["a", "b", "c", "d", ""]), min_size=1, max_size=9),
    edges=st.sets(st.tuples(st.sampled_from("abcd"), st.sampled_from("abcd"))),
)
def test_batched_clustering_equals_the_authors_loop_for_any_judge(answers, edges):
    relation = lambda a, b: (a, b) in edges  # noqa: E731 - any relation, asymmetric, intransitive
    judge, _ = stub_judge(relation, batch_size=4)
    ours = judge_cluster_ids([a or None for a in answers], QUESTION, judge)
    theirs, authors_pairs = authors_semantic_ids(answers, relation)
    assert partition(ours, answers) == partition(theirs, answers)
    assert judge.pairs <= authors_pairs


def test_a_converging_group_costs_one_forward_pass_per_cluster():
    answers = ["CO2"] * 9 + ["O2"] * 3
    judge, _ = stub_judge(_same_word, batch_size=16)
    ids = judge_cluster_ids(answers, QUESTION, judge)
    assert ids == [0] * 9 + [1] * 3
    # the authors: 11 pairs for CO2's row, 2 for O2's, one forward pass each (13 passes)
    assert judge.pairs == 3 and judge.forward_passes == 2  # (CO2,CO2), (CO2,O2); (O2,O2)


# ------------------------------------------------------------------------ rewards


def test_free_form_empo_shaping_is_the_authors():
    question = "Which gas do plants take in during photosynthesis, and which do they release?"
    answers = ["carbon dioxide", "carbon dioxide", "carbon dioxide", "nitrogen", None, "photosynthesis"]
    judge, _ = stub_judge(_same_word)
    clusters = GroupClusters(answers, judge_cluster_ids(answers, question, judge))
    rewards = empo_free_form_rewards(clusters, question)
    # share of 6 for answers; -0.5 without one; 0 for an answer lifted from the question
    assert rewards == [0.5, 0.5, 0.5, pytest.approx(1 / 6), -0.5, 0.0]


def test_a_dispersed_group_gets_nothing():
    answers = [f"answer {w}" for w in ("one", "two", "three", "four", "five", "six")]
    judge, _ = stub_judge(_same_word)
    clusters = GroupClusters(answers, judge_cluster_ids(answers, QUESTION, judge))
    # largest share 1/6 < 0.2 with more than one cluster: every reward 0 (empo_common)
    assert empo_free_form_rewards(clusters, QUESTION) == [0.0] * 6
    assert empo_free_form_rewards(GroupClusters(answers[:5], [0, 1, 2, 3, 4]), QUESTION) == [0.2] * 5


def test_supervised_reward_asks_with_the_authors_argument_order():
    judge, verifier = stub_judge(lambda reference, answer: reference == "CO2" and answer == "carbon dioxide")
    rewards = judge_supervised_rewards(["CO2", "O2", None], "carbon dioxide", QUESTION, judge)
    assert rewards == [1.0, 0.0, -0.5]
    assert verifier.asked == [("CO2", "carbon dioxide"), ("O2", "carbon dioxide")]


def test_score_group_with_the_judge_counts_its_work():
    completions = ["so \\boxed{CO2}", "I think \\boxed{co2}", "\\boxed{O2}", "no idea"]
    judge, _ = stub_judge(_same_word, batch_size=2)
    score = score_group(completions, "empo", gold="carbon dioxide", judge=judge, question=QUESTION)
    assert score.rewards == [0.5, 0.5, 0.25, -0.5]
    work = score.diagnostics.judge
    assert work is not None and work.pairs == judge.pairs and work.forward_passes == judge.forward_passes
    assert score.diagnostics.majority_correct is False  # "CO2" vs "carbon dioxide": the stub says no
    metrics = group_metrics([score])
    assert metrics["group/judge_pairs"] == work.pairs
    assert {"group/judge_forward_passes", "group/judge_seconds"} <= set(metrics)
    with pytest.raises(ValueError, match="question"):
        score_group(completions, "empo", judge=judge)


def test_the_trl_adapter_passes_the_question_to_the_judge():
    from pipelines.train.rewards_adapter import GroupRewardFunction

    judge, verifier = stub_judge(_same_word)
    reward = GroupRewardFunction("empo", "empo", num_generations=2, judge=judge)
    try:
        logged = {}
        rewards = reward(
            prompts=[[{"role": "user", "content": "p"}]] * 2,
            completions=["\\boxed{CO2}", "\\boxed{co2}"],
            reward_model=[{"ground_truth": "CO2"}] * 2,
            extra_info=[{"question": QUESTION}] * 2,
            log_metric=lambda name, value: logged.__setitem__(name, value),
        )
    finally:
        reward.close()
    assert rewards == [1.0, 1.0] and verifier.asked[0] == ("CO2", "co2")
    assert logged["group/judge_pairs"] == 2  # the clustering pair and the majority-vs-gold check


# ------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    "text, free, choice",
    [
        ("so the answer is \\boxed{B}.", "B", "B"),
        ("\\boxed{\\text{carbon dioxide}}", "carbon dioxide", "carbon dioxide"),
        ("Hence \\boxed{A. Paris}", "A. Paris", "A. Paris"),
        ("I give up.", None, None),
    ],
)
def test_answers_are_extracted_as_the_authors_extract_them(text, free, choice):
    assert free_form.free_form_answer(text) == free
    assert free_form.choice_answer(text) == choice


def test_choice_grading_accepts_the_letter_or_letter_and_option():
    gold = free_form.choice_gold("B", ["Paris", "Lyon", "Nice"])
    assert free_form.is_accepted_choice("B", gold) and free_form.is_accepted_choice("B. Lyon", gold)
    assert not free_form.is_accepted_choice("Lyon", gold) and not free_form.is_accepted_choice("b", gold)
    with pytest.raises(ValueError, match="not one of the 3 option letters"):
        free_form.accepted_choices("D", ["Paris", "Lyon", "Nice"])


def test_the_choice_letter_grader_grades_generation_records():
    from pipelines import grading
    from pipelines.grade import grade_records

    records = [
        {"index": i, "sample": 0, "response": response, "gold": "B", "options": ["Paris", "Lyon", "Nice"]}
        for i, response in enumerate(["\\boxed{B}", "\\boxed{B. Lyon}", "\\boxed{Lyon}", "no box"])
    ]
    with grading.GradingPool(workers=1, rule="choice-letter") as pool:
        verdicts, _ = grade_records({"name": "choice-letter"}, records, pool)
        assert [v["correct"] for v in verdicts] == [True, True, False, False]
        assert verdicts[3]["decided_by"] == "no answer"
        with pytest.raises(ValueError, match="no options"):
            grade_records({"name": "choice-letter"}, [{k: v for k, v in records[0].items() if k != "options"}], pool)


# ------------------------------------------------------------------------ a real verifier model

VERIFIER_CORPUS = (
    "Assistant: Final Decision: Yes",
    "Assistant: Final Decision: No",
    "### Ground Truth Answer: carbon dioxide ### Student Answer: oxygen",
)


@pytest.fixture(scope="module")
def tiny_verifier(tmp_path_factory) -> str:
    from tests.tiny_models import build_tiny_qwen2, make_opinionated_verifier

    path = build_tiny_qwen2(
        tmp_path_factory.mktemp("verifier"),
        attention_heads=2,
        kv_heads=1,
        max_length=512,
        extra_corpus=VERIFIER_CORPUS,
        seed=3,
    )
    make_opinionated_verifier(path, [render_verifier_prompt(None, QUESTION, a, b) for a in ANSWERS for b in ANSWERS])
    return path


SETTINGS = {
    "model": None,
    "revision": None,
    "engine": "hf",
    "device": "cpu",
    "dtype": "float32",
    "batch_size": 8,
    "prompt": None,
    "yes_token": " Yes",
    "no_token": " No",
    "endpoint": None,
    "api_key_env": "X",
    "timeout_seconds": 5,
}

ANSWERS = [
    "carbon dioxide",
    "CO2",
    "oxygen",
    "carbon dioxide",
    "O2",
    "the gas CO2",
    "x",
    "carbon dioxide gas",
    "CO_2",
    "oxygen",
]


def test_a_real_verifier_decides_as_the_authors_code_in_fewer_passes(tiny_verifier):
    judge = make_equivalence_judge({**SETTINGS, "model": tiny_verifier})
    model, tokenizer = judge.margins.model, judge.margins.tokenizer
    pairs = [(a, b) for a in ANSWERS[:5] for b in ANSWERS[5:]]
    ours = judge.equivalent_many([(QUESTION, a, b) for a, b in pairs])
    theirs = [authors_check_implication(model, tokenizer, QUESTION, a, b) for a, b in pairs]
    assert ours == theirs
    assert any(ours) and not all(ours)  # the seed gives both decisions, so the check can fail
    assert judge.forward_passes == math.ceil(len(pairs) / SETTINGS["batch_size"])

    clustering = make_equivalence_judge({**SETTINGS, "model": tiny_verifier})
    ids = judge_cluster_ids(ANSWERS, QUESTION, clustering)
    reference, _ = authors_semantic_ids(
        ANSWERS, lambda a, b: authors_check_implication(model, tokenizer, QUESTION, a, b)
    )
    assert partition(ids, ANSWERS) == partition(reference, ANSWERS)
    assert clustering.forward_passes <= len(set(ids))


def test_padding_does_not_move_a_margin(tiny_verifier):
    decision = HFDecision(tiny_verifier, None, "float32", "cpu", " Yes", " No")
    prompts = [
        render_verifier_prompt(None, QUESTION, a, b) for a, b in [("CO2", "carbon dioxide gas, mostly"), ("x", "y")]
    ]
    together = decision(prompts)
    alone = [decision([p])[0] for p in prompts]
    assert together == pytest.approx(alone, abs=1e-4)


def test_decision_words_must_be_single_tokens(tiny_verifier):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_verifier)
    yes, no = decision_token_ids(tokenizer, " Yes", " No")
    assert tokenizer.decode([yes]) == " Yes" and tokenizer.decode([no]) == " No"
    with pytest.raises(ValueError, match="splits the decision word ' Absolutely'"):
        decision_token_ids(tokenizer, " Absolutely", " No")


def test_auto_device_is_the_cpu_without_gpus():
    from pipelines.judge import resolve_device

    assert resolve_device("auto") == "cpu" and resolve_device("cuda:3") == "cuda:3"
