"""The task interface every dataset implements."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional, Protocol, Sequence

_ANSWER = re.compile(r"Answer:\s*(\S+)")

# The system message of the paper's prompts (Figures 12-15).
PAPER_SYSTEM = "You are a helpful assistant."


@dataclasses.dataclass(frozen=True)
class Question:
    """One question.

    ``qid`` is stable across runs and shards; ``user`` is the user message (instruction included);
    ``answer`` is the ground truth exactly as the dataset row stores it (BoolQ: bool, MMLU: int 0-3,
    AIME: int or str, toy_arith: str), to be passed back to ``task.grade(response, answer)``.
    """

    qid: str
    user: str
    answer: Any


class Task(Protocol):
    name: str
    system: Optional[str]  # the system message the task's prompts were written for, or None

    @property
    def skipped(self) -> Mapping[str, int]:
        """Malformed rows left out so far, by reason (empty before loading and for generated tasks)."""
        ...

    def questions(self, count: int, seed: int) -> Sequence[Question]:
        """``count`` questions, the same ones in the same order for a given ``seed`` in every run."""
        ...

    def grade(self, response: str, answer: Any) -> bool:
        """Whether a response's final answer equals ``answer`` (a :attr:`Question.answer`)."""
        ...


class MalformedRow(Exception):
    """A dataset row a task cannot use; ``reason`` is the short key it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def final_answer(response: str) -> str | None:
    """The value after the LAST 'Answer:' in a response (the paper's answer format), or None."""
    found = _ANSWER.findall(response)
    return found[-1].strip().rstrip(".") if found else None
