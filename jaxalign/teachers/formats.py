"""The paper's teacher prompt formats (Figures 12-15), as text functions of the user message.

A self-distillation teacher is the student with a context: its demonstrations are appended to the
question's user message (instruction included, Figure 12), before the chat template is applied.
The system message and the generation prompt are the student's, so the teacher's prompt ends where
the student's ends.

Figures 13 (SELF-1C), 14 (SELF-1C1W) and 15 (SELF-SUM-1C) are copied as printed. The paper shows
no figure for SELF-SUM-1C1W and SELF-3C. SELF-SUM-1C1W is Figure 14 with Figure 15's
"Summarized" header, and SELF-3C is Figure 13 in the plural with three quoted blocks
(docs/teachers.md shows both).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

CLOSE = "Now answer with a response of your own, including the thinking process:"
_WARNING = ("Below are example responses to the question. Some are CORRECT and some are WRONG -- the wrong "
            "responses contain mistakes and should NOT be imitated.")


def quoted(text: str) -> str:
    return f'"""\n{text}\n"""'


def self_1c(user: str, correct: str) -> str:
    """Figure 13: one correct demonstration (also SELF-1C (32B), with another model's demonstration)."""
    return f"{user}\n\nDemonstration\nThis is a correct response to the question:\n{quoted(correct)}\n\n{CLOSE}"


def self_1c1w(user: str, correct: str, wrong: str, header: str = "Demonstrations") -> str:
    """Figure 14: one correct and one wrong demonstration, with the warning header."""
    return (f"{user}\n\n{header}\n\n{_WARNING}\n\nCorrect:\n\n{quoted(correct)}\n\n"
            f"WRONG (do NOT imitate):\n\n{quoted(wrong)}\n\n{CLOSE}")


def self_sum_1c(user: str, summary: str) -> str:
    """Figure 15: one correct demonstration, condensed by a summarizer."""
    return (f"{user}\n\nSummarized Demonstration\n\nThis is a correct response to the question:\n\n"
            f"{quoted(summary)}\n\n{CLOSE}")


def self_sum_1c1w(user: str, correct_summary: str, wrong_summary: str) -> str:
    """Figure 14's layout with Figure 15's 'Summarized' header; both demonstrations condensed."""
    return self_1c1w(user, correct_summary, wrong_summary, header="Summarized Demonstrations")


def self_3c(user: str, first: str, second: str, third: str) -> str:
    """Figure 13 in the plural: three correct demonstrations, each quoted, separated by a blank line."""
    blocks = "\n\n".join(quoted(c) for c in (first, second, third))
    return f"{user}\n\nDemonstrations\nThese are correct responses to the question:\n{blocks}\n\n{CLOSE}"


@dataclasses.dataclass(frozen=True)
class ContextFormat:
    """A context format: how many correct and wrong demonstrations it shows, whether they are
    summarized first, and ``render(user, correct, wrong) -> user message``."""

    name: str
    correct: int
    wrong: int
    summarized: bool
    render: Callable[[str, Sequence[str], Sequence[str]], str]
    figure: str


FORMATS: Mapping[str, ContextFormat] = {f.name: f for f in (
    ContextFormat("SELF-1C", 1, 0, False, lambda u, c, w: self_1c(u, c[0]), "Figure 13"),
    ContextFormat("SELF-1C1W", 1, 1, False, lambda u, c, w: self_1c1w(u, c[0], w[0]), "Figure 14"),
    ContextFormat("SELF-SUM-1C", 1, 0, True, lambda u, c, w: self_sum_1c(u, c[0]), "Figure 15"),
    ContextFormat("SELF-SUM-1C1W", 1, 1, True, lambda u, c, w: self_sum_1c1w(u, c[0], w[0]),
                  "Figures 14 + 15"),
    ContextFormat("SELF-3C", 3, 0, False, lambda u, c, w: self_3c(u, *c[:3]), "Figure 13, plural"),
)}


def check_same_generation_prompt(student_ids: Sequence[int], teacher_ids: Sequence[int], tokenizer,
                                 teacher_name: str = "teacher") -> None:
    """Raises TokenizerError unless the teacher prompt ends in exactly the student's generation prompt.

    The generation prompt is everything after the last ``<|im_start|>`` (``assistant\\n`` and, with
    thinking disabled, the empty think block). A template that renders a context-bearing message
    differently at its end would shift every response token: the most common distillation bug.
    """
    from jaxalign.errors import TokenizerError

    start = tokenizer.convert_tokens_to_ids("<|im_start|>")

    def tail(ids):
        ids = list(ids)
        if start not in ids:
            raise TokenizerError(f"{teacher_name}: prompt has no <|im_start|>; was the chat template applied?")
        return ids[len(ids) - 1 - ids[::-1].index(start):]

    if tail(student_ids) != tail(teacher_ids):
        raise TokenizerError(
            f"{teacher_name}'s prompt ends in {tokenizer.decode(tail(teacher_ids))!r} but the student's in "
            f"{tokenizer.decode(tail(student_ids))!r}; response tokens would not line up. Render both with the "
            "same chat template and the same enable_thinking."
        )
