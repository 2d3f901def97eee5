"""AIME 2025: 30 competition problems with integer answers 0-999 and traces of 5K-30K tokens.

Hub layouts accepted: the problem text in ``problem`` or ``question``; ``answer`` an int or a
string of digits ("70", "070"). Known ids, the default first: opencompass/AIME2025 (configs
AIME2025-I and AIME2025-II, concatenated; split test), math-ai/aime25 (split test),
MathArena/aime_2025 and yentinglin/aime_2025 (split train). The grader reads an integer from
``Answer:`` or ``\\boxed{}``, ignoring leading zeros and thousands commas.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from jaxalign.errors import JaxalignError
from jaxalign.tasks.answers import AnswerPattern
from jaxalign.tasks.base import MalformedRow
from jaxalign.tasks.dataset import DatasetTask, text_field
from jaxalign.tasks.source import HubLayout

INSTRUCTION = (
    "Solve the following math problem. The last line of your response should be of the following format: "
    "'Answer: $ANSWER' (without quotes) where ANSWER is an integer from 0 to 999. "
    "Think step by step before answering."
)
# An integer, thousands commas allowed, that is not part of a longer number or a decimal.
_ANSWER = AnswerPattern(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?![.,]?\d)")
_TRUTH = re.compile(r"\s*\d+\s*")


def canonical(value: str) -> str:
    """A written integer as plain digits: '0,070' -> '70', '-05' -> '-5' (no int(): values may be huge)."""
    digits = value.replace(",", "")
    sign = "-" if digits.startswith("-") else ""
    digits = digits.lstrip("-").lstrip("0") or "0"
    return "0" if digits == "0" else sign + digits


def truth(answer: Any) -> Optional[str]:
    """A row's answer as canonical digits if it is an integer 0-999 (int or digit string), else None."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return str(answer) if 0 <= answer <= 999 else None
    if isinstance(answer, str) and _TRUTH.fullmatch(answer):
        value = canonical(answer.strip())
        return value if len(value) <= 3 else None
    return None


def prompt(problem: str) -> str:
    return f"{INSTRUCTION}\n{problem.strip()}"


class AIME2025(DatasetTask):
    name = "aime2025"
    layouts = {
        "opencompass/AIME2025": HubLayout(configs=("AIME2025-I", "AIME2025-II"), split="test"),
        "math-ai/aime25": HubLayout(split="test"),
        "MathArena/aime_2025": HubLayout(split="train"),
        "yentinglin/aime_2025": HubLayout(split="train"),
    }

    def parse(self, row: Mapping[str, Any]):
        problem = text_field(row, "problem", "question")
        if "answer" not in row:
            raise MalformedRow("missing 'answer'")
        if truth(row["answer"]) is None:
            raise MalformedRow("'answer' is not an integer 0-999")
        return (problem,), prompt(problem), row["answer"]

    def grade(self, response: str, answer: Any) -> bool:
        """True iff the last integer answer in the final text equals ``answer`` (int or digit string)."""
        expected = truth(answer)
        if expected is None:
            raise JaxalignError(f"aime2025: the ground truth must be an integer 0-999, got {answer!r}")
        found = _ANSWER.last(response)
        return found is not None and canonical(found) == expected
