"""BoolQ (google/boolq): yes/no questions about a Wikipedia passage, with short reasoning chains.

Rows: ``question`` (str, lower case, no question mark), ``passage`` (str), ``answer`` (bool).
The prompt follows the paper's MMLU prompt (Figure 12) with a True/False answer line; the grader
reads True/False or Yes/No from the final text.
"""

from __future__ import annotations

from typing import Any, Mapping

from jaxalign.errors import JaxalignError
from jaxalign.tasks.answers import AnswerPattern
from jaxalign.tasks.base import MalformedRow
from jaxalign.tasks.dataset import DatasetTask, text_field
from jaxalign.tasks.source import HubLayout

INSTRUCTION = (
    "Answer the following question about the passage. The last line of your response should be of the "
    "following format: 'Answer: $ANSWER' (without quotes) where ANSWER is one of True or False. "
    "Think step by step before answering."
)
_ANSWER = AnswerPattern(r"(?i:true|false|yes|no)\b")
_TRUE = ("true", "yes")


def prompt(question: str, passage: str) -> str:
    """The user message: instruction, passage, then the question (given a '?' if it has none)."""
    question = question.strip()
    return f"{INSTRUCTION}\nPassage: {passage.strip()}\nQuestion: {question}{'' if question.endswith('?') else '?'}"


class BoolQ(DatasetTask):
    name = "boolq"
    layouts = {"google/boolq": HubLayout(split="validation")}

    def parse(self, row: Mapping[str, Any]):
        question, passage = text_field(row, "question"), text_field(row, "passage")
        if "answer" not in row:
            raise MalformedRow("missing 'answer'")
        if not isinstance(row["answer"], bool):
            raise MalformedRow("'answer' is not a bool")
        return (question, passage), prompt(question, passage), row["answer"]

    def grade(self, response: str, answer: Any) -> bool:
        """True iff the last True/False/Yes/No answer in the final text equals ``answer`` (a bool)."""
        if not isinstance(answer, bool):
            raise JaxalignError(f"boolq: the ground truth must be a bool, got {answer!r}")
        found = _ANSWER.last(response)
        return found is not None and (found.lower() in _TRUE) == answer
