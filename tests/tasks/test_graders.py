"""Graders: thinking is ignored, a truncated think is wrong, the last answer counts; per-task value rules."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxalign.errors import JaxalignError
from jaxalign.tasks import get_task
from jaxalign.tasks.aime2025 import canonical
from jaxalign.tasks.answers import final_text
from jaxalign.tasks.base import Question

BOOLQ = get_task("boolq", path="tests/tasks/fixtures/boolq.jsonl")
MMLU = get_task("mmlu", path="tests/tasks/fixtures/mmlu.jsonl")
AIME = get_task("aime2025", path="tests/tasks/fixtures/aime2025.jsonl")
# (task, a ground truth, its answer as a model would write it, a wrong answer)
CASES = [(BOOLQ, True, "True", "False"), (MMLU, 2, "C", "B"), (AIME, "070", "70", "71")]
IDS = ["boolq", "mmlu", "aime2025"]


def test_final_text_drops_thinking():
    assert final_text("<think>a</think>\n\nb") == "\n\nb"
    assert final_text("x <think>a</think> y <think>b</think> z") == "x  y  z"
    assert final_text("opened by the prompt </think> final") == " final"
    assert final_text("<think> a <think> b </think> c </think> d") == " d"  # the last close ends thinking
    assert final_text("<think> never closed") is None
    assert final_text("<think>a</think> b <think> again") is None
    assert final_text("no thinking at all") == "no thinking at all"


@pytest.mark.parametrize("task, truth, right, wrong", CASES, ids=IDS)
def test_shared_rules(task, truth, right, wrong):
    grade = task.grade
    assert grade(f"<think>\nstep by step\n</think>\n\nAnswer: {right}", truth)
    assert not grade(f"<think>\nAnswer: {right}\n</think>\n\nAnswer: {wrong}", truth)  # thinking is ignored
    assert not grade(f"<think>\nAnswer: {right}\n</think>\n\nno answer given", truth)
    assert not grade(f"<think>\nso the answer is {right}.\nAnswer: {right}", truth)  # truncated inside thinking
    assert grade(f"Hmm, Answer: {wrong}?\n</think>\n\nAnswer: {right}", truth)  # think opened by the prompt
    assert grade(f"Answer: {wrong}\nOn reflection,\nAnswer: {right}", truth)  # the last answer counts
    assert not grade(f"Answer: {right}\nOn reflection,\nAnswer: {wrong}", truth)
    assert grade(f"Answer: {right}", truth) and grade(f"Answer:{right}.", truth)
    for decorated in (f"**Answer:** {right}", f"The answer is {right}.", f"ANSWER = ({right})",
                      f"Final answer: ${right}$", f"\\boxed{{{right}}}", f"$\\boxed{{\\text{{{right}}}}}$",
                      f"Answer: \\boxed{{ {right} }}", f"answer: [{right}]"):
        assert grade(decorated, truth), decorated
    assert grade(f"Answer: {wrong}, then \\boxed{{{right}}}", truth)  # boxed and marked answers share an order
    assert not grade(f"\\boxed{{{right}}} then Answer: {wrong}", truth)
    assert not grade(f"The answers {right}", truth) and not grade(f"Answering {right}", truth)
    assert not grade("", truth) and not grade(right, truth)  # a bare value is not an answer


def test_mmlu_letters():
    g = MMLU.grade
    assert g("Answer: A", 0) and g("Answer: B", 1) and g("Answer: C", 2) and g("Answer: D", 3)
    assert g("Answer: C) Argon", 2) and g("the answer is (D).", 3) and g("\\boxed{(B)}", 1)
    assert not g("Answer: c", 2)  # lower case is prose, not a letter
    assert not g("Answer: E", 2) and not g("Answer: Because C", 2) and not g("Answer: CD", 2)
    assert not g("\\boxed{C and D}", 2)
    with pytest.raises(JaxalignError, match="int 0-3"):
        g("Answer: A", "A")
    with pytest.raises(JaxalignError, match="int 0-3"):
        g("Answer: A", True)


def test_boolq_true_false_yes_no():
    g = BOOLQ.grade
    for said, meaning in (("True", True), ("true", True), ("YES", True), ("yes.", True), ("False", False),
                          ("false", False), ("No", False), ("no!", False)):
        assert g(f"Answer: {said}", meaning) and not g(f"Answer: {said}", not meaning), said
    assert g("\\boxed{\\text{False}}", False) and g("**Answer**: Yes", True)
    assert not g("Answer: not sure", False) and not g("Answer: Nope", False) and not g("Answer: yesterday", True)
    with pytest.raises(JaxalignError, match="bool"):
        g("Answer: True", "True")


def test_aime_integers():
    g = AIME.grade
    assert g("Answer: 70", "070") and g("Answer: 070", 70) and g("Answer: 0070", "70") and g("\\boxed{070}", 70)
    assert g("Answer: 0", "000") and g("\\boxed{0}", 0) and g("Answer: 5.", 5) and g("Answer: 70^\\circ", 70)
    assert not g("Answer: 9,86", 9)  # a comma that is not a thousands separator
    assert canonical("1,000") == "1000" and canonical("0,070") == "70" and canonical("-05") == "-5"
    assert not g("Answer: 1,000", 100) and not g("Answer: 1,000", 1)  # commas join thousands
    assert not g("Answer: 3.5", 3) and not g("Answer: 35", 3) and not g("Answer: -5", 5) and not g("Answer: 5", 50)
    assert not g("Answer: " + "9" * 5000, 999)  # huge numbers are compared as digits, never int()-parsed
    assert g("so 12 * 7 = 84 and 84 - 14 = 70.\n\\boxed{70}", 70)
    for bad in (1000, -1, "1,000", "7.0", True, None, 7.0):
        with pytest.raises(JaxalignError, match="0-999"):
            g("Answer: 7", bad)


def test_toy_grade_keeps_both_call_orders():
    toy = get_task("toy_arith")
    q = Question("toy-1-2", "Compute 1+2.", "3")
    assert toy.grade("<think>\n1+2=3.\n</think>\n\nAnswer: 3", q.answer) and toy.grade(q, "Answer: 3")
    assert not toy.grade("Answer: 4", q.answer) and not toy.grade(q, "Answer: 4")


@pytest.mark.parametrize("task, truth, right, wrong", CASES, ids=IDS)
def test_graders_are_linear_in_the_response(task, truth, right, wrong):
    hostile = ("<think>" * 20_000 + "</think>" + "answer is " * 20_000 + "\\boxed{" * 20_000 + "Answer: "
               + " " * 200_000 + "\\boxed{\\boxed " * 10_000 + "{" * 50_000 + f"\nAnswer: {right}")
    start = time.perf_counter()
    assert task.grade(hostile, truth)
    assert time.perf_counter() - start < 1.0


# Strings that stress the graders: arbitrary unicode, and concatenations of answer-like fragments. Examples
# come in batches of 50 strings: hypothesis's per-example overhead would otherwise dominate the run time.
FRAGMENTS = ["A", "B", "C", "D", "a", "c", "True", "false", "yes", "No", "70", "070", "0", "1,000", "7.5", "-", ".",
             ",", " ", "\n", ":", "**", "$", "(", ")", "{", "}", "[", "<think>", "</think>", "<think", "\\text{",
             "\\", "box", "ed", "ans", "wer", "Answer", "answer is", "\\boxed{", "9" * 40]
NOISY = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))


def no_answer(fragments):
    """Concatenations with no answer in them: never the word 'answer', never a \\boxed."""
    return st.lists(st.sampled_from(fragments), max_size=40).map("".join).filter(
        lambda s: "answer" not in s.lower() and "\\boxed" not in s)


QUIET = no_answer(FRAGMENTS)
QUIET_NO_TAGS = no_answer([f for f in FRAGMENTS if "think" not in f])
BATCH = 50


def batches(strategy):
    return st.lists(strategy, min_size=BATCH, max_size=BATCH)


def hypothesis_settings(strings: int):
    return settings(max_examples=strings // BATCH, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@hypothesis_settings(10_000)
@given(batches(NOISY))
def test_random_strings_never_crash_a_grader(texts):
    for text in texts:
        for task, truth, _, _ in CASES:
            assert task.grade(text, truth) in (True, False)


TRUTHS = [(BOOLQ, (True, False)), (MMLU, range(4)), (AIME, (0, 7, 70, 999, "070"))]


@hypothesis_settings(2_000)
@given(batches(QUIET))
def test_text_without_an_answer_is_never_correct(texts):
    for text in texts:
        for task, truths in TRUTHS:
            assert not any(task.grade(text, t) for t in truths), (task.name, text)


@hypothesis_settings(2_000)
@given(batches(st.tuples(st.text(max_size=120).filter(lambda s: "think>" not in s),
                         QUIET_NO_TAGS)))
def test_thinking_content_never_decides(pairs):
    for thinking, tail in pairs:
        for task, truth, right, _ in CASES:
            assert task.grade(f"<think>{thinking}</think>\n\nAnswer: {right}\n{tail}", truth)
            assert not task.grade(f"<think>{thinking}\nAnswer: {right}", truth)  # truncated
            assert not task.grade(f"<think>{thinking}\nAnswer: {right}</think>{tail}", truth)  # only thought
