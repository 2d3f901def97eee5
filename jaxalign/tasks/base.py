"""The task interface every dataset implements."""

from __future__ import annotations

import dataclasses
import re
from typing import Protocol, Sequence

_ANSWER = re.compile(r"Answer:\s*(\S+)")


@dataclasses.dataclass(frozen=True)
class Question:
    """One question: ``qid`` is stable across runs; ``user`` is the user message (instruction
    included); ``answer`` is the ground truth as the grader compares it."""

    qid: str
    user: str
    answer: str


class Task(Protocol):
    name: str

    def questions(self, count: int, seed: int) -> Sequence[Question]:
        ...

    def grade(self, question: Question, response: str) -> bool:
        ...


def final_answer(response: str) -> str | None:
    """The value after the LAST 'Answer:' in a response (the paper's answer format), or None."""
    found = _ANSWER.findall(response)
    return found[-1].strip().rstrip(".") if found else None
