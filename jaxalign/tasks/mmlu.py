"""MMLU (cais/mmlu, config ``all``, split ``test``): four-way multiple choice across 57 subjects.

Rows: ``question`` (str), ``subject`` (str, not used), ``choices`` (4 str), ``answer`` (int 0-3).
The prompt is the paper's Figure 12; the grader reads a letter A-D from the final text.
"""

from __future__ import annotations

from typing import Any, Mapping

from jaxalign.errors import JaxalignError
from jaxalign.tasks.answers import AnswerPattern
from jaxalign.tasks.base import MalformedRow
from jaxalign.tasks.dataset import DatasetTask, text_field
from jaxalign.tasks.source import HubLayout

LETTERS = "ABCD"
INSTRUCTION = (
    "Answer the following multiple choice question. The last line of your response should be of the "
    "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. "
    "Think step by step before answering."
)
_ANSWER = AnswerPattern(r"[A-D](?![A-Za-z0-9])")


def prompt(question: str, choices: list[str]) -> str:
    """Figure 12's user message: instruction, question, then one 'X) choice' line per letter."""
    lines = [INSTRUCTION, question.strip()] + [f"{x}) {c.strip()}" for x, c in zip(LETTERS, choices)]
    return "\n".join(lines)


class MMLU(DatasetTask):
    name = "mmlu"
    layouts = {"cais/mmlu": HubLayout(configs=("all",), split="test")}

    def parse(self, row: Mapping[str, Any]):
        question = text_field(row, "question")
        choices = row.get("choices")
        if choices is None:
            raise MalformedRow("missing 'choices'")
        if not isinstance(choices, (list, tuple)) or len(choices) != 4:
            raise MalformedRow("'choices' is not a list of 4")
        if not all(isinstance(c, str) and c.strip() for c in choices):
            raise MalformedRow("'choices' holds an empty or non-string choice")
        if "answer" not in row:
            raise MalformedRow("missing 'answer'")
        answer = row["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
            raise MalformedRow("'answer' is not an int 0-3")
        return (question, *choices), prompt(question, list(choices)), answer

    def grade(self, response: str, answer: Any) -> bool:
        """True iff the last A-D answer in the final text is letter ``answer`` (0 -> A, ..., 3 -> D)."""
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
            raise JaxalignError(f"mmlu: the ground truth must be an int 0-3, got {answer!r}")
        return _ANSWER.last(response) == LETTERS[answer]
