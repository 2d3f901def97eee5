"""The task registry, the prompt formats (golden files) and the teacher contexts built on them."""

import json
from pathlib import Path

import pytest

from jaxalign.contexts import Demonstrations, build_context
from jaxalign.errors import ConfigError
from jaxalign.tasks import PAPER_SYSTEM, TASKS, ToyArith, check_options, get_task, task_names

HERE = Path(__file__).parent


def test_registry_names_tasks_and_rejects_unknown_ones():
    assert task_names() == tuple(TASKS) == ("toy_arith", "boolq", "mmlu", "aime2025")
    with pytest.raises(ConfigError, match="unknown task 'gsm8k'; valid tasks: toy_arith, boolq, mmlu, aime2025"):
        get_task("gsm8k")
    with pytest.raises(ConfigError, match="boolq has no option 'terms'; its options are hub, config, split, path"):
        check_options("boolq", {"path": str(HERE / "fixtures/boolq.jsonl"), "terms": 3})
    with pytest.raises(ConfigError, match="toy_arith has no option 'path'"):
        check_options("toy_arith", {"path": "x.jsonl"})
    with pytest.raises(ConfigError, match="terms must be an int >= 1"):
        check_options("toy_arith", {"terms": 0})
    check_options("mmlu", {"path": str(HERE / "fixtures/mmlu.jsonl")})
    check_options("toy_arith", {"terms": 4, "digits": 3})


def test_toy_arith_is_unchanged():
    toy = get_task("toy_arith", terms=3, digits=2)
    assert toy == ToyArith() and toy.skipped == {} and toy.system is None
    first = toy.questions(4, seed=0)[0]
    assert (first.qid, first.user, first.answer) == ("toy_arith-0-0", "Compute 58+93+19.", "170")
    assert get_task("boolq", path=str(HERE / "fixtures/boolq.jsonl")).system == PAPER_SYSTEM


@pytest.mark.parametrize("name", ["boolq", "mmlu", "aime2025"])
def test_prompt_matches_its_golden_file(name):
    """The golden file is the exact user message of the fixture's first row, plus one final newline."""
    task = get_task(name, path=str(HERE / f"fixtures/{name}.jsonl"))
    first_row = json.loads((HERE / f"fixtures/{name}.jsonl").read_text().splitlines()[0])
    first = task.pool()[0]
    assert task.parse(first_row)[1] == first.user
    assert first.user + "\n" == (HERE / f"golden/{name}.txt").read_text()


def test_boolq_prompt_adds_a_question_mark_only_when_missing():
    from jaxalign.tasks.boolq import prompt

    assert prompt("is it so", " A passage. ").endswith("\nPassage: A passage.\nQuestion: is it so?")
    assert prompt("is it so?", "P").endswith("\nQuestion: is it so?")


def test_teacher_contexts_wrap_real_task_questions():
    q = get_task("mmlu", path=str(HERE / "fixtures/mmlu.jsonl")).pool()[0]
    context = build_context("SELF-1C1W", q, Demonstrations(("Answer: B",), ("Answer: A",), 2))
    assert context.startswith(q.user + "\n\nDemonstrations\n") and '"""\nAnswer: B\n"""' in context
