"""toy_arith: multi-step addition with a chain of thought, the embedded default's task.

A question adds ``terms`` numbers of ``digits`` digits. The reference response, in Qwen3 thinking
mode, accumulates left to right and ends in the paper's answer line::

    <think>
    47+38=85. 85+16=101.
    </think>

    Answer: 101

Branching matters: one wrong digit in an early partial sum carries into the final answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import numpy as np

from jaxalign.errors import ConfigError
from jaxalign.tasks.base import Question, final_answer


@dataclasses.dataclass(frozen=True)
class ToyArith:
    terms: int = 3
    digits: int = 2
    name: str = "toy_arith"
    options: ClassVar[tuple[str, ...]] = ("terms", "digits")
    system: ClassVar[Optional[str]] = None  # the toy models were trained without a system message

    def __post_init__(self):
        for key in self.options:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"toy_arith: {key} must be an int >= 1, got {value!r}")

    @property
    def skipped(self) -> dict[str, int]:
        return {}  # generated, never malformed

    def make(self, numbers: list[int], qid: str = "") -> Question:
        user = "Compute " + "+".join(map(str, numbers)) + "."
        return Question(qid=qid or "toy-" + "-".join(map(str, numbers)), user=user, answer=str(sum(numbers)))

    def numbers(self, question: Question) -> list[int]:
        return [int(x) for x in question.user.removeprefix("Compute ").rstrip(".").split("+")]

    def questions(self, count: int, seed: int) -> list[Question]:
        """``count`` distinct questions, a fixed function of ``seed``."""
        rng = np.random.default_rng([seed, self.terms, self.digits])
        low, high = 10 ** (self.digits - 1), 10**self.digits
        out, seen = [], set()
        while len(out) < count:
            nums = [int(x) for x in rng.integers(low, high, size=self.terms)]
            if tuple(nums) not in seen:
                seen.add(tuple(nums))
                out.append(self.make(nums, qid=f"{self.name}-{seed}-{len(out)}"))
        return out

    def reference_response(self, question: Question, error_at: int | None = None, rng=None) -> str:
        """The correct chain (or, with ``error_at = i``, one whose i-th partial sum is off by a
        nonzero amount that then propagates: a plausible WRONG demonstration)."""
        nums = self.numbers(question)
        total, steps = nums[0], []
        for i, x in enumerate(nums[1:]):
            new = total + x
            if error_at == i:
                delta = int((rng or np.random.default_rng()).choice([-10, -1, 1, 10]))
                new += delta
            steps.append(f"{total}+{x}={new}.")
            total = new
        return f"<think>\n{' '.join(steps)}\n</think>\n\nAnswer: {total}"

    def grade(self, response: str | Question, answer: Any) -> bool:
        """Whether the last 'Answer:' value equals ``answer``. Thinking is not stripped: the toy default's
        results must not change. The legacy order ``grade(question, response)`` is still accepted."""
        if isinstance(response, Question):
            response, answer = answer, response.answer
        return final_answer(response) == str(answer)
